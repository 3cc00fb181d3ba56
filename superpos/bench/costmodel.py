"""Predicted speed of the Triton kernels from their SASS: `superpos bench --predict`.

For a workload, the launcher's real calls are recorded (nothing runs), each distinct specialization is
compiled for sm_90 through the JIT's binder, its SASS is counted per loop (superpos.bench.sass), the
loops' trip counts come from each call's own arguments, and the sum over the calls of a whole training
run gives warp instructions per model-step, per pipe. Time follows from a per-SM throughput table and
the occupancy the registers allow. Every assumption is stated beside the number it sets.

Static counting assumptions:
- Every instruction in a loop's address range runs once per iteration (predicated-off instructions
  still issue; ptxas's slow paths of IEEE sqrt/div are subroutines and are not counted, nor the calls
  into them that their inline fast paths branch over; the fast paths are). Code outside every loop runs
  once per program.
- Branches: the two sides of a Python `if` whose frequency the launch fixes (BRANCH_FREQUENCY below:
  the logged-step loss, the masked last tile) are weighted, the body by the fraction f of entries
  whose test holds and the `else` by 1 - f (sass.if_sides finds them in the SASS by the `if`'s line);
  every other branch counts both sides in full (an upper bound).
- All warps of a program run the same instruction stream (true of these kernels: no warp
  specialization), so a program's count is its per-warp count times num_warps.
- Shared memory: a warp's access of w bytes per lane costs ceil(32 w / 128) wavefronts conflict-free,
  times its source line's bank-conflict factor (superpos.bench.bank_conflicts: every shared access of
  the line in the PTX, the lanes' addresses evaluated, wavefronts counted with broadcast; a factor
  below 1 where lanes share words). Global memory is fully coalesced: an access moves 32 w bytes
  (masked-off lanes counted: an upper bound).
- Trip counts: TRIP_COUNTS below, or the `range(...)` of a loop written in the kernel itself evaluated
  on the call's arguments; an average over the programs where it varies (the last slice of a batch).
"""
from __future__ import annotations

import ast
import math
from collections import Counter
from dataclasses import dataclass, field

from . import bank_conflicts, sass

ARCH = 90

# ---------------------------------------------------------------------------------------------------
# Pipe classes of SASS opcodes (sm_90). Rates per class are in DEVICES below.
# IMAD in all its forms (IMAD.WIDE/.HI/.MOV/.SHL/.IADD, IMUL) runs on the FMA-heavy half of the FMA
# pipe: ptxas emits IMAD.MOV/.SHL/.IADD to move integer work off the ALU pipe, so they are counted as
# IMAD, where they cost pipe time. MOV, I2FP (sm_90's full-rate int->float) and float compares/selects
# are ALU. Conversions other than I2FP go to the XU pipe with MUFU.
_FP32 = {"FFMA", "FMUL", "FADD", "FFMA32I", "FMUL32I", "FADD32I", "HFMA2", "HADD2", "HMUL2", "FSWZADD"}
_IMAD = {"IMAD", "IMUL", "IMUL32I", "IMAD32I", "IDP", "IDP4A"}
_ALU = {"IADD3", "IADD", "IADD32I", "LOP3", "LOP", "LOP32I", "SHF", "SHL", "SHR", "ISETP", "FSETP", "FSEL", "SEL",
        "FMNMX", "IMNMX", "VIMNMX", "IABS", "MOV", "MOV32I", "PRMT", "LEA", "PLOP3", "P2R", "R2P", "I2FP", "F2FP",
        "BMSK", "BREV", "FLO", "POPC", "CS2R", "FCHK", "ISCADD", "VOTE", "FSET", "ISET", "SGXT", "LEPC",
        "VIADD", "VIADDMNMX"}  # VIADD*: sm_90's integer add (with min/max), assumed on the ALU like IADD3
_XU = {"MUFU", "I2F", "F2I", "F2F", "FRND", "I2I"}
_MMA = {"HMMA", "HGMMA", "IMMA", "DMMA", "BMMA"}
_SHARED = {"LDS", "STS", "LDSM", "STSM", "ATOMS"}
_LOCAL = {"LDL", "STL"}
_GLOBAL = {"LDG", "STG", "ATOM", "ATOMG", "RED", "LD", "ST", "LDGSTS", "REDG"}
_BARRIER = {"BAR", "MEMBAR", "WARPGROUP", "DEPBAR", "WARPSYNC", "BSYNC", "BSSY", "ERRBAR", "SYNCS", "FENCE"}
_BRANCH = {"BRA", "BRX", "JMP", "CALL", "RET", "EXIT", "BPT", "YIELD", "NOP"}
_CONST = {"LDC", "ULDC"}
PIPES = ("fp32", "imad", "alu", "uniform", "xu", "shfl", "mma", "shared", "local", "global", "const", "barrier",
         "branch", "other")


