"""Could register-bank conflicts explain why the small kernel issues 2.55 of 4 instructions a clock (H200
profile)? Reads the SASS of a workload's kernels as launched (sm_90) and counts, in each loop, the
instructions with three register sources and how many put all three on one bank.

    python bench/register_banks.py [-w phase,phase3] [--precision ieee]

Bank model (an assumption, from microbenchmarks of Volta and Turing: Jia et al. 2018, 2019; Hopper's is
not published): two banks, register number mod 2; an instruction stalls a cycle when all three of its
source registers sit on one bank and none comes from the operand-reuse cache (`.reuse`). A 64-bit
operand (R4 for R4:R5) counts as its first register. By chance three sources share a bank a quarter of
the time; a count far below that says ptxas places them apart.
"""
import argparse
import re
from collections import Counter

from superpos.bench import predict as pr
from superpos.bench import sass
from superpos.bench.workloads import get_workload
from superpos.kernels.as_launched import compile_launch
from superpos.launch_capture import distinct

REGISTER = re.compile(r"\bR(\d+)(\.reuse)?\b")  # RZ (the zero register) does not match


def bank_counts(instrs: list) -> Counter:
    """Per instruction list: three-source instructions, those with all sources on one bank, and those
    of them with no source from the reuse cache."""
    out = Counter()
    for ins in instrs:
        sources = ins.operands.split(",")[1:]  # the first operand is the destination
        regs = [(int(m.group(1)), bool(m.group(2))) for s in sources for m in REGISTER.finditer(s)]
        out["instructions"] += 1
        if len(regs) < 3:
            continue
        out["three sources"] += 1
        if len({r % 2 for r, _ in regs}) == 1:
            out["one bank"] += 1
            if not any(reuse for _, reuse in regs):
                out["one bank, none reused"] += 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-w", "--workloads", default="phase,phase3")
    ap.add_argument("--precision", default="ieee")
    args = ap.parse_args(argv)
    for name in args.workloads.split(","):
        _, _, _, _, launches = pr._workload_launches(get_workload(name), args.precision, "h100-sxm", None, 90)
        for launch in distinct(launches, 90):
            with pr._own_cache():
                compiled = compile_launch(launch, 90)
            instrs = sass.entry_function(sass.parse(sass.disassemble(compiled.asm["cubin"])), compiled.metadata.name)
            for loop in sass.find_loops(instrs):
                body = [i for i in instrs if loop.start <= i.addr <= loop.end]
                c = bank_counts(body)
                share = c["one bank"] / max(c["three sources"], 1)
                print(f"{name} {compiled.metadata.name} loop {loop.start:#x}-{loop.end:#x}: {c['instructions']} "
                      f"instructions, {c['three sources']} with three register sources, {c['one bank']} of them "
                      f"on one bank ({share:.1%}; by chance 25%), {c['one bank, none reused']} with no reuse")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
