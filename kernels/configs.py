"""Which kernel and block sizes a shape gets: a documented heuristic, no autotuning.

- "small" (register-resident, CUDA-core arithmetic) when the padded weight tile MP*NP <= SMALL_MAX:
  every per-sample product lives in a [BG, MP, NP] block. Warps grow with the weight tile (1, 2, 4, 8
  up to MP*NP = 16, 64, 128, 512); BG is the largest that keeps WORDS_PER_THREAD Philox words and
  PRODUCTS_PER_THREAD product values per thread: more spills (ptxas -v, sm_90: 16 words/thread spilled
  52 bytes at n=2, m=1; 4 words and 16 products spilled 32-44 bytes at n=3, m=2 / n=20, m=5 / n=37, m=5;
  4 warps at MP*NP=256 spilled 16 bytes at n=20, m=5, linear). Known gap: across a battery of 39 tile
  shapes (n=2..512, m=1..32, relu and linear), 10 of 78 kernels still spill 4-56 bytes where ptxas caps
  itself at 72-128 registers (e.g. n=37, m=2; n=20, m=16; n=512, m=1); none of the paper's shapes.
- "small", tiny path (tiny=True) for n <= TINY_MAX_N, m <= n and 2 n <= 5 m (phase n=2, m=1; phase3 n=3, m=2;
  intro n=5, m=2): unrolled over the exact n and m (MP, NP = m, n), one thread per sample group, BG =
  32 x warps groups per tile (TINY_SLOTS_PER_THREAD each). Static count, sm_90, Triton 3.6, warp
  instructions per model-step at B=1024, the logged-loss side weighted by its 1 step in log_every
  (`superpos bench --predict`, the slow-path calls of sqrt/div not counted; before: the block path, both
  sides counted): phase 1,632 (4,200), phase3 2,676 (18,937), intro 5,141 (40,025); registers 168 / 147 /
  236, no spills on 3.6 or 3.9. One warp per model: every thread keeps a copy of the parameters for its
  samples' forward pass and the block reduces once per step, so more warps would add per-step work, and
  the warp count may not depend on K (the summation order over the BG slots is fixed by the shape).
- "tiled" otherwise (n in the hundreds): tl.dot tiles over a slice of 4 BG consecutive samples (a slice
  is one tile: its dW is written once) and an n-chunk of NC=16 features, W and AdamW state in global
  memory (L2-resident: one model's state is 20 m n bytes). tl.dot needs every dimension >= 16, hence
  MP >= 16, NC = 16 and 4 BG >= 16. Software pipelining of the loads is off (num_stages=1: 2 stages
  gained 5% by the cost model on uniform tf32x3 and nothing on tf32, for 8 more registers). TILED gives
  (BG, warps, fused_ok) per (MP, precision), picked by the cost model (`superpos bench --predict`, H100
  SXM, uniform n=400 m=30 K=64, ms per 1,000 steps; tensor-core mma tiles are 16x8 per warp, so 8 warps
  on a [32, 16] product do the same work twice) among the blocks that do not spill on sm_90 and sm_80
  (`python -m superpos.compile_check`):
    ieee    BG, warps = 8, 4: 601 | 16, 4: 487 | 32, 4: 404 (spills 152-320 B at MP=16, 144-168 B fused)
            | 16, 8: 675 | 32, 8: 605 (144 B)                -> 16, 4; fused spills 8-24 B on sm_80 at MP=32
    tf32    8, 4: 349 | 16, 4: 232 | 32, 4: 184 (fused spills 40-160 B; the hidden-ReLU split kernel 40 B
            on sm_80) | 16, 8: 397 | 32, 8: 262                  -> 16, 4; fused only at MP=16
    tf32x3  8, 4: 559 | 16, 4: 315 | 32, 4: 266 (264 B) | 16, 2: 271 (240 B) | 16, 8: 555 | 32, 8: 394
                                                               -> 16, 4, split only (255 registers on sm_80)
  On Hopper the plain model at MP=32 ieee takes 32, 4 (TILED_SM90_PLAIN, measured 0.77x / 0.78x the time
  of 16, 4 for uniform / geometry on an H200; spill-free on sm_90 only for plain data), and tf32x3 at
  MP=16/32 keeps gz in the scratch and takes the dW products as wgmmas over 64 features (TILED_SM90_GZ_KEPT:
  predicted 262 -> 229 -> 188, Triton 3.6; 3.9 too).
  MP=64: ieee 8, 8 (16, 4 spilled 208 B with the hidden ReLU on sm_90 under Triton 3.9), tf32 16, 4, tf32x3
  8, 8 (4, 4 spilled 16 B and 4, 2 48-152 B with the hidden ReLU, sm_80); split only. The hidden ReLU
  (privileged basis) compiles from the same blocks. The fused kernel passes maxnreg=255: Triton 3.9's
  ptxas otherwise capped it at 168 registers (MP=16 tf32, 32 B spilled); not the split ones: with
  maxnreg=255 ptxas took 255 registers and spilled 8-96 B at MP=32 ieee where it otherwise takes 160.
FMA contraction is set explicitly (fp_fusion=True: faster, and only the loss/gradient arithmetic is
affected, within float32 rounding; the data and AdamW's sqrt/div are exact either way).
"""
import contextlib
import contextvars
from dataclasses import dataclass, replace