def pipe_of(opcode: str) -> str:
    """Class of one SASS opcode (mnemonic with modifiers)."""
    base = opcode.split(".")[0]
    if base in _CONST:
        return "const"
    if base.startswith("U") or base in ("S2UR", "R2UR", "VOTEU"):
        return "uniform"  # the uniform datapath: one issue slot, no vector pipe time
    for cls, names in (("fp32", _FP32), ("imad", _IMAD), ("alu", _ALU), ("xu", _XU), ("mma", _MMA),
                       ("shared", _SHARED), ("local", _LOCAL), ("global", _GLOBAL), ("barrier", _BARRIER),
                       ("branch", _BRANCH)):
        if base in names:
            return cls
    return "shfl" if base == "SHFL" else "other"


def access_bytes(opcode: str) -> int:
    """Bytes per lane of a load/store: the width modifier (.64, .128, .U8 ...), 4 by default."""
    mods = opcode.split(".")[1:]
    for mod, width in (("128", 16), ("64", 8), ("U8", 1), ("S8", 1), ("U16", 2), ("S16", 2)):
        if mod in mods:
            return width
    return 4


def mma_fmas(opcode: str) -> int:
    """Multiply-adds of one warp-instruction. HMMA.MNK: m16n8k4 / m16n8k8 / m16n8k16 per warp.
    HGMMA.64xNxK is one warpgroup (4 warps) operation, issued by each of its warps: a quarter each."""
    parts = opcode.split(".")
    if parts[0] == "HGMMA":
        m, n, k = (int(v) for v in parts[1].split("x"))
        return m * n * k // 4
    if parts[0] == "HMMA":
        shape = parts[1]  # e.g. "1688" = 16 x 8 x 8, "16816" = 16 x 8 x 16
        return 16 * 8 * int(shape[3:])
    return 0


def count_instructions(instrs, conflicts: dict | None = None) -> Counter:
    """Warp instructions per pipe class, plus derived quantities: `shared_wavefronts`,
    `local_wavefronts`, `global_bytes`, `mma_fmas` (and `wgmma_fmas` for HGMMA), `instructions`.
    `conflicts`: {(file, line): factor} (bank_conflicts.line_factors) scales the shared wavefronts of an
    instruction of that source line; without it shared memory is counted conflict-free."""
    c: Counter = Counter()
    conflicts = conflicts or {}
    for ins in instrs:
        cls = pipe_of(ins.opcode)
        c[cls] += 1
        c["instructions"] += 1
        if cls in ("shared", "local"):
            lanes_bytes = 32 * access_bytes(ins.opcode)
            if ins.base in ("LDSM", "STSM"):  # .M88.N: N 8x8 b16 matrices = 128 N bytes
                n = int(ins.opcode.split(".")[-1]) if ins.opcode.split(".")[-1].isdigit() else 1
                lanes_bytes = 128 * n
            factor = conflicts.get((ins.file, ins.line), 1.0) if cls == "shared" else 1.0
            c[f"{cls}_wavefronts"] += math.ceil(lanes_bytes / 128) * factor
        elif cls == "global":
            c["global_bytes"] += 32 * access_bytes(ins.opcode)
        elif cls == "mma":
            c["mma_fmas"] += mma_fmas(ins.opcode)
            if ins.base == "HGMMA":
                c["wgmma_fmas"] += mma_fmas(ins.opcode)
    return c


# ---------------------------------------------------------------------------------------------------
# Latency of one warp: an in-order walk of the SASS with ptxas's own schedule. Each instruction takes
# its stall count (>= 1 cycle); an instruction waiting on a scoreboard waits until the producer's
# result is back. Fixed-latency pipes are covered by the stall counts; the variable ones need these
# (assumptions, Hopper microbenchmarks, Luo et al. 2024, arXiv:2402.13499: shared ~30 cycles, L2 hit
# ~260, L1 hit ~35): the walk restarts its scoreboards at every region.
VARIABLE_LATENCY = {"global": 260, "local": 35, "shared": 30, "shfl": 25, "xu": 20, "const": 20, "mma": 35,
                    "other": 20, "barrier": 20, "uniform": 10}
