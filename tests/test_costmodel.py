"""The SASS cost model (superpos.bench.sass, costmodel, predict): the counter on kernels whose instruction
mix is known, the parser on hand-written SASS, and the prediction arithmetic on hand-computed cases.

Compiling for a GPU target needs real @triton.jit functions, so those tests run in a subprocess without
TRITON_INTERPRET (conftest sets it for the kernel tests). No test times anything.
"""
import json
import math
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

pytest.importorskip("triton")

from superpos.bench import costmodel as cm  # noqa: E402
from superpos.bench import predict as pr  # noqa: E402
from superpos.bench import sass  # noqa: E402

from conftest import once_per_session  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}

# Kernels with a known instruction mix: 5 dependent fused multiply-adds per iteration of a loop over a
# runtime trip count, once flat and once nested. tl.fma makes each one FFMA whatever the fusion setting.
PROBES = textwrap.dedent('''
    import triton
    import triton.language as tl

    @triton.jit
    def fma_chain(acc, a, K_FMA: tl.constexpr):
        for j in tl.static_range(K_FMA):  # unrolled by Triton: K_FMA dependent FFMA, no loop in the SASS
            acc = tl.fma(acc, a, j + 1.0)
        return acc

    @triton.jit
    def flat(x_ptr, out_ptr, n_iter, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        acc = tl.load(x_ptr + offs)
        a = acc * 0.5
        for i in range(n_iter):
            acc = fma_chain(acc, a, 5)
        tl.store(out_ptr + offs, acc)

    @triton.jit
    def branchy(x_ptr, out_ptr, n_iter, every, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        acc = tl.load(x_ptr + offs)
        a = acc * 0.5
        for i in range(n_iter):
            if i % every == 0:
                acc = fma_chain(acc, a, 24)
            else:
                acc = fma_chain(acc, a, 9)
        tl.store(out_ptr + offs, acc)

    @triton.jit
    def nested(x_ptr, out_ptr, n_outer, n_inner, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        acc = tl.load(x_ptr + offs)
        a = acc * 0.5
        for j in range(n_outer):
            acc = acc * 0.25
            for i in range(n_inner):
                acc = fma_chain(acc, a, 5)
        tl.store(out_ptr + offs, acc)
''')

