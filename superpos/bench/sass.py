"""Read a Triton cubin as the GPU runs it: disassemble (nvdisasm from the triton wheel), parse the SASS,
find its loops and the Python `for` each loop comes from, and read the cubin's resource usage.

Used by superpos.bench.costmodel; nothing here knows about the kernels of this project.

Facts relied on (checked on Triton 3.6 cubins for sm_90, see tests/test_costmodel.py):
- Triton keeps `.loc` line info by default, so `nvdisasm -g` prints `//## File "...", line N` before
  the instructions of each source line. The backward branch that closes an `scf.for` carries the line
  of its Python `for` statement, which names the loop.
- Every loop of these kernels is a `for ... in range(...)`: `tl.static_range` loops and Philox's 10
  rounds are unrolled at compile time and are straight-line code in the SASS.
- Subroutines (ptxas's slow paths of IEEE sqrt and division, `$__internal_...` labels) follow the entry
  function's EXIT; they are split off and not counted (their fast paths are inline and counted).
- Volta-and-later instructions are 128 bits; the top 23 bits of the high word are the scheduling control
  set by ptxas: stall cycles (4 bits), yield (1), write scoreboard (3), read scoreboard (3), wait mask (6),
  operand reuse (4). Layout as documented by the open assemblers (e.g. CuAssembler, turingas).
"""
from __future__ import annotations

import ast
import functools
import os
import re
from dataclasses import dataclass, field


def disassemble(cubin: bytes) -> str:
    """SASS text with line info and instruction encodings (for the control bits), by the wheel's nvdisasm."""
    from ..kernels.as_launched import run_on_cubin
    return run_on_cubin("nvdisasm", ["-c", "-g", "-hex"], cubin)


@dataclass(frozen=True)
class Instr:
    addr: int
    opcode: str  # mnemonic with its modifiers, e.g. "IMAD.WIDE.U32"
    operands: str
    predicate: str  # "" or e.g. "@!P0"
    file: str | None
    line: int | None
    control: int  # the 23 scheduling bits (see the module docstring)
    target: int | None = None  # branch target address

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]

    @property
    def stall(self) -> int:
        return self.control & 0xF

    @property
    def write_scoreboard(self) -> int | None:
        sb = (self.control >> 5) & 0x7
        return None if sb == 7 else sb

    @property
    def read_scoreboard(self) -> int | None:
        sb = (self.control >> 8) & 0x7
        return None if sb == 7 else sb

    @property
    def wait_mask(self) -> int:
        return (self.control >> 11) & 0x3F


_FILE = re.compile(r'^\s*//## File "([^"]+)", line (\d+)')
_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;\s*(?:/\*\s*(0x[0-9a-f]{16})\s*\*/)?\s*$")
_HEX = re.compile(r"^\s*/\*\s*(0x[0-9a-f]{16})\s*\*/\s*$")
_LABEL = re.compile(r"^([.$\w][\w.$]*):\s*$")
_TARGET = re.compile(r"`\(([^)]+)\)")


def parse(text: str) -> dict:
    """{function name: [Instr, ...]} in address order. Non-local labels (the entry symbol, `$...`
    subroutines) start a function; local labels (`.L_x_N`) resolve branch targets."""
    rows = []  # [function, addr, opcode, operands, predicate, file, line, high word, target label]
    label_index = {}  # label -> index of the instruction that follows it
    function = file = line = None
    for text_line in text.splitlines():
        if m := _FILE.match(text_line):
            file, line = m.group(1), int(m.group(2))
        elif m := _INSTR.match(text_line):
            body, pred = m.group(2), ""
            if body.startswith("@"):
                pred, body = body.split(None, 1)
            opcode, _, operands = body.partition(" ")
            target = _TARGET.search(operands)
            rows.append([function, int(m.group(1), 16), opcode, operands.strip(), pred, file, line, None,
                         target.group(1) if target else None])
        elif (m := _HEX.match(text_line)) and rows and rows[-1][7] is None:
            rows[-1][7] = int(m.group(1), 16)
        elif m := _LABEL.match(text_line.strip()):
            name = m.group(1)
            label_index[name] = len(rows)
            if not name.startswith(".L"):
                function = name[len(".text."):] if name.startswith(".text.") else name
    address = {name: rows[i][1] for name, i in label_index.items() if i < len(rows)}
    funcs: dict = {}
    for fn, addr, opcode, operands, pred, file, line, hi, target in rows:
        control = (hi >> 41) if hi is not None else 0
        funcs.setdefault(fn, []).append(Instr(addr, opcode, operands, pred, file, line, control,
                                              address.get(target) if target else None))
    return funcs