READ_LATENCY = 4  # a scoreboard guarding a store's source registers clears once they are read


def warp_cycles(instrs) -> int:
    ready = [0] * 6
    t = 0
    for ins in instrs:
        for sb in range(6):
            if ins.wait_mask >> sb & 1:
                t = max(t, ready[sb])
        if (sb := ins.write_scoreboard) is not None:
            ready[sb] = t + VARIABLE_LATENCY.get(pipe_of(ins.opcode), 20)
        if (sb := ins.read_scoreboard) is not None:
            ready[sb] = max(ready[sb], t + READ_LATENCY)
        t += max(1, ins.stall)
    return max([t] + ready)


# ---------------------------------------------------------------------------------------------------
# Devices. Rates are warp-instructions per clock per SM unless named otherwise.
@dataclass(frozen=True)
class Device:
    name: str
    sms: int
    clock_ghz: float
    rates: dict
    tensor_fmas_per_clk: float  # TF32 wgmma (dense), per SM
    mma_sync_fmas_per_clk: float  # TF32 mma.sync (HMMA), per SM
    l2_bytes_per_s: float  # whole chip
    hbm_bytes_per_s: float
    l2_bytes_per_clk_per_sm: float = 64.0
    regs_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    shared_per_sm: int = 228 * 1024
    launch_gap_us: float = 2.0


# H100 SXM5 (sm_90): 132 SMs. Clock: 1.98 GHz, the boost clock the datasheet peaks assume (FP32
# 67 TFLOP/s = 132 SMs x 128 FMA x 2 x 1.98 GHz); under sustained load the clock can sit near 1.755 GHz,
# which makes every time here 13% longer.
# Per-SM rates, CUDA C Programming Guide, "Arithmetic Instructions" throughput table, compute
# capability 9.0 (results per clock per SM / 32 lanes): FP32 add/mul/fma 128 -> 4; 32-bit integer
# multiply-add 64 -> 2 (the FMA-heavy half); integer add/logic/shift/compare 64 -> 2; warp shuffle 32
# -> 1; MUFU (rcp, rsqrt, ex2, lg2) and type conversions 16 -> 0.5. Issue: 4 schedulers, one warp
# instruction per clock each -> 4. Shared memory / L1: 32 banks x 4 B = 128 B per clock = 1 wavefront;
# SHFL goes through the same MIO crossbar, so `lsu` counts shuffles and wavefronts together.
# Tensor cores: TF32 dense 494.7 TFLOP/s at 1.83 GHz = 1024 FMA/clock/SM with wgmma (H100 datasheet);
# mma.sync (HMMA) assumed at half that (Luo et al. 2024 measured legacy mma.sync well below wgmma on
# Hopper). Global traffic of these kernels is L2-resident (model state and partial sums, 20 m n bytes per
# model): L2 bandwidth assumed 5.5 TB/s for the chip (microbenchmark figures for H100 range 5.5-7 TB/s)
# and 64 B per clock for one SM's port; HBM3 3.35 TB/s (not used: nothing here streams from HBM).
_SM90_RATES = {"issue": 4.0, "fp32+imad": 4.0, "imad": 2.0, "alu": 2.0, "xu": 0.5, "lsu": 1.0}
DEVICES = {
    "h100-sxm": Device("NVIDIA H100 SXM (sm_90, 132 SMs, 1.98 GHz)", 132, 1.98, _SM90_RATES,
                       1024.0, 512.0, 5.5e12, 3.35e12),
    # H200: the same GH100 SM and clocks; only memory differs (HBM3e 4.8 TB/s, 141 GB).
    "h200": Device("NVIDIA H200 (sm_90, 132 SMs, 1.98 GHz)", 132, 1.98, _SM90_RATES, 1024.0, 512.0, 5.5e12, 4.8e12),
}