SCRIPT = '''
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import probe_kernels as pk
from superpos.bench import costmodel as cm, predict as pr
from superpos.kernels.as_launched import compile_launch, recording

x = torch.zeros(32)
with recording() as launches:
    pk.flat[(1,)](x, x, 7, BLOCK=32, num_warps=1)
    pk.nested[(1,)](x, x, 3, 6, BLOCK=32, num_warps=1)
    pk.flat[(1,)](x, x, 11, BLOCK=32, num_warps=1)
    pk.branchy[(1,)](x, x, 10, 4, BLOCK=32, num_warps=1)
# the probe's `if`: true on iterations 0, every, 2 every, ... of range(n_iter)
cm.BRANCH_FREQUENCY["branchy", "i % every == 0"] = lambda a: len(range(0, a["n_iter"], a["every"])) / a["n_iter"]
out = {}
for name, lc in zip(("flat7", "nested", "flat11", "branchy"), launches):
    prof = cm.profile_kernel(compile_launch(lc, 90))
    counts, cycles = cm.per_program(prof, lc.bound())
    loops = []
    def walk(ls, depth):
        for lp in ls:
            loops.append({"depth": depth, "line": lp.source.line, "var": lp.source.var, "unroll": lp.unroll,
                          "function": lp.source.function})
            walk(lp.children, depth + 1)
    walk(prof.loops, 0)
    out[name] = {"fp32": counts["fp32"], "loops": loops, "cycles": cycles,
                 "sides": [(sd.source.line, sd.body) for sd in prof.sides],
                 "fp32_by_every": {e: cm.per_program(prof, {**lc.bound(), "every": e})[0]["fp32"] for e in (1, 4, 20)}}
probe = pr.philox_imad_per_call()
from superpos.bench.probes import philox_probe_launch
lc = philox_probe_launch()
prof = cm.profile_kernel(compile_launch(lc, 90))
per_n = {}
for n in (3, 7):
    counts, _ = cm.per_program(prof, {**lc.bound(), "n_iter": n})
    per_n[n] = counts["imad"]
out["philox"] = {"per_call": probe, "imad_by_n_iter": per_n}
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    def compile_probes():
        tmp = tmp_path_factory.mktemp("probes")
        (tmp / "probe_kernels.py").write_text(PROBES)
        # a cache of its own: Triton's cache key ignores the file, so a binary cached from another temporary
        # copy of these kernels would name that (deleted) file in its line info
        env = {**ENV, "TRITON_CACHE_DIR": str(tmp / "cache")}
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return once_per_session(tmp_path_factory, "costmodel_probes", compile_probes), PROBES.splitlines()


def _line_of(source_lines, text, after=0):
    return next(i + 1 for i, ln in enumerate(source_lines) if i >= after and ln.strip().startswith(text))


def test_fma_loop_counted_per_iteration_with_its_trip_count(compiled):
    out, lines = compiled
    # 5 FFMA per iteration plus the one FMUL before the loop; whatever ptxas's unrolling, the
    # total follows the Python trip count exactly.
    assert out["flat7"]["fp32"] == 5 * 7 + 1
    assert out["flat11"]["fp32"] == 5 * 11 + 1
    for_line = _line_of(lines, "for i in range(n_iter)")
    assert out["flat7"]["loops"] and all(lp["line"] == for_line and lp["var"] == "i" and lp["function"] == "flat"
                                         for lp in out["flat7"]["loops"])


def test_nested_loops_map_to_their_for_and_multiply(compiled):
    out, lines = compiled
    # 5 FFMA x 6 inner x 3 outer, one FMUL per outer iteration, one before
    assert out["nested"]["fp32"] == 5 * 6 * 3 + 3 + 1
    start = _line_of(lines, "def nested")
    outer, inner = _line_of(lines, "for j in", start), _line_of(lines, "for i in", start)
    loops = out["nested"]["loops"]
    assert {(lp["depth"], lp["var"], lp["line"]) for lp in loops} >= {(0, "j", outer), (1, "i", inner)}
    assert all(lp["line"] == (outer if lp["depth"] == 0 else inner) for lp in loops)


def test_if_sides_weighted_by_their_frequency(compiled):
    out, lines = compiled
    # 10 iterations: the body (24 FFMA) runs on i % every == 0, the else (9 FFMA) on the others, so each
    # iteration moved from the else to the body adds 15 FFMA, whatever ptxas shares between the sides
    # (Triton 3.6 computes the 9 FFMA common to both before the branch and leaves the else empty).
    # Counting both sides in full would make the count independent of `every`.
    by_every = {int(k): v for k, v in out["branchy"]["fp32_by_every"].items()}
    assert by_every[1] - by_every[20] == pytest.approx((10 - 1) * 15)  # body on 10 vs 1 of the 10
    assert by_every[4] - by_every[20] == pytest.approx((3 - 1) * 15)  # i = 0, 4, 8 vs i = 0
    if_line = _line_of(lines, "if i % every == 0")
    assert out["branchy"]["sides"] and all(tuple(side) == (if_line, True) for side in out["branchy"]["sides"])


def test_latency_walk_grows_with_trip_count(compiled):
    out, _ = compiled
    # each dependent FFMA waits its result (>= 4 cycles on sm_90): the walk must see the chain
    extra = out["flat11"]["cycles"] - out["flat7"]["cycles"]
    assert extra >= 4 * 5 * 4


def test_philox_call_imad_count(compiled):
    out, _ = compiled
    per_call = out["philox"]["per_call"]
    by_n = {int(k): v for k, v in out["philox"]["imad_by_n_iter"].items()}
    # one call per lane per trip: 4 more trips, 4 more calls' worth of IMADs
    assert (by_n[7] - by_n[3]) / 4 == per_call
    # Philox4x32-10 with counter (c0, step, 0, 0): 10 rounds x 2 32x32->64 multiplies; round 1's product of
    # c2 = 0 folds away and round 2's product of the uniform word (step ^ key) is hoisted out of the loop,
    # leaving 18 per-lane multiplies, each one IMAD.WIDE (both halves) up to IMAD.HI + IMAD.
    assert 18 <= per_call <= 36


SASS_TEXT = textwrap.dedent('''\
    //--------------------- .text.k --------------------------
    k:
    .text.k:
    \t//## File "{f}", line 3
            /*0000*/                   MOV R1, c[0x0][0x28] ;          /* 0x00000a0000017a02 */
                                                                        /* 0x000fe40000000f00 */
    .L_x_1:
    \t//## File "{f}", line 5
            /*0010*/                   FFMA R2, R2, R3, R4 ;          /* 0x0000000302027223 */
                                                                        /* 0x004fc80000000004 */
    .L_x_0:
            /*0020*/                   IMAD.WIDE.U32 R4, R5, R6, RZ ;  /* 0x0000000605047225 */
                                                                        /* 0x000fca00078e00ff */
    \t//## File "{f}", line 4
            /*0030*/              @P0 BRA `(.L_x_0) ;               /* 0xfffffffc00000947 */
                                                                        /* 0x000fea000383ffff */
    \t//## File "{f}", line 2
            /*0040*/              @P1 BRA `(.L_x_1) ;               /* 0xfffffff800000947 */
                                                                        /* 0x000fea000383ffff */
            /*0050*/                   EXIT ;                         /* 0x000000000000794d */
                                                                        /* 0x000fea0003800000 */
    .L_x_2:
            /*0060*/                   BRA `(.L_x_2);                  /* 0xfffffffc00fc7947 */
                                                                        /* 0x000fc0000383ffff */
            /*0070*/                   NOP;                            /* 0x0000000000007918 */
                                                                        /* 0x000fc00000000000 */
    ''')

SOURCE = "def k(n, m):\n    for j in range(n):\n        for i in range(m):\n            pass\n        x = 1\n"


def test_parser_loops_and_control_bits(tmp_path):
    src = tmp_path / "k.py"
    src.write_text(SOURCE)
    funcs = sass.parse(SASS_TEXT.format(f=src))
    instrs = sass.entry_function(funcs)
    assert [i.opcode for i in instrs] == ["MOV", "FFMA", "IMAD.WIDE.U32", "BRA", "BRA", "EXIT"]  # padding dropped
    assert instrs[3].target == 0x20 and instrs[4].target == 0x10 and instrs[3].predicate == "@P0"
    # control bits: hi word 0x004fc80000000004 >> 41 = 0x27e4: stall 4, yield 0, no write/read scoreboard,
    # wait mask 0b000100 (scoreboard 2), reuse 0
    ffma = instrs[1]
    assert (ffma.stall, ffma.write_scoreboard, ffma.read_scoreboard, ffma.wait_mask) == (4, None, None, 0b100)
    loops = sass.annotate(sass.find_loops(instrs), instrs)
    assert len(loops) == 1 and len(loops[0].children) == 1
    outer, inner = loops[0], loops[0].children[0]
    # the outer branch carries line 2 (its `for`), the inner one line 4 (inside the inner for's span)
    assert (outer.start, outer.end, outer.source.var, outer.source.line) == (0x10, 0x40, "j", 2)
    assert (inner.start, inner.end, inner.source.var, inner.source.line) == (0x20, 0x30, "i", 3)
    regions = {tuple(lp.source.var for lp in path): [i.opcode for i in body] for path, body in
               sass.regions(instrs, loops)}
    assert regions == {(): ["MOV", "EXIT"], ("j",): ["FFMA", "BRA"], ("j", "i"): ["IMAD.WIDE.U32", "BRA"]}
    c = cm.count_instructions(instrs)
    assert (c["fp32"], c["imad"], c["alu"], c["branch"], c["instructions"]) == (1, 1, 1, 3, 6)


BRANCH_SOURCE = ("def k(n, every, B):\n"
                 "    for s in range(n):\n"
                 "        if s % every == 0:\n"
                 "            a = 1\n"
                 "        else:\n"
                 "            a = 2\n"
                 "        if B > 0:\n"
                 "            c = 3\n")
# (label, line, instruction): a loop (line 2) holding an if/else (line 3: body 3 FFMA and the jump over the
# else, else 2 FADD) and an if without else (line 7: one IMAD.WIDE)
BRANCH_SASS = [(None, 1, "MOV R1, c[0x0][0x28]"),
               (".L_x_0", 3, "ISETP.NE.AND P0, PT, R2, RZ, PT"),
               (None, 3, "@P0 BRA `(.L_x_1)"),
               (None, 4, "FFMA R3, R3, R4, R5"), (None, 4, "FFMA R3, R3, R4, R5"), (None, 4, "FFMA R3, R3, R4, R5"),
               (None, 3, "BRA `(.L_x_2)"),
               (".L_x_1", 6, "FADD R3, R3, 1"), (None, 6, "FADD R3, R3, 2"),
               (".L_x_2", 7, "@P1 BRA `(.L_x_3)"),
               (None, 8, "IMAD.WIDE.U32 R6, R7, R8, RZ"),
               (".L_x_3", 2, "@P2 BRA `(.L_x_0)"),
               (None, None, "EXIT"),
               (".L_x_4", None, "BRA `(.L_x_4)")]