def entry_function(funcs: dict, name: str | None = None) -> list:
    """The kernel's own instructions: subroutines split off, and the padding after the final
    `BRA self` (which follows the last EXIT) dropped."""
    if name is None:
        entries = [f for f in funcs if not f.startswith("$")]
        if len(entries) != 1:
            raise ValueError(f"expected one entry function, found {entries}")
        name = entries[0]
    instrs = funcs[name]
    for i, ins in enumerate(instrs):
        if ins.base == "BRA" and ins.target == ins.addr:
            return instrs[:i]
    return instrs


@dataclass(eq=False)  # identity: loops key the regions
class Loop:
    start: int  # address of the first instruction of the body (the backward branch's target)
    end: int  # address of the backward branch
    file: str | None
    line: int | None
    children: list = field(default_factory=list)
    source: "ForLoop | None" = None
    unroll: int = 1  # iterations of the Python loop per trip of this SASS loop (see annotate)

    def contains(self, addr: int) -> bool:
        return self.start <= addr <= self.end


def find_loops(instrs: list) -> list:
    """Top-level loops (each with nested .children) from the backward branches. Branches back to the
    same target close one loop (the last one is its end)."""
    by_start: dict = {}
    for ins in instrs:
        # target == addr is the `BRA self` padding after EXIT, not a loop
        if ins.base == "BRA" and ins.target is not None and ins.target < ins.addr:
            loop = by_start.get(ins.target)
            if loop is None or ins.addr > loop.end:
                by_start[ins.target] = Loop(ins.target, ins.addr, ins.file, ins.line)
    loops = sorted(by_start.values(), key=lambda lp: (lp.start, -lp.end))
    top: list = []
    stack: list = []
    for loop in loops:
        while stack and not stack[-1].contains(loop.start):
            stack.pop()
        if stack:
            if loop.end > stack[-1].end:
                raise ValueError(f"loops at {loop.start:#x} and {stack[-1].start:#x} overlap without nesting")
            stack[-1].children.append(loop)
        else:
            top.append(loop)
        stack.append(loop)
    return top


@dataclass(frozen=True)
class ForLoop:
    """A Python `for` statement: where it is, the function it is written in, its variable and range."""
    file: str
    line: int
    function: str
    var: str
    text: str
    end_line: int = 0  # last line of the body


@functools.lru_cache(maxsize=None)
def _for_statements(path: str) -> list:
    """Every `for` statement of a Python file, as (ForLoop, last line of its body)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.For):
                var = ast.unparse(child.target)
                found.append((ForLoop(path, child.lineno, name, var, f"for {var} in {ast.unparse(child.iter)}",
                                      child.end_lineno), child.end_lineno))
            visit(child, name)
    visit(tree, None)
    return found


def source_loop(file: str | None, line: int | None, own_lines=frozenset(), taken=()) -> ForLoop:
    """The Python `for` a SASS loop comes from. Its backward branch carries the line of the `for` or of
    the last statement of the body: the candidates are the `for`s whose span holds that line; the
    innermost one whose own line appears in the loop's own instructions (the induction variable's
    update and test) wins, else the innermost not already given to a nested loop."""
    if file is None or line is None or not os.path.exists(file):
        raise ValueError(f"loop without usable line info ({file}:{line}); compile with line info (the default)")
    spans = [(loop, end) for loop, end in _for_statements(file) if loop.line <= line <= end and loop not in taken]
    if not spans:
        raise ValueError(f"the loop closing at {file}:{line} is in no Python `for` statement")
    spans.sort(key=lambda s: -s[0].line)  # innermost first
    for loop, _ in spans:
        if (file, loop.line) in own_lines:
            return loop
    return spans[0][0]


MAX_UNROLL = 64
_COUNTDOWN = re.compile(r"^(U?R\d+), (?:U?P\d, )?\1, -0x([0-9a-f]+), U?RZ$")


def own_instructions(loop: Loop, instrs: list) -> list:
    """The loop's instructions outside its nested loops."""
    return [i for i in instrs if loop.contains(i.addr) and not any(c.contains(i.addr) for c in loop.children)]