# Calibration: measured ÷ predicted ms per 1,000 steps, grouped by the resource that binds the prediction
# (and, for latency, by kernel: a one-warp small-kernel program waits on its own arithmetic chain, a tiled
# program on global loads and barriers). Measured on an NVIDIA H200, 2026-11-28, kernels of commit d2e81e8
# (bench/results/nvidia-h200.jsonl; the H200's SM and clocks are the H100 SXM's, and the kernels measured
# the same on both on 2026-11-27: phase 67.8 / 67.6, uniform ieee 914 / 921, geometry tf32 492 / 500),
# beside the predictions of the same kernels. The assumption that fails is the same for every class: that
# the binding resource runs at its datasheet rate (4 warp-instructions per clock issued, one shared-memory
# wavefront per clock, 5.5 TB/s of L2, all at 1.98 GHz), with latency hidden. What Nsight Compute read
# (bench/results/h200-2026-11-28/call3-stalls.txt; h200-2026-11-27/call3-profile.txt), per class:
#   issue: the instruction count is exact (phase: 4.184e9 executed = 1,634 per model-step, predicted
#     1,632.3) and the clock holds (1.98 GHz), but the SM issues 2.55 of 4 per clock (issue slots 64% busy)
#     with 3 one-warp programs per scheduler. Stalls per issued instruction: not selected 1.06, dispatch
#     0.94, fixed-latency wait 0.78, math-pipe throttle 0.65, instruction fetch 0.08 (not the instruction
#     cache). The ALU pipe (half rate: LOP3, IADD3, ISETP, SEL) is 59% busy and FMA-heavy 55%: the model's
#     issue bound (1,632 cycles a model-step) and ALU bound (1,520) are both nearly the whole time, and
#     three warps cannot interleave two such streams without losing slots.
#   lsu: ieee's FMA dots with W's mirror; the bank conflicts are counted (bank_conflicts, from the PTX).
#   l2 (chip): wrong class: tf32 reaches only 33% of L2 and 55% of L1; it waits on global-load latency
#     (0.38 eligible warps of 2.7) with the SM clock down to 1.79 GHz under that load.
#   latency, tiled: tf32x3's gradient kernel at 243 registers (2 programs of 4 warps per SM) stalls on
#     global loads (long scoreboard 2.6 / 2.0 per issued instruction, uniform / geometry) and barriers
#     (1.4 / 1.2), IPC 0.94 / 1.08, SM clock 1.81 GHz; its x and gz scratch misses L2 (DRAM ~520 MB a
#     step at both shapes, 19% / 13% of the HBM's peak). The latency walk prices a global load at an L2
#     hit and has no barrier waits.
#   latency   intro 7.55 / 5.75 = 1.31 (one-warp programs)
#   latency, tiled  uniform tf32x3 599 / 188 = 3.19, geometry tf32x3 934 / 320 = 2.92 -> 3.05 (geometric mean)
#   issue     phase 67.9 / 40.0 = 1.70, phase3 108 / 65.6 = 1.65, scaling (K=10^6, H100) 2,883 / 1,582 = 1.82
#             -> 1.72 (mean)
#   lsu       uniform ieee 528 / 424 = 1.25, geometry ieee 853 / 714 = 1.20 -> 1.22
#   l2 (chip) uniform tf32 378 / 153 = 2.47, geometry tf32 491 / 246 = 2.00 -> 2.22 (geometric mean)
# `calibrated_ms_per_1000_steps` in the predicted rows scales each launch by its class's factor; classes
# never measured (tensor, fp32+imad, alu, ...) leave it empty. The raw prediction stays what designs are
# compared by: the factors move every design of one class alike.
MEASURED_OVER_PREDICTED = {"h100-sxm": {"latency": 1.31, "latency, tiled": 3.05, "issue": 1.72, "lsu": 1.22,
                                        "l2 (chip)": 2.22}}


def calibration_class(binding: str, kernel: str) -> str:
    """The MEASURED_OVER_PREDICTED key of a launch bound by `binding`: latency-bound tiled kernels
    (global loads, barriers) are their own class, apart from the small kernel's one-warp chains."""
    return "latency, tiled" if binding == "latency" and "tiled" in kernel else binding


def resource_cycles(c: Counter, device: Device) -> dict:
    """Cycles one SM needs for counts `c` on each resource, if that resource alone bound."""
    r = device.rates
    return {
        "issue": c["instructions"] / r["issue"],
        "fp32+imad": (c["fp32"] + c["imad"]) / r["fp32+imad"],
        "imad": c["imad"] / r["imad"],
        "alu": c["alu"] / r["alu"],
        "xu": c["xu"] / r["xu"],
        "lsu": (c["shfl"] + c["shared_wavefronts"] + c["local_wavefronts"]) / r["lsu"],
        "tensor": (c["wgmma_fmas"] / device.tensor_fmas_per_clk
                   + (c["mma_fmas"] - c["wgmma_fmas"]) / device.mma_sync_fmas_per_clk),
        "l2": c["global_bytes"] / device.l2_bytes_per_clk_per_sm,
    }