def _sass_text(rows, path) -> str:
    """nvdisasm -g -hex text for rows of (label, line, instruction), 16 bytes apart, control bits zero."""
    out = ["        .text.k:"]
    for i, (label, line, text) in enumerate(rows):
        if label:
            out.append(f"{label}:")
        if line is not None:
            out.append(f'\t//## File "{path}", line {line}')
        out.append(f"        /*{16 * i:04x}*/                   {text} ;   /* 0x0000000000000000 */")
        out.append("                                                          /* 0x0000000000000000 */")
    return "\n".join(out) + "\n"


# ptxas's IEEE sqrt and division as laid out on sm_90 (the AdamW step of the small kernel): the fast path
# tests its operand and branches over the set-up of the slow-path call (sqrt: MOV, CALL, and the jump past
# the fast path; division: three MOVs and the CALL, which returns to the join point); a third CALL with
# other work before it is not a guarded slow path and stays
SLOW_PATH_SASS = [(None, 1, "MUFU.RSQ R72, R7"), (None, 1, "ISETP.GT.U32.AND P2, PT, R8, 0x727fffff, PT"),
                  (None, 1, "@!P2 BRA `(.L_x_15)"),
                  (None, 1, "MOV R76, 0xb590"), (None, 1, "CALL.REL.NOINC `($__internal_0_$__cuda_sm20_sqrt_rn_f32_slowpath)"),
                  (None, 1, "BRA `(.L_x_16)"),
                  (".L_x_15", 1, "FMUL.FTZ R8, R7, R72"), (None, 1, "FFMA R7, -R8, R8, R7"),
                  (".L_x_16", 1, "FCHK P1, R8, R81"), (None, 1, "@!P1 BRA `(.L_x_18)"),
                  (None, 1, "MOV R7, R8"), (None, 1, "MOV R8, R81"), (None, 1, "MOV R77, 0xb6c0"),
                  (None, 1, "CALL.REL.NOINC `($__internal_1_$__cuda_sm3x_div_rn_noftz_f32_slowpath)"),
                  (".L_x_18", 1, "FADD R73, R7, R0"),
                  (None, 1, "MOV R77, 0xb6c0"), (None, 1, "FADD R1, R1, R1"),
                  (None, 1, "CALL.REL.NOINC `($__internal_1_$__cuda_sm3x_div_rn_noftz_f32_slowpath)"),
                  (None, None, "EXIT"), (".L_x_4", None, "BRA `(.L_x_4)")]


