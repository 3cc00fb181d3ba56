"""Which kernel and block sizes a shape gets: a documented heuristic, no autotuning.

- "small" (register-resident, CUDA-core arithmetic) when the padded weight tile MP*NP <= SMALL_MAX:
  every per-sample product lives in a [BG, MP, NP] block; BG is chosen so that block holds about
  BLOCK_ELEMS values (enough independent Philox work per thread to hide latency, few enough registers
  that nothing spills), and warps grow with the block (ELEMS_PER_WARP values per warp).
- "tiled" otherwise (n in the hundreds): tl.dot on [BG, MP] x [MP, NC] tiles, W and AdamW state in
  global memory (L2-resident: one model's state is 16 m n bytes), input_precision "ieee" or "tf32".
  tl.dot needs every dimension >= 16, hence MP >= 16 and BG >= 16.
FMA contraction is set explicitly (fp_fusion=True: faster, and only the loss/gradient arithmetic is
affected, within float32 rounding; the data and AdamW's sqrt/div are exact either way).
"""
from dataclasses import dataclass

import triton

SMALL_MAX = 512
BLOCK_ELEMS = 2048
ELEMS_PER_WARP = 512
PRECISIONS = ("ieee", "tf32")


@dataclass(frozen=True)
class KernelConfig:
    kind: str  # "small" | "tiled"
    MP: int
    NP: int  # padded n ("small") or the n-chunk width NC ("tiled")
    BG: int  # sample groups (of 4 samples) per block
    num_warps: int
    input_precision: str = "ieee"
    fp_fusion: bool = True


def choose_config(n: int, m: int, batch_size: int, input_precision: str = "ieee") -> KernelConfig:
    if input_precision not in PRECISIONS:
        raise ValueError(f"input_precision must be one of {', '.join(PRECISIONS)}, got {input_precision!r}")
    groups = triton.cdiv(batch_size, 4)
    MP = triton.next_power_of_2(m)
    NP = max(2, triton.next_power_of_2(n))
    if MP * NP <= SMALL_MAX:
        BG = max(1, min(BLOCK_ELEMS // (MP * NP), triton.next_power_of_2(groups)))
        warps = max(1, min(4, BG * MP * NP // ELEMS_PER_WARP))
        return KernelConfig("small", MP, NP, BG, warps, input_precision)
    MP = max(16, MP)
    NC = 64 if MP <= 32 else 32
    return KernelConfig("tiled", MP, NC, 16, 4, input_precision)