def programs_per_sm(registers: int, num_warps: int, shared_bytes: int, device: Device) -> int:
    """Resident programs (CTAs) per SM: registers (allocated per warp in units of 256, i.e. per thread
    rounded up to 8), warps, CTA slots and shared memory (1 KB reserved per CTA)."""
    regs_per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    by_regs = device.regs_per_sm // (regs_per_warp * num_warps)
    by_warps = device.max_warps_per_sm // num_warps
    by_shared = device.shared_per_sm // (shared_bytes + 1024)
    return max(0, min(by_regs, by_warps, device.max_blocks_per_sm, by_shared))


# ---------------------------------------------------------------------------------------------------
# Trip counts of the loops that use values computed inside the kernel, keyed by (function the `for` is
# written in, loop variable), each with the range it was written for (as ast.unparse writes it): a loop
# of that function and variable over another range raises instead of taking a rule that is not its own
# (a second `c` loop stepping 64 features was once counted as the 16-feature one: 3.6x too many trips).
# `a` is a call's arguments (constexprs included). Loops written in the kernel function over its own
# arguments need no entry (their range() is evaluated).
def _wide_nw() -> int:
    from ..kernels.train_tiled import WIDE_NW  # imported here: the kernels import triton
    return WIDE_NW.value


TRIP_COUNTS = {
    # the small kernel: two paths (kernels/train_small.py), each with the step loop and a tile loop per step
    # (compiled twice: with and without the loss, which is summed only on logged steps; each copy is on
    # its side of that `if`, weighted by BRANCH_FREQUENCY)
    ("_train_blocks", "s"): ("range(n_steps)", lambda a: a["n_steps"]),
    ("_train_tiny", "s"): ("range(n_steps)", lambda a: a["n_steps"]),
    ("_block_step_sums", "g0"): ("range(0, groups, BG)", lambda a: math.ceil(math.ceil(a["B"] / 4) / a["BG"])),
    # (UNROLL: whole tiles per trip of the tiny path's tile loop, a launch argument)
    ("_tiny_step_sums", "g0"): ("range(0, whole, UNROLL * BG)",
                                lambda a: a["B"] // (4 * a["BG"]) // a["UNROLL"]),  # runs of whole tiles
    ("_tiny_step_sums", "g1"): ("range(whole, full, BG)",
                                lambda a: a["B"] // (4 * a["BG"]) % a["UNROLL"]),  # the whole tiles left
    # the tiled kernel (kernels/train_tiled.py): a slice is one tile; three passes over the n-chunks, then
    # the update adds the slices' partials per chunk (split mode: one program per chunk)
    ("_slice_grads", "c"): ("range(0, n, NC)", lambda a: math.ceil(a["n"] / a["NC"])),
    ("_wide_dw", "cw"): ("range(0, n, WIDE_NW)", lambda a: math.ceil(a["n"] / _wide_nw())),  # GZ_KEPT's dW
    ("_log_slices_loss", "sl"): ("range(n_slices)", lambda a: a["n_slices"]),
    ("_slice_sum", "sl"): ("range(n_slices)", lambda a: a["n_slices"]),  # the update adds the slices of each tile
}


def logged_fraction(a: dict) -> float:
    """Share of a launch's steps t0 .. t0 + n_steps - 1 whose loss is recorded (TrainConfig.logged_steps)."""
    from ..config import TrainConfig
    logged = TrainConfig(steps=a["total_steps"], log_every=a["log_every"]).logged_steps()
    return float(((logged >= a["t0"]) & (logged < a["t0"] + a["n_steps"])).sum()) / a["n_steps"]


# Fraction of the entries of an `if` whose test holds, keyed by (function the `if` is written in, its test
# as ast.unparse writes it); `a` is a call's arguments. An `if` not listed counts both sides in full.
BRANCH_FREQUENCY = {
    # the small kernel sums the loss only on logged steps (kernels/train_small.py)
    ("_train_tiny", "_logged_at(since, t, total_steps)"): logged_fraction,
    ("_train_blocks", "_is_logged(t, total_steps, log_every)"): logged_fraction,
    # the tiny path's masked last tile: only where 4 BG does not divide the batch
    ("_tiny_step_sums", "full * LANES < B"): lambda a: float(a["B"] % (4 * a["BG"]) != 0),
}


def branch_fraction(side: sass.Side, args: dict) -> float:
    """Fraction of its `if`'s entries on which one side runs."""
    f = BRANCH_FREQUENCY[side.source.function, side.source.test](args)
    return f if side.body else 1.0 - f


def trip_count(loop: sass.ForLoop, kernel: str, args: dict) -> float:
    call = ast.parse(loop.text[loop.text.index(" in ") + 4:], mode="eval").body  # the loop's iterable
    entry = TRIP_COUNTS.get((loop.function, loop.var))
    if entry is not None:
        written_for, rule = entry
        if ast.unparse(call) != written_for:
            raise ValueError(f"`{loop.text}` in {loop.function} ({loop.file}:{loop.line}): costmodel.TRIP_COUNTS's "
                             f"rule for `{loop.var}` there is for `{written_for}`; give this loop a variable and a rule "
                             f"of its own")
        return float(rule(args))
    if loop.function == kernel:
        # range(...) or tl.range(...) (whose keyword hints - num_stages, loop_unroll_factor - leave the count)
        if isinstance(call, ast.Call) and "range" in (getattr(call.func, "id", ""), getattr(call.func, "attr", "")):
            names = {n.id for arg in call.args for n in ast.walk(arg) if isinstance(n, ast.Name)}
            if names <= set(args):
                bounds = [eval(compile(ast.Expression(arg), "<range>", "eval"), {"__builtins__": {}},  # noqa: S307
                               {k: args[k] for k in names}) for arg in call.args]
                return float(len(range(*bounds)))
    raise ValueError(f"no trip count for `{loop.text}` in {loop.function} ({loop.file}:{loop.line}): "
                     f"add it to costmodel.TRIP_COUNTS")


# ---------------------------------------------------------------------------------------------------
@dataclass
class KernelProfile:
    """One compiled specialization: resources and, per loop region, counts and one warp's latency."""
    name: str
    num_warps: int
    registers: int
    stack_bytes: int
    shared_bytes: int
    loops: list  # top-level sass.Loop trees
    regions: list  # [(path: enclosing sass.Loop outermost first, then sass.Side), Counter, warp cycles)]
    sides: list = field(default_factory=list)  # the weighted `if` sides (sass.Side)
    # per region (same order): {(file, line): Counter} of the region's counts by source line
    region_lines: list = field(default_factory=list)


def profile_kernel(compiled) -> KernelProfile:
    from ..kernels.as_launched import resource_usage
    res = resource_usage(compiled)  # registers and stack from the cubin (cuobjdump -res-usage)
    instrs = sass.entry_function(sass.parse(sass.disassemble(compiled.asm["cubin"])), compiled.metadata.name)
    conflicts = bank_conflicts.line_factors(compiled.asm["ptx"], compiled.metadata.num_warps)
    return profile_instructions(compiled.metadata.name, compiled.metadata.num_warps, res["registers"], res["stack"],
                                res["shared"], instrs, conflicts)


def profile_instructions(name: str, num_warps: int, registers: int, stack_bytes: int, shared_bytes: int,
                         instrs: list, conflicts: dict | None = None) -> KernelProfile:
    """The profile of a kernel's own instructions (sass.entry_function): loops, weighted `if` sides, regions.
    `conflicts`: each source line's bank-conflict factor (count_instructions)."""
    sides = sass.if_sides(instrs, lambda stmt: (stmt.function, stmt.test) in BRANCH_FREQUENCY)
    loops = sass.annotate(sass.find_loops(instrs), instrs, sides)
    copies = sass.unroll_copies(instrs, loops)
    instrs = [i for i in instrs if i.addr not in copies]
    regions, lines = [], []
    for path, body in sass.regions(instrs, loops, sides):
        by_line: dict = {}
        for ins in body:
            by_line.setdefault((ins.file, ins.line), []).append(ins)
        lines.append({key: count_instructions(group, conflicts) for key, group in by_line.items()})
        regions.append((path, sum(lines[-1].values(), Counter()), warp_cycles(body)))  # the lines' counts summed
    return KernelProfile(name, num_warps, registers, stack_bytes, shared_bytes, loops, regions, sides, lines)


def loop_trips(prof: KernelProfile, args: dict) -> dict:
    """{sass.Loop: trips per entry of its parent}. SASS loops from one Python `for` are ptxas's versions
    of it: where some hold nested loops and some do not, the ones without are the version for empty inner
    loops and run only when an inner trip count is 0 (else the ones with); the unrolled loop and its
    remainder then share the iterations out: the most unrolled takes N // U trips first. Copies of a
    `for` on the two sides of a weighted `if` are not versions: each runs all its iterations (its side's
    weight applies in per_program)."""
    trips = {}

    def runs(loop) -> bool:
        inner = [trip_count(c.source, prof.name, args) for c in loop.children]
        return not inner or all(n > 0 for n in inner)

    def visit(siblings):
        for key in dict.fromkeys(lp.version_key for lp in siblings):
            group = [lp for lp in siblings if lp.version_key == key]
            source = key[0]
            if len({bool(lp.children) for lp in group}) == 2:
                nested = [lp for lp in group if lp.children]
                chosen = nested if all(runs(lp) for lp in nested) else [lp for lp in group if not lp.children]
                trips.update({lp: 0 for lp in group if lp not in chosen})
                group = chosen
            left = trip_count(source, prof.name, args)
            group = sorted(group, key=lambda lp: -lp.unroll)
            for i, loop in enumerate(group):  # the last (least unrolled) takes the rest: averages stay exact
                trips[loop] = left / loop.unroll if i == len(group) - 1 else left // loop.unroll
                left -= trips[loop] * loop.unroll
        for loop in siblings:
            visit(loop.children)
    visit(prof.loops)
    return trips


def region_weights(prof: KernelProfile, args: dict) -> list:
    """How often each region runs per program for one call's arguments: its loops' trips times its `if`
    sides' fractions (in prof.regions' order)."""
    loop_trip = loop_trips(prof, args)
    return [math.prod(branch_fraction(x, args) if isinstance(x, sass.Side) else loop_trip[x] for x in path)
            for path, _, _ in prof.regions]


def per_program(prof: KernelProfile, args: dict):
    """(counts summed over the program's warps, one warp's cycles) for one call's arguments: each region
    weighted by region_weights."""
    total: Counter = Counter()
    cycles = 0.0
    for (_, counts, warp_cyc), trips in zip(prof.regions, region_weights(prof, args)):
        for key, value in counts.items():
            total[key] += value * trips * prof.num_warps
        cycles += warp_cyc * trips
    return total, cycles


def per_program_lines(prof: KernelProfile, args: dict) -> dict:
    """{(file, line): Counter} of one program's counts (all its warps) by source line, weighted as
    per_program weights the regions: where a kernel's instructions, wavefronts, FMAs come from."""
    total: dict = {}
    for lines, trips in zip(prof.region_lines, region_weights(prof, args)):
        for key, counts in lines.items():
            acc = total.setdefault(key, Counter())
            for name, value in counts.items():
                acc[name] += value * trips * prof.num_warps
    return total


@dataclass
class LaunchCost:
    programs: int
    counts: Counter  # whole launch
    cycles: dict  # per resource, on the busiest SM, plus "latency"
    seconds: float
    binding: str
    resident: int  # programs per SM


def launch_cost(prof: KernelProfile, args: dict, grid: tuple, device: Device) -> LaunchCost:
    """Time of one launch: the busiest SM runs ceil(programs / SMs) programs; it needs the most cycles of
    any one resource for them, and at least one warp's latency per round of resident programs."""
    programs = math.prod(grid)
    counts, warp_cyc = per_program(prof, args)
    resident = programs_per_sm(prof.registers, prof.num_warps, prof.shared_bytes, device)
    if resident < 1:
        raise ValueError(f"{prof.name}: {prof.registers} registers x {prof.num_warps} warps do not fit one SM")
    per_sm = math.ceil(programs / device.sms)
    cycles = {k: per_sm * v for k, v in resource_cycles(counts, device).items()}
    cycles["latency"] = math.ceil(per_sm / resident) * warp_cyc
    # the chip's L2 bandwidth, shared by all SMs
    cycles["l2 (chip)"] = programs * counts["global_bytes"] / device.l2_bytes_per_s * device.clock_ghz * 1e9
    binding = max(cycles, key=cycles.get)
    seconds = cycles[binding] / (device.clock_ghz * 1e9) + device.launch_gap_us * 1e-6
    return LaunchCost(programs, Counter({k: v * programs for k, v in counts.items()}), cycles, seconds, binding,
                      resident)