# the same two calls as ptxas laid them out once the kernel's loads changed: the results moved back after
# each call (sqrt: a move and the jump to the join point; division: a MOV that falls through to it), some
# moves on the IMAD pipe (IMAD.MOV, IMAD Rd, RZ, RZ, X), as in the tiled update kernel
SLOW_PATH_RESULT_MOVES_SASS = [
    (None, 1, "MUFU.RSQ R21, R8"), (None, 1, "ISETP.GT.U32.AND P2, PT, R7, 0x727fffff, PT"), (None, 1, "MOV R7, R8"),
    (None, 1, "@!P2 BRA `(.L_x_15)"),
    (None, 1, "IMAD.MOV.U32 R5, RZ, RZ, R8"), (None, 1, "MOV R20, 0xb590"),
    (None, 1, "CALL.REL.NOINC `($__internal_0_$__cuda_sm20_sqrt_rn_f32_slowpath)"),
    (None, 1, "IMAD.MOV.U32 R9, RZ, RZ, R21"), (None, 1, "BRA `(.L_x_16)"),
    (".L_x_15", 1, "FMUL.FTZ R9, R8, R21"), (None, 1, "FFMA R8, -R9, R9, R8"),
    (".L_x_16", 1, "FCHK P1, R9, R80"), (None, 1, "@!P1 BRA `(.L_x_18)"),
    (None, 1, "IMAD.U32 R7, RZ, RZ, UR15"), (None, 1, "MOV R77, 0xb6c0"),
    (None, 1, "CALL.REL.NOINC `($__internal_1_$__cuda_sm3x_div_rn_noftz_f32_slowpath)"), (None, 1, "MOV R8, R72"),
    (".L_x_18", 1, "FADD R73, R8, R0"),
    (None, 1, "@P0 BRA `(.L_x_19)"), (None, 1, "MOV R7, R9"), (None, 1, "FADD R1, R1, R1"),
    (None, 1, "CALL.REL.NOINC `($__internal_1_$__cuda_sm3x_div_rn_noftz_f32_slowpath)"),
    (".L_x_19", None, "EXIT"), (".L_x_4", None, "BRA `(.L_x_4)")]


def test_slow_path_calls_are_not_counted(tmp_path):
    src = tmp_path / "k.py"
    src.write_text("x = 1\n")
    instrs = sass.entry_function(sass.parse(_sass_text(SLOW_PATH_SASS, src)))
    assert [i.opcode for i in instrs] == ["MUFU.RSQ", "ISETP.GT.U32.AND", "BRA", "FMUL.FTZ", "FFMA", "FCHK", "BRA",
                                          "FADD", "MOV", "FADD", "CALL.REL.NOINC", "EXIT"]
    assert instrs[2].predicate == "@!P2" and instrs[6].predicate == "@!P1"  # the fast paths' tests stay
    # the results' moves after the calls are the slow paths' too; a guarded call with other work beside it stays
    instrs = sass.entry_function(sass.parse(_sass_text(SLOW_PATH_RESULT_MOVES_SASS, src)))
    assert [i.opcode for i in instrs] == ["MUFU.RSQ", "ISETP.GT.U32.AND", "MOV", "BRA", "FMUL.FTZ", "FFMA", "FCHK",
                                          "BRA", "FADD", "BRA", "MOV", "FADD", "CALL.REL.NOINC", "EXIT"]


