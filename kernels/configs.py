"""Which kernel and block sizes a shape gets: a documented heuristic, no autotuning.

- "small" (register-resident, CUDA-core arithmetic) when the padded weight tile MP*NP <= SMALL_MAX:
  every per-sample product lives in a [BG, MP, NP] block. Warps grow with the weight tile (1, 2, 4, 8);
  BG is the largest that keeps WORDS_PER_THREAD Philox words and PRODUCTS_PER_THREAD product values
  per thread: more spills (ptxas -v, sm_90: 16 words/thread spilled 52 bytes at n=2, m=1; 4 words and
  16 products spilled 32-44 bytes at n=3, m=2 / n=20, m=5 / n=37, m=5).
- "tiled" otherwise (n in the hundreds): tl.dot on [BG, MP] x [MP, NC] tiles, W and AdamW state in
  global memory (L2-resident: one model's state is 16 m n bytes), input_precision "ieee" or "tf32".
  tl.dot needs every dimension >= 16, hence MP >= 16 and BG >= 16. NC=16 with 8 warps compiles with no
  spills for MP <= 32 in "ieee" (ptxas sm_90: 222 registers); NC=64 / 4 warps spilled ~4 KB. Known gap:
  MP=64 ("ieee") and "tf32" still spill (the four Philox lanes' blocks stay live together); see
  `python -m superpos.kernels.compile_check`.
FMA contraction is set explicitly (fp_fusion=True: faster, and only the loss/gradient arithmetic is
affected, within float32 rounding; the data and AdamW's sqrt/div are exact either way).
"""
from dataclasses import dataclass

import triton

SMALL_MAX = 512
WORDS_PER_THREAD = 2  # Philox words per thread per lane: each keeps ~8 live 32-bit values while mixing
PRODUCTS_PER_THREAD = 8  # elements of a [BG, MP, NP] product block per thread
TILED_NC, TILED_BG, TILED_WARPS = 16, 16, 8
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
        warps = 1 if MP * NP <= 16 else (2 if MP * NP <= 64 else (4 if MP * NP <= 256 else 8))
        threads = 32 * warps
        BG = min(WORDS_PER_THREAD * threads // NP, PRODUCTS_PER_THREAD * threads // (MP * NP))
        BG = max(1, min(BG, triton.next_power_of_2(groups)))
        return KernelConfig("small", MP, NP, BG, warps, input_precision)
    return KernelConfig("tiled", max(16, MP), TILED_NC, TILED_BG, TILED_WARPS, input_precision)
