"""Bank conflicts read from PTX (superpos.bench.bank_conflicts): wavefronts of hand-written accesses whose
lane addresses are known, the integer evaluation of the address arithmetic, ptxas's merging of scalar
loads into vector ones, and, on a compiled FMA `tl.dot`, that the operand layout the kernels avoid is the
one that conflicts. No test times anything."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from superpos.bench import bank_conflicts as bc

ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def ptx(body: str) -> str:
    return textwrap.dedent('''
        .version 8.0
        .target sm_90
        .extern .shared .align 16 .b8 global_smem[];
        .file 1 "probe.py"
        .visible .entry probe()
        {
            .loc 1 7 0
            mov.u32 %r1, %tid.x;
            mov.b32 %r9, global_smem;
    ''') + textwrap.indent(textwrap.dedent(body), "    ") + "    ret;\n}\n"


def one(body: str, num_warps: int = 1) -> bc.Access:
    (access,) = bc.shared_accesses(ptx(body), num_warps)
    return access


def test_wavefronts_of_known_lane_patterns():
    # 4-byte words, lane i at 4 i: one word per bank, one wavefront
    assert bc.wavefronts([4 * i for i in range(32)], 4) == 1
    # every lane on bank 0, 32 distinct words: 32 wavefronts; the same word for all: one (broadcast)
    assert bc.wavefronts([128 * i for i in range(32)], 4) == 32
    assert bc.wavefronts([64] * 32, 4) == 1
    # 16 bytes a lane: served a quarter-warp (8 lanes, 128 B) at a time, 4 wavefronts conflict-free
    assert bc.wavefronts([16 * i for i in range(32)], 16) == 4
    # 16 bytes a lane, rows 256 B apart: the 8 lanes of a quarter all on banks 0-3, 8 each: 32
    assert bc.wavefronts([256 * i for i in range(32)], 16) == 32
    # two lanes of each half-warp on one bank (stride 64 words per 2 lanes): 2-way, 8-byte accesses
    assert bc.wavefronts([(i % 2) * 256 + (i // 2) * 8 for i in range(32)], 8) == 2 * 2


def test_addresses_from_the_thread_index():
    a = one('''
        shl.b32 %r2, %r1, 7;
        add.s32 %r3, %r9, %r2;
        ld.shared.b32 %r4, [%r3];
    ''')
    assert (a.file, a.line, a.assumed, a.wavefronts) == ("probe.py", 7, 1, 32)
    a = one('''
        and.b32 %r2, %r1, 7;
        bfe.u32 %r5, %r1, 3, 2;
        mad.lo.s32 %r6, %r5, 40, %r2;
        shl.b32 %r7, %r6, 2;
        add.s32 %r3, %r9, %r7;
        ld.shared.b32 %r4, [%r3+64];
    ''')
    # lane = 8 q + j (q < 4): word 40 q + j + 16, bank (8 q + j + 16) % 32: all distinct, one wavefront
    assert a.wavefronts == 1
    a = one('''
        setp.lt.u32 %p1, %r1, 16;
        selp.b32 %r2, 0, 512, %p1;
        add.s32 %r3, %r9, %r2;
        ld.shared.b32 %r4, [%r3];
    ''')
    # two addresses, both on bank 0: the lanes sharing one are served together, 2 wavefronts
    assert a.wavefronts == 2
    # div/rem (truncating): lane -> (lane / 8) * 40 + lane % 8 words: bank 8 (lane / 8) + lane % 8, no two
    # lanes on one bank (with rows 32 words apart it would be 4-way)
    a = one('''
        div.u32 %r2, %r1, 8;
        rem.u32 %r5, %r1, 8;
        mad.lo.s32 %r6, %r2, 40, %r5;
        shl.b32 %r7, %r6, 2;
        add.s32 %r3, %r9, %r7;
        ld.shared.b32 %r4, [%r3];
    ''')
    assert a.wavefronts == 1
    # an address read from memory is unknown and counted as assumed (conflict-free)
    a = one('''
        ld.global.b32 %r2, [%rd1];
        add.s32 %r3, %r9, %r2;
        ld.shared.b32 %r4, [%r3];
    ''')
    assert a.wavefronts is None
    assert bc.line_factors(ptx('''
        ld.global.b32 %r2, [%rd1];
        add.s32 %r3, %r9, %r2;
        ld.shared.b32 %r4, [%r3];
    '''), 1) == {("probe.py", 7): 1.0}


def test_scalar_loads_merge_as_ptxas_merges_them():
    # four 4-byte loads at 0, 4, 8, 12 from a 16-byte-aligned base: one 16-byte access (LDS.128)
    body = '''
        shl.b32 %r2, %r1, 4;
        add.s32 %r3, %r9, %r2;
        ld.shared.b32 %r4, [%r3];
        ld.shared.b32 %r5, [%r3+4];
        ld.shared.b32 %r6, [%r3+8];
        ld.shared.b32 %r7, [%r3+12];
    '''
    (a,) = bc.shared_accesses(ptx(body), 1)
    assert (a.bytes_per_lane, a.assumed, a.wavefronts) == (16, 4, 4)
    # a barrier between them keeps them apart: four 4-byte accesses, lanes 16 B apart (4-way each)
    split = body.replace("ld.shared.b32 %r6", "bar.sync 0;\n        ld.shared.b32 %r6")
    accesses = bc.shared_accesses(ptx(split), 1)
    assert sorted((a.bytes_per_lane, a.wavefronts) for a in accesses) == [(8, 2 * 2), (8, 2 * 2)]
    # a base only 8-byte aligned in some lanes: 8-byte pieces
    odd = body.replace("add.s32 %r3, %r9, %r2;", "add.s32 %r8, %r2, 8;\n        add.s32 %r3, %r9, %r8;")
    assert {a.bytes_per_lane for a in bc.shared_accesses(ptx(odd), 1)} == {8}


PROBE = textwrap.dedent('''
    import triton
    import triton.language as tl

    @triton.jit
    def dot_probe(a_ptr, b_ptr, c_ptr, TRANS_B: tl.constexpr):
        rm = tl.arange(0, 128)
        rk = tl.arange(0, 16)
        rn = tl.arange(0, 32)
        a = tl.load(a_ptr + rm[:, None] * 16 + rk[None, :])
        if TRANS_B:  # B as the transpose of an [N, K] tile: K contiguous in shared memory
            b = tl.trans(tl.load(b_ptr + rn[:, None] * 16 + rk[None, :]))
        else:  # B loaded as [K, N]: N contiguous
            b = tl.load(b_ptr + rk[:, None] * 32 + rn[None, :])
        c = tl.dot(a, b, input_precision="ieee")
        tl.store(c_ptr + rm[:, None] * 32 + rn[None, :], c)
''')

SCRIPT = '''
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import probe_dot as pd
from superpos.bench import bank_conflicts as bc, costmodel as cm, sass
from superpos.kernels.as_launched import compile_launch, recording

x = torch.zeros(128 * 32)
out = {}
for trans in (True, False):
    with recording() as launches:
        pd.dot_probe[(1,)](x, x, x, TRANS_B=trans, num_warps=4)
    ck = compile_launch(launches[0], 90)
    instrs = sass.entry_function(sass.parse(sass.disassemble(ck.asm["cubin"])), ck.metadata.name)
    lines = open(sys.argv[1] + "/probe_dot.py").read().splitlines()
    b_line = [i for i, text in enumerate(lines, 1) if "b = " in text][0 if trans else 1]
    sass_loads = sorted((i.line, i.opcode) for i in instrs if i.base == "LDS")
    ptx_loads = sorted((a.line, f"LDS.{8 * a.bytes_per_lane}" if a.bytes_per_lane != 4 else "LDS")
                       for a in bc.shared_accesses(ck.asm["ptx"], 4) if a.opcode.startswith("ld"))
    factors = bc.line_factors(ck.asm["ptx"], 4)
    out[str(trans)] = {"sass": sass_loads, "ptx": ptx_loads,
                       "b_factor": [v for k, v in factors.items() if k[0].endswith("probe_dot.py") and k[1] == b_line]}
print(json.dumps(out))
'''


def test_the_fma_dot_operand_layouts_on_a_compiled_kernel(tmp_path):
    """ieee tl.dot, [128, 16] x [16, 32], 4 warps, sm_90: the B operand taken as tl.trans of an [N, K] tile
    (K contiguous in shared memory, what the tiled kernel did with W) conflicts, B loaded [K, N] does not;
    and the PTX's loads, merged as bank_conflicts merges them, are the LDS instructions of the SASS (a
    conversion's shared loads carry the line of the value converted: B's load)."""
    pytest.importorskip("triton")
    (tmp_path / "probe_dot.py").write_text(PROBE)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=ENV, capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for case in out.values():
        assert case["sass"] and case["sass"] == case["ptx"]
    (conflicted,), (clean,) = out["True"]["b_factor"], out["False"]["b_factor"]
    assert conflicted >= 4 and clean == 1.0, out