def test_branch_sides_weighted_by_hand(tmp_path, monkeypatch):
    src = tmp_path / "k.py"
    src.write_text(BRANCH_SOURCE)
    instrs = sass.entry_function(sass.parse(_sass_text(BRANCH_SASS, src)))
    args = {"n": 10, "every": 4, "B": 0}
    # no rule: both sides of every branch count in full: 2 outside + 10 x 11
    plain = cm.per_program(cm.profile_instructions("k", 1, 32, 0, 0, instrs), args)[0]
    assert plain["instructions"] == 2 + 10 * 11 and plain["fp32"] == 10 * 5 and plain["imad"] == 10
    monkeypatch.setitem(cm.BRANCH_FREQUENCY, ("k", "s % every == 0"), lambda a: 1 / a["every"])
    monkeypatch.setitem(cm.BRANCH_FREQUENCY, ("k", "B > 0"), lambda a: float(a["B"] > 0))
    prof = cm.profile_instructions("k", 1, 32, 0, 0, instrs)
    assert [(sd.start, sd.end, sd.source.line, sd.body) for sd in prof.sides] == \
        [(0x30, 0x70, 3, True), (0x70, 0x90, 3, False), (0xa0, 0xb0, 7, True)]
    # per iteration: the compare and three branches always; the body (3 FFMA + its jump) on 1/4 of them,
    # the else (2 FADD) on 3/4; the IMAD never with B = 0, always with B > 0
    counts = cm.per_program(prof, args)[0]
    assert counts["instructions"] == pytest.approx(2 + 10 * (4 + 4 / 4 + 2 * 3 / 4))
    assert counts["fp32"] == pytest.approx(10 * (3 / 4 + 2 * 3 / 4)) and counts["imad"] == 0
    assert cm.per_program(prof, {**args, "B": 5})[0]["imad"] == 10
    # by source line (superpos bench --predict --lines): each line's share, weighted alike, sums to the totals
    lines = cm.per_program_lines(prof, args)
    assert lines[str(src), 4]["fp32"] == pytest.approx(10 * 3 / 4) and lines[str(src), 6]["fp32"] == pytest.approx(10 * 2 * 3 / 4)
    assert lines[str(src), 3]["instructions"] == pytest.approx(10 * (2 + 1 / 4))  # compare, branch; the jump on 1/4
    for key in ("instructions", "fp32", "imad", "branch"):
        assert sum(c[key] for c in lines.values()) == pytest.approx(counts[key])


def test_bank_conflict_factors_scale_a_lines_shared_wavefronts(tmp_path):
    """A line's conflict factor (bank_conflicts.line_factors) multiplies its shared wavefronts only."""
    src = tmp_path / "k.py"
    src.write_text("a = 1\nb = 2\n")
    instrs = sass.entry_function(sass.parse(_sass_text(
        [(None, 1, "LDS.128 R4, [R2]"), (None, 2, "LDS.128 R8, [R3]"), (None, 2, "STS [R3], R8"), (None, 2, "EXIT")],
        src)))
    plain = cm.count_instructions(instrs)
    assert plain["shared_wavefronts"] == 4 + 4 + 1
    scaled = cm.count_instructions(instrs, {(str(src), 2): 2.5})
    assert scaled["shared_wavefronts"] == 4 + 2.5 * (4 + 1) and scaled["instructions"] == plain["instructions"]


def test_logged_fraction_follows_logged_steps():
    from superpos.config import TrainConfig
    steps = TrainConfig(steps=1000, log_every=100).logged_steps()  # 0, 100, ..., 900 and 999
    a = {"t0": 0, "n_steps": 1000, "total_steps": 1000, "log_every": 100}
    assert cm.logged_fraction(a) == len(steps) / 1000 == 0.011
    # a launch of steps 950 .. 999: only the last is logged
    assert cm.logged_fraction({**a, "t0": 950, "n_steps": 50}) == 1 / 50