import triton

SMALL_MAX = 512
TINY_MAX_N = 5
TINY_WARPS = 1
TINY_SLOTS_PER_THREAD = 1
# The explicit per-sample form (hidden ReLU, untied): parameters per model the tiny path takes (each one
# costs 4 registers per thread: value, two moments, accumulator); e.g. n=5, m=5 tied, n=5, m=2 untied.
TINY_MAX_PARAMS = 30
WORDS_PER_THREAD = 2  # Philox words per thread per lane: each keeps ~8 live 32-bit values while mixing
PRODUCTS_PER_THREAD = 8  # elements of a [BG, MP, NP] product block per thread
TILED_NC = 16
# On Hopper, a finite dataset with the Gram family at MP=16 in ieee (the double descent: n=10,000, m=2,
# a few programs, bound by one program's chain over n) takes 32-feature chunks, split mode only: half
# the chunk loop's trips (predicted 1,102 -> 696 ms per 1,000 steps under Triton 3.6, 854 under 3.9).
# Wider chunks spill: 64 predicted 542 but spilled 40 B under Triton 3.9 here, and elsewhere at MP=16
# 195 of 336 kernels (compile check); this one spills 8-16 B at 64 on sm_86/sm_89, so it is Hopper's.
TILED_DATASET_NC = 32
FUSED_MIN_WAVES = 8  # fused mode from 8 models per SM: the partial last wave then costs under 12.5%
# (MP, precision) -> (BG, warps, fused_ok, max_registers): fused_ok is False where the fused kernel (both
# phases in one program) spills and the split ones do not; the slice (4 BG samples) fixes the sums' order,
# not K. max_registers (split gradient kernel only; the fused one spills under it): 168 lets three 4-warp
# programs share an SM (tf32: 182 registers left two; uniform 232 -> 173 ms, geometry 390 -> 271 by the
# cost model; 128 spilled 72 B, and tf32x3 spilled 152 B at 168).
# TILED_HALF_TILE: a finite dataset (one Philox counter per sample: 4x the live words) or a family beyond the
# Gram form (the hidden ReLU's mask of a; untied: b_hidden, the strided decoder tile) takes half the table's
# BG: at the table's BG the gradient kernel spilled 8-32 B (dataset), 16-48 B (untied |x|) on sm_90/sm_80
# and 96 B (hidden ReLU, MP=32 ieee, sm_90, Triton 3.9) (compile check). Known gap: untied at
# MP=16 (e.g. n=100, m=10) tf32 with the output ReLU spills 8 B on sm_90 under Triton 3.6 (ptxas picks 128
# registers; 0 under 3.9).
# The register cap is for the plain (Gram) family only: the hidden ReLU spilled 40 B under it on sm_80.
TILED = {(16, "ieee"): (16, 4, True, None), (16, "tf32"): (16, 4, True, 168), (16, "tf32x3"): (16, 4, False, None),
         (32, "ieee"): (16, 4, False, None), (32, "tf32"): (16, 4, False, 168), (32, "tf32x3"): (16, 4, False, None),
         (64, "ieee"): (8, 8, False, None), (64, "tf32"): (16, 4, False, None), (64, "tf32x3"): (8, 8, False, None)}