def unroll_factor(body: list, source: "ForLoop") -> int:
    """U of a loop ptxas unrolled U times: its trip counter, on the `for`'s own line, counts down by U
    (`IADD3 Rn, Rn, -U`, or UIADD3 on the uniform datapath)."""
    steps = [int(m.group(2), 16) for i in body
             if i.opcode in ("IADD3", "UIADD3") and (i.file, i.line) == (source.file, source.line)
             and (m := _COUNTDOWN.match(i.operands))]
    # ptxas unrolls by small factors; a large constant subtracted on the same line is arithmetic (e.g. a
    # Philox constant), and siblings without a countdown are versions of the loop (e.g. one per branch)
    return max((u for u in steps if u <= MAX_UNROLL), default=1)


def annotate(loops: list, instrs: list) -> list:
    """Attach each loop's Python `for` (in place, nested loops first); returns the loops.

    ptxas unrolls a small loop with a runtime trip count into an unrolled loop and a remainder loop,
    siblings from the same `for`: where siblings share a `for`, each gets its unroll factor (the
    remainder's is 1) so that the Python loop's iterations can be shared out among them."""
    def visit(loop):
        taken = [t for child in loop.children for t in visit(child)]
        own = own_instructions(loop, instrs)
        loop.source = source_loop(loop.file, loop.line, frozenset((i.file, i.line) for i in own), tuple(taken))
        return taken + [loop.source]

    def unrolls(siblings):
        for loop in siblings:
            if sum(s.source == loop.source for s in siblings) > 1:
                loop.unroll = unroll_factor(own_instructions(loop, instrs), loop.source)
            unrolls(loop.children)
    for loop in loops:
        visit(loop)
    unrolls(loops)
    return loops


def unroll_copies(instrs: list, loops: list) -> set:
    """Addresses of the straight-line copies of an unrolled loop's body, which ptxas places outside its
    loops (a peeled first iteration before the unrolled loop, a conditional block of U/2 iterations
    between it and the remainder loop): they run only for some trip counts, and the unrolled and
    remainder loops already account for every iteration (costmodel.loop_trips), so they are not counted.
    A copy is an instruction of the enclosing region, before the end of the `for`'s last SASS loop, with
    the source line (any file: bodies inline other functions) and opcode of an instruction of those
    loops; the `for` line's own loop control is kept."""
    skip: set = set()

    def visit(siblings, region):
        for src in dict.fromkeys(lp.source for lp in siblings):
            group = [lp for lp in siblings if lp.source == src]
            if max(lp.unroll for lp in group) == 1:
                continue
            hi = max(lp.end for lp in group)
            body = {(i.file, i.line, i.opcode) for i in instrs if any(lp.contains(i.addr) for lp in group)}
            skip.update(i.addr for i in region
                        if i.addr < hi and (i.file, i.line, i.opcode) in body and (i.file, i.line) != (src.file, src.line))
        for lp in siblings:
            visit(lp.children, own_instructions(lp, instrs))
    visit(loops, [i for i in instrs if not any(lp.contains(i.addr) for lp in loops)])
    return skip


def regions(instrs: list, loops: list) -> list:
    """Split the instructions into (loop path, [Instr]) regions: the path is the tuple of enclosing
    loops, outermost first (empty for code outside every loop); each instruction is in exactly one."""
    out: dict = {}

    def path_of(addr, candidates, path):
        for loop in candidates:
            if loop.contains(addr):
                return path_of(addr, loop.children, path + (loop,))
        return path
    for ins in instrs:
        out.setdefault(path_of(ins.addr, loops, ()), []).append(ins)
    return list(out.items())