def test_pipe_classes_and_widths():
    assert [cm.pipe_of(op) for op in ("FFMA", "IMAD.HI.U32", "IMAD.MOV.U32", "LOP3.LUT", "SHFL.BFLY", "MUFU.RSQ",
                                      "HGMMA.64x16x8.F32.TF32", "LDS.128", "STL.64", "LDG.E.64", "UIADD3", "ULDC",
                                      "BAR.SYNC.DEFER_BLOCKING")] == \
        ["fp32", "imad", "imad", "alu", "shfl", "xu", "mma", "shared", "local", "global", "uniform", "const",
         "barrier"]
    assert cm.mma_fmas("HGMMA.64x16x8.F32.TF32") == 64 * 16 * 8 // 4
    assert cm.mma_fmas("HMMA.1688.F32.TF32") == 16 * 8 * 8
    fake = [sass.Instr(0, op, "", "", None, None, 0) for op in ("LDS.128", "LDS", "STS.64", "LDSM.16.M88.4", "STG.E.64")]
    c = cm.count_instructions(fake)
    assert c["shared_wavefronts"] == 4 + 1 + 2 + 4 and c["global_bytes"] == 32 * 8


def _profile(per_warp: dict, warps: int, registers: int, latency: int) -> cm.KernelProfile:
    counts = Counter(per_warp)
    counts["instructions"] = sum(per_warp.values())
    return cm.KernelProfile("hand", warps, registers, 0, 0, [], [((), counts, latency)])


def test_launch_cost_by_hand():
    dev = cm.DEVICES["h100-sxm"]
    prof = _profile({"fp32": 400, "imad": 800, "alu": 100, "shfl": 50}, warps=4, registers=64, latency=1000)
    cost = cm.launch_cost(prof, {}, (264,), dev)
    # 264 programs on 132 SMs: 2 per SM. Per program (4 warps): 1,350 x 4 = 5,400 instructions, 1,600 FP32,
    # 3,200 IMAD, 400 ALU, 200 SHFL. Cycles on one SM: issue 2 x 5,400 / 4 = 2,700; FMA pipe 2 x 4,800 / 4
    # = 2,400; IMAD (heavy half) 2 x 3,200 / 2 = 3,200; ALU 400; LSU (shuffles) 400. 64 registers x 4 warps:
    # 8 programs fit an SM, one round of latency: 1,000 cycles. IMAD binds: 3,200 cycles at 1.98 GHz plus
    # the 2 us launch gap.
    assert cost.resident == 8
    assert cost.cycles["issue"] == 2700 and cost.cycles["fp32+imad"] == 2400 and cost.cycles["imad"] == 3200
    assert cost.cycles["alu"] == 400 and cost.cycles["lsu"] == 400 and cost.cycles["latency"] == 1000
    assert cost.binding == "imad"
    assert cost.seconds == pytest.approx(3200 / 1.98e9 + 2e-6, rel=1e-12)
    # one program of one warp at 255 registers: latency binds when the work is a single dependent chain
    lone = cm.launch_cost(_profile({"fp32": 100}, warps=1, registers=255, latency=900), {}, (1,), dev)
    assert lone.binding == "latency" and lone.cycles["latency"] == 900 and lone.cycles["issue"] == 25


def test_calibration_classes_name_resources():
    """Every measured factor belongs to a class a launch can fall in (a misspelt key would leave the
    calibrated figure empty); latency splits by kernel, the other resources do not."""
    resources = set(cm.resource_cycles(Counter(), cm.DEVICES["h100-sxm"])) | {"latency", "l2 (chip)"}
    classes = {cm.calibration_class(b, k) for b in resources for k in ("_train_small_kernel", "_tiled_grads_kernel")}
    assert set(cm.MEASURED_OVER_PREDICTED["h100-sxm"]) <= classes
    assert cm.calibration_class("latency", "_tiled_grads_kernel") == "latency, tiled"
    assert cm.calibration_class("latency", "_train_small_kernel") == "latency"
    assert cm.calibration_class("lsu", "_tiled_grads_kernel") == "lsu"