# Hopper (sm_90) blocks for the plain model (the Gram family, plain data): measured faster on an H200
# (bench/tune_gpu.py, 2026-11-27: BG 32 at MP=32 ieee, uniform 950 -> 728 ms per 1,000 steps, geometry
# 1,483 -> 1,163) but they spill elsewhere (compile check: 16-80 B on sm_80; 208-248 B with correlated
# sets on sm_90; tf32x3 at BG 32, 0.67x on the H200, spills 264 B everywhere: its entries keep BG 16).
TILED_SM90_PLAIN = {(32, "ieee"): (32, 4, False, None), (16, "tf32x3"): (16, 4, False, None),
                    (32, "tf32x3"): (16, 4, False, None)}
# tf32x3 there keeps gz beside x in the slot's scratch and takes both dW products after pass 2 over
# 64-feature chunks, transposed (kernels/train_tiled.py, _wide_dw): [64, 4 BG] x [4 BG, MP] products are
# Hopper wgmmas where the [MP, 16] ones were mma.sync with h and gh transposed through shared memory.
# Predicted, H100 SXM: uniform 229 -> 188, geometry 359 -> 320 ms per 1,000 steps under Triton 3.6 (243
# registers, two programs per SM; the ninth session's kernel took a 168 cap, three), 253 -> 187 and
# 427 -> 318 under 3.9 (220 registers). Spill-free for the plain model on sm_90 under both (compile
# check); the same sums in another order than the generic kernel's (float32-close, other bits).
TILED_SM90_GZ_KEPT = ("tf32x3",)
# ...on the Triton versions whose compile of them was checked spill-free (superpos.compile_check). With W's
# mirror (kernels/train_tiled.py) Triton 3.6 compiles BG 32 to 186 registers; 3.9's ptxas loads pass 1's
# whole x operand (32 LDS.128) before its first FFMA and spills 200-232 B, so 3.9 keeps BG 16 (194
# registers; predicted uniform 470, geometry 762 ms per 1,000 steps under 3.9, against 424, 714 with BG 32
# under 3.6). The summation order follows BG: results on Hopper differ in the last bits between them.
TILED_SM90_PLAIN_TRITON = ("3.6.",)
TILED_SM90_GZ_KEPT_TRITON = ("3.6.", "3.9.")  # tf32x3's entries: spill-free under both (compile check)
# The GPU launches are for where no CUDA device says (launches captured on a CPU to be compiled for a
# target: compile_check, the cost model): (major, minor), or None for the generic table.
_TARGET = contextvars.ContextVar("superpos_target_capability", default=None)


@contextlib.contextmanager
def target_capability(capability):
    """Choose blocks for a GPU of this compute capability ((9, 0): Hopper) while capturing launches."""
    token = _TARGET.set(None if capability is None else tuple(capability))
    try:
        yield
    finally:
        _TARGET.reset(token)


def current_target():
    return _TARGET.get()


# ieee: float32 FMA (CUDA cores); tf32x3: near float32 on tensor cores (below ieee where sums cancel); tf32: tensor cores, ~1e-3 products
PRECISIONS = ("ieee", "tf32x3", "tf32")


@dataclass(frozen=True)
class KernelConfig:
    kind: str  # "small" | "tiled"
    MP: int
    NP: int  # padded n ("small") or the n-chunk width NC ("tiled")
    BG: int  # sample groups (of 4 samples) per block
    num_warps: int
    input_precision: str = "ieee"
    num_stages: int = 3  # Triton's default; 1 turns off software pipelining of the loads feeding tl.dot
    slice_size: int = 0  # tiled: samples per gradient slice (a multiple of the 4 BG-sample tile)
    fused_ok: bool = True  # tiled: the fused (persistent) mode compiles without spills
    fp_fusion: bool = True
    tiny: bool = False  # small: the unrolled one-thread-per-sample path (MP, NP are then m, n exactly)
    max_registers: int | None = None  # tiled, split gradient kernel: ptxas's register cap (Triton's maxnreg)
    tile_unroll: int | None = None  # small, tiny path: whole tiles per tile-loop trip (None: train_small.tile_unroll)
    gz_kept: bool = False  # tiled: gz kept beside x in the scratch, the dW products as wide wgmmas (TILED_SM90_GZ_KEPT)
    x_kept: bool = True  # tiled: x drawn once per slice into the scratch and read back (False: drawn in each pass)
    fused_max_registers: int = 255  # tiled, fused kernel: its cap (a kernel_config max_registers sets both)

    def register_cap(self) -> dict:
        """The launch option that caps registers (none when ptxas decides)."""
        return {} if self.max_registers is None else {"maxnreg": self.max_registers}