def test_measured_column_takes_the_newest_row_of_the_same_sm(tmp_path, monkeypatch):
    """An H100 SXM prediction is set beside the newest H100 or H200 row (one GH100 SM), never a CPU's."""
    from superpos.bench import report
    rows = [{"workload": "phase", "backend": "triton", "precision": "ieee", "K": 8, "device": dev,
             "timestamp": ts, "ms_per_1000_steps": ms, "status": "ok"}
            for dev, ts, ms in (("NVIDIA H100 80GB HBM3", "2026-01-01T00:00:00", 70.0),
                                ("NVIDIA H200", "2026-01-02T00:00:00", 68.0),
                                ("cpu", "2026-01-03T00:00:00", 9000.0))]
    (tmp_path / "gpu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(report, "results_dir", lambda: tmp_path)
    pred = [{"device": "NVIDIA H100 SXM (sm_90, 132 SMs, 1.98 GHz)"}]
    assert pr.measured_ms(pred) == {("phase", "ieee", 8): (68.0, "H200")}


def test_occupancy_by_hand():
    dev = cm.DEVICES["h100-sxm"]
    assert cm.programs_per_sm(255, 8, 0, dev) == 1  # 256 regs x 32 x 8 = 65,536: the whole file
    assert cm.programs_per_sm(168, 8, 0, dev) == 1  # 168 x 256 = 43,008: a second one does not fit
    assert cm.programs_per_sm(64, 1, 0, dev) == 32  # 2,048 registers each: the 32-CTA limit binds
    assert cm.programs_per_sm(32, 4, 100 * 1024, dev) == 2  # shared memory: 228 KB / (100 + 1) KB


def test_scratch_footprint_by_hand():
    """The tiled kernel's scratch (one slot per program) in all and as the resident programs hold it at
    once: uniform's tf32 split launch (bench/README.md, "Where the scratch lives": 40.6 MB, whose reads all
    missed L2 on the H200)."""
    import torch
    dev = cm.DEVICES["h100-sxm"]
    xs = torch.empty((64, 16, 1, 64, 400))  # K, slices, (x | x and gz), slice, row stride
    total, live = pr.scratch_mb({"xs_ptr": xs}, 64 * 16, 3, dev)
    assert total == pytest.approx(64 * 1024 * 400 * 4 / 1e6)  # the whole batch of every model: 104.9 MB
    assert live == pytest.approx(132 * 3 * 64 * 400 * 4 / 1e6) and round(live, 1) == pr.SCRATCH_LIVE_MISS_MB
    # fewer programs than the SMs hold: all of them at once
    assert pr.scratch_mb({"xs_ptr": xs[:2]}, 2 * 16, 3, dev) == pytest.approx((2 * 16 * 102_400 / 1e6,) * 2)
    assert pr.scratch_mb({"W_ptr": xs}, 10, 3, dev) is None  # a launch without a scratch


def test_floors_by_hand():
    dev = cm.DEVICES["h100-sxm"]
    f = pr.floors(n=2, m=1, B=1024, K=25_600, device=dev, philox_imad=32)
    hz = 1.98e9 * 132
    # 256 groups x 2 features x 25,600 models Philox calls per step, 32 lanes a warp, 32 IMAD each, 2 per clock
    assert f["philox"] == pytest.approx(256 * 2 * 25_600 / 32 * 32 / (2 * hz))
    # 5 m n B FMAs per model-step at 128 FMA lanes per clock per SM
    assert f["fp32"] == pytest.approx(5 * 2 * 1024 * 25_600 / (128 * hz))
    assert f["tensor"] == pytest.approx(5 * 2 * 1024 * 25_600 / (1024 * hz))
    assert f["tf32x3"] == pytest.approx(3 * f["tensor"])
    assert math.isclose(f["philox"] * 1e6, 25.07, rel_tol=1e-3)  # ms per 1,000 steps


def test_trip_count_needs_a_rule_for_kernel_locals():
    loop = sass.ForLoop("f.py", 3, "kern", "g0", "for g0 in range(0, groups, BG)")
    with pytest.raises(ValueError, match="TRIP_COUNTS"):
        cm.trip_count(loop, "kern", {"BG": 4})
    assert cm.trip_count(sass.ForLoop("f.py", 3, "kern", "c", "for c in range(0, n, NC)"), "kern",
                         {"n": 400, "NC": 16}) == 25
    assert cm.trip_count(sass.ForLoop("f.py", 3, "kern", "c", "for c in tl.range(0, n, NC, loop_unroll_factor=2)"),
                         "kern", {"n": 400, "NC": 16}) == 25  # tl.range's hints leave the count
    with pytest.raises(ValueError, match="TRIP_COUNTS"):  # a local in tl.range needs a rule too
        cm.trip_count(sass.ForLoop("f.py", 3, "kern", "c", "for c in tl.range(0, groups, 4)"), "kern", {})


def test_trip_count_rules_hold_only_for_the_range_they_were_written_for():
    """A rule is keyed by (function, variable): a second loop there with the same variable over another
    range raises instead of taking it (a 64-feature `c` loop in _slice_grads was once counted 25 trips at
    n = 400 for its 7)."""
    args = {"n": 400, "NC": 16}
    assert cm.trip_count(sass.ForLoop("f.py", 3, "_slice_grads", "c", "for c in range(0, n, NC)"), "k", args) == 25
    with pytest.raises(ValueError, match="is for `range\\(0, n, NC\\)`"):
        cm.trip_count(sass.ForLoop("f.py", 9, "_slice_grads", "c", "for c in range(0, n, 64)"), "k", args)
    assert cm.trip_count(sass.ForLoop("f.py", 3, "_wide_dw", "cw", "for cw in range(0, n, WIDE_NW)"), "k", args) == 7
    for (function, var), (written_for, _) in cm.TRIP_COUNTS.items():  # every rule's range parses as written
        import ast
        assert ast.unparse(ast.parse(written_for, mode="eval")) == written_for, (function, var)


def test_predict_cli_json(tmp_path):
    out = tmp_path / "predicted.jsonl"
    cmd = [sys.executable, "-m", "superpos.bench.cli", "--predict", "--json", "-w", "phase", "--out", str(out)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(rows) == 1 and rows == [json.loads(line) for line in out.read_text().splitlines()]
    r = rows[0]
    for key in ("workload", "precision", "K", "warp_instructions_per_model_step", "predicted_ms_per_1000_steps",
                "floor_ms_per_1000_steps", "floor", "binding", "registers", "spill_bytes", "device", "commit"):
        assert key in r, key
    assert (r["workload"], r["precision"], r["K"], r["floor"]) == ("phase", "ieee", 25_600, "philox")
    assert r["binding"] in ("issue", "fp32+imad", "imad", "alu", "xu", "lsu", "tensor", "l2", "l2 (chip)", "latency")
    assert r["warp_instructions_per_model_step"] == pytest.approx(sum(r["pipes_per_model_step"].values()), rel=1e-3)
    assert r["predicted_ms_per_1000_steps"] >= r["floor_ms_per_1000_steps"] > 0
    bad = subprocess.run(cmd[:-2] + ["--gpu", "a100", "--out", str(out)], env=ENV, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--gpu" in bad.stderr
    assert len(out.read_text().splitlines()) == 1  # nothing written


KERNEL_CONFIG_PREDICT = """
import json
from superpos.bench import predict as pr
from superpos.bench.workloads import get_workload
phase = get_workload("phase")
for kc in (None, {"tile_unroll": 1}):
    r = pr.predict(phase, kernel_config=kc)
    print(json.dumps([r["kernel_config"], r["warp_instructions_per_model_step"], r["registers"]]))
"""


def test_predict_takes_a_kernel_config(tmp_path):
    """--predict --kernel-config (predict(kernel_config=...)) costs the blocks the GPU's tune step would time:
    phase's tiny path at one tile per loop trip (chosen: four) is another kernel, recorded in the row."""
    proc = subprocess.run([sys.executable, "-c", KERNEL_CONFIG_PREDICT], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (kc0, instr0, regs0), (kc1, instr1, regs1) = (json.loads(line) for line in proc.stdout.splitlines()[-2:])
    assert kc0 is None and kc1 == {"tile_unroll": 1}
    assert instr1 != instr0 and regs1 < regs0  # one tile's code per trip: fewer registers live
    bad = subprocess.run([sys.executable, "-m", "superpos.bench.cli", "--predict", "-w", "phase", "--kernel-config",
                          '{"tile_unroll": 0}', "--out", str(tmp_path / "p.jsonl")], env=ENV, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "tile_unroll must be a positive int" in bad.stderr


def test_predict_lines_cli(tmp_path):
    """--predict --lines N: each kernel's N costliest source lines; their counts are parts of the row's."""
    base = [sys.executable, "-m", "superpos.bench.cli", "--predict", "--json", "-w", "phase", "--out",
            str(tmp_path / "p.jsonl")]
    proc = subprocess.run(base + ["--lines", "3"], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert rows and len(rows) <= 3 * len({r["kernel"] for r in rows})
    assert all(r["workload"] == "phase" and r["line"] and r["source"] for r in rows)
    assert [r["cycles"] for r in rows] == sorted((r["cycles"] for r in rows), reverse=True)
    total = json.loads(subprocess.run(base, env=ENV, capture_output=True, text=True).stdout.splitlines()[0])
    assert sum(r["instructions"] for r in rows) <= total["warp_instructions_per_model_step"] * (1 + 1e-6)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 1  # the plain run's row: --lines writes none
    bad = subprocess.run(base + ["--lines", "0"], env=ENV, capture_output=True, text=True)
    assert bad.returncode == 2 and "--lines" in bad.stderr


def test_unroll_factor_is_the_trip_counter_countdown_only():
    """An unrolled loop counts its trip counter down by U on the `for`'s line; a large constant subtracted
    on that line (a Philox key step inlined there) is arithmetic, not an unroll of 1.8e9."""
    from superpos.bench import sass
    loop = sass.ForLoop("k.py", 7, "f", "g0", "for g0 in range(0, n, 4)")
    at = lambda op, addr: sass.Instr(addr, "IADD3", op, "", "k.py", 7, 0)  # noqa: E731
    assert sass.unroll_factor([at("R5, R5, -0x4, RZ", 0)], loop) == 4
    assert sass.unroll_factor([at("R5, R5, -0x6bb81440, RZ", 0)], loop) == 1
    assert sass.unroll_factor([at("R5, R5, -0x6bb81440, RZ", 0), at("R6, R6, -0x2, RZ", 16)], loop) == 2