def tiny_params(n: int, m: int, untied: bool) -> int:
    """Parameters per model: W, b (, W_dec, b_hidden): the tiny path keeps three copies (with the AdamW
    moments) and one gradient accumulator of each in every thread."""
    return m * n + n + (n * m + m if untied else 0)


def choose_config(n: int, m: int, batch_size: int, input_precision: str = "ieee", gram: bool = True,
                  untied: bool = False, finite_dataset: bool = False, plain: bool = False,
                  capability=None) -> KernelConfig:
    """gram: the model family has the Gram form (tied, no hidden activation); untied: a decoder W_dec and
    b_hidden besides W, b (the block path then holds two [BG, MP, NP] accumulators); finite_dataset: the
    data is a finite dataset (the tiled tile halves, TILED_HALF_TILE); plain: the plain model and data (no
    option set); capability: the GPU's (major, minor), None for the generic blocks (TILED_SM90_PLAIN)."""
    if input_precision not in PRECISIONS:
        raise ValueError(f"input_precision must be one of {', '.join(PRECISIONS)}, got {input_precision!r}")
    groups = triton.cdiv(batch_size, 4)
    if gram:
        tiny = n <= TINY_MAX_N and 2 * n <= 5 * m and m <= n  # m <= n: at most 3 n^2 parameter registers
    else:
        tiny = n <= TINY_MAX_N and tiny_params(n, m, untied) <= TINY_MAX_PARAMS
    if tiny:
        BG = TINY_SLOTS_PER_THREAD * 32 * TINY_WARPS
        return KernelConfig("small", m, n, BG, TINY_WARPS, input_precision, tiny=True)
    MP = triton.next_power_of_2(m)
    NP = max(2, triton.next_power_of_2(n))
    if MP * NP <= SMALL_MAX:
        warps = 1 if MP * NP <= 16 else (2 if MP * NP <= 64 else (4 if MP * NP <= 128 else 8))
        threads = 32 * warps
        products = MP * NP * (2 if untied else 1)  # untied: dW and dW_dec accumulators
        BG = min(WORDS_PER_THREAD * threads // NP, PRODUCTS_PER_THREAD * threads // products)
        BG = max(1, min(BG, triton.next_power_of_2(groups)))
        return KernelConfig("small", MP, NP, BG, warps, input_precision)
    MP = max(16, MP)
    hopper = capability is not None and capability[0] == 9  # the blocks measured there
    entry = TILED[MP, input_precision]
    checked = TILED_SM90_GZ_KEPT_TRITON if input_precision in TILED_SM90_GZ_KEPT else TILED_SM90_PLAIN_TRITON
    sm90_plain = plain and hopper and triton.__version__.startswith(checked) and (MP, input_precision) in TILED_SM90_PLAIN
    if sm90_plain:
        entry = TILED_SM90_PLAIN[MP, input_precision]
    BG, warps, fused_ok, max_registers = entry
    if (finite_dataset or not gram) and BG > 4:
        BG //= 2  # TILED_HALF_TILE; the slice (4 BG) stays a function of the shape and the options alone
    gz_kept = sm90_plain and input_precision in TILED_SM90_GZ_KEPT
    NC = TILED_NC
    if hopper and finite_dataset and gram and MP == 16 and input_precision == "ieee":
        NC, fused_ok = TILED_DATASET_NC, False
    return KernelConfig("tiled", MP, NC, BG, warps, input_precision, num_stages=1, slice_size=4 * BG,
                        fused_ok=fused_ok, max_registers=max_registers if gram else None, gz_kept=gz_kept)


# Fields a caller may set by hand (`sp.train(..., backend="triton", kernel_config={...})`): for measuring
# other blocks on a GPU (bench/tune_gpu.py), where the cost model cannot be trusted to rank them. The
# summation order follows BG and num_warps, so results are reproducible per setting but differ between
# settings by float32 rounding; the defaults above are what every contract test checks.
# fp_fusion (bool): FMA contraction of the element-wise arithmetic, off to test whether a GPU-only
# rounding difference comes from it (bench/accuracy_trace.py's `nofusion` cases).
# tile_unroll (tiny path only): whole tiles per trip of its tile loop (the code a step runs grows with it;
# the sums' order does not change: results are bit-identical across it).
# gz_kept (bool, tiled tf32x3): Hopper's wide dW products (TILED_SM90_GZ_KEPT) on or off; off keeps only x in
# the scratch, half the live set whose L2 hits the H200 profile called in question (bench/README.md, "Where
# the scratch lives"). True elsewhere than tf32x3 is refused.
# x_kept (bool, tiled): False draws x from Philox again in passes 2 and 3 instead of reading pass 1's scratch
# tile back (no scratch then): more instructions, no scratch traffic. The H200 measured the scratch missing
# L2 (tf32x3: ~520 MB of DRAM a step), which the cost model does not price, so only a GPU can rank the two.
# The same x, so the same bits. False with gz_kept (whose dW products read x's scratch) is refused.
TUNABLE = ("BG", "num_warps", "max_registers", "num_stages", "fp_fusion", "tile_unroll", "gz_kept", "x_kept")


def with_overrides(cfg: KernelConfig, overrides: dict | None) -> KernelConfig:
    """cfg with the TUNABLE fields of `overrides` replaced (tiled: the slice follows BG, 4 BG samples)."""
    if not overrides:
        return cfg
    unknown = sorted(set(overrides) - set(TUNABLE))
    if unknown:
        raise ValueError(f"kernel_config keys must be among {', '.join(TUNABLE)}, got {', '.join(unknown)}")
    for key, value in overrides.items():
        if key in ("max_registers", "tile_unroll") and value is None:
            continue
        if key == "tile_unroll" and not (cfg.kind == "small" and cfg.tiny):
            raise ValueError("kernel_config tile_unroll applies to the small kernel's tiny path only (n <= 5), "
                             f"not to this shape's {cfg.kind} kernel")
        if key in ("fp_fusion", "gz_kept", "x_kept"):
            if not isinstance(value, bool):
                raise ValueError(f"kernel_config {key} must be True or False, got {value!r}")
            if key == "gz_kept" and value and not (cfg.kind == "tiled" and cfg.input_precision == "tf32x3"):
                raise ValueError("kernel_config gz_kept=True applies to the tiled kernel at tf32x3 only, not to "
                                 f"this {cfg.kind} kernel at {cfg.input_precision}")
            if key == "x_kept" and not value and cfg.kind != "tiled":
                raise ValueError(f"kernel_config x_kept applies to the tiled kernel only, not to this shape's {cfg.kind} kernel")
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (key in ("BG", "num_warps") and value & (value - 1)):
            raise ValueError(f"kernel_config {key} must be a positive int{' (a power of 2)' if key in ('BG', 'num_warps') else ''}"
                             f", got {value!r}")
    cfg = replace(cfg, **overrides)
    if cfg.gz_kept and not cfg.x_kept:
        raise ValueError("kernel_config x_kept=False needs gz_kept=False (the wide dW products read x's scratch)")
    if overrides.get("max_registers") is not None:  # a cap asked for applies to whichever mode runs
        cfg = replace(cfg, fused_max_registers=overrides["max_registers"])
    return replace(cfg, slice_size=4 * cfg.BG) if cfg.kind == "tiled" else cfg


def use_split(cfg: KernelConfig, n_models: int, sm_count: int) -> bool:
    """Tiled kernels: split each model's batch over programs unless the models alone fill the GPU.
    The fused kernel runs one program per model and, at ~200 registers x 256 threads, one program per
    SM: with K < FUSED_MIN_WAVES x SMs the last wave leaves SMs idle (uniform: 64 models on an H100's
    132 SMs use under half of it), while split runs K x B / TILED_SLICE programs (512 there)."""
    return not cfg.fused_ok or n_models < FUSED_MIN_WAVES * sm_count
