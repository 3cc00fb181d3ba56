"""Read a Triton cubin as the GPU runs it: disassemble (nvdisasm from the triton wheel), parse the SASS,
find its loops and the Python `for` each loop comes from, and read the cubin's resource usage.

Used by superpos.bench.costmodel; nothing here knows about the kernels of this project.

Facts relied on (checked on Triton 3.6 cubins for sm_90, see tests/test_costmodel.py):
- Triton keeps `.loc` line info by default, so `nvdisasm -g` prints `//## File "...", line N` before
  the instructions of each source line. The backward branch that closes an `scf.for` carries the line
  of its Python `for` statement, which names the loop.
- Every loop of these kernels is a `for ... in range(...)`: `tl.static_range` loops and Philox's 10
  rounds are unrolled at compile time and are straight-line code in the SASS.
- A Python `if` on a runtime value is a forward conditional branch carrying the line of the `if`
  statement: taken when the test is false, it jumps over the body (which falls through); where the
  `if` has an `else`, the body ends with an unconditional forward branch (same line) over the else
  side, which starts at the first branch's target. This is how Triton lays out `scf.if` (then block
  first), and ptxas keeps that order.
- Subroutines (ptxas's slow paths of IEEE sqrt and division, `$__internal_...` labels) follow the entry
  function's EXIT; they are split off and not counted (their fast paths are inline and counted), nor are
  the calls into them, which the fast path branches over (fast_path).
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
    """The kernel's own instructions as they run: subroutines split off, the calls into them dropped
    with their set-up (fast_path), and the padding after the final `BRA self` (which follows the last
    EXIT) dropped."""
    if name is None:
        entries = [f for f in funcs if not f.startswith("$")]
        if len(entries) != 1:
            raise ValueError(f"expected one entry function, found {entries}")
        name = entries[0]
    instrs = funcs[name]
    for i, ins in enumerate(instrs):
        if ins.base == "BRA" and ins.target == ins.addr:
            instrs = instrs[:i]
            break
    return fast_path(instrs)


def _is_move(ins) -> bool:
    """MOV, or ptxas's moves on the IMAD pipe (IMAD.MOV, and IMAD Rd, RZ, RZ, X: 0 * 0 + X)."""
    ops = [o.strip() for o in ins.operands.split(",")]
    return ins.base == "MOV" or ins.opcode.startswith("IMAD.MOV") or (ins.base == "IMAD" and ops[1:3] == ["RZ", "RZ"])


def fast_path(instrs: list) -> list:
    """instrs without ptxas's calls into its slow-path subroutines (IEEE sqrt and division of special or
    tiny operands): the inline fast path tests its operands and branches over the call, so what lies
    between that branch and its target - the argument moves, the CALL, the result's move back and the jump
    to the join point, in whichever order ptxas lays them out - runs only when the slow path does.
    A call not guarded so (no predicated forward branch over it, or other work beside it) is kept."""
    drop = set()
    for g, guard in enumerate(instrs):
        if guard.base != "BRA" or not guard.predicate or guard.target is None or guard.target <= guard.addr:
            continue
        block, calls = [], 0
        for k in range(g + 1, len(instrs)):
            ins = instrs[k]
            if ins.addr >= guard.target:
                break
            if ins.base == "CALL" and "$__internal" in ins.operands:
                calls += 1
            elif ins.predicate or not (_is_move(ins) or (ins.base == "BRA" and (ins.target or 0) > ins.addr)):
                calls = 0  # other work: not a slow-path call's set-up
                break
            block.append(k)
        if calls:
            drop.update(block)
    return [ins for k, ins in enumerate(instrs) if k not in drop]


@dataclass(eq=False)  # identity: loops key the regions
class Loop:
    start: int  # address of the first instruction of the body (the backward branch's target)
    end: int  # address of the backward branch
    file: str | None
    line: int | None
    children: list = field(default_factory=list)
    source: "ForLoop | None" = None
    unroll: int = 1  # iterations of the Python loop per trip of this SASS loop (see annotate)
    sides: tuple = ()  # the weighted `if` sides (Side) that hold the loop (see annotate)

    def contains(self, addr: int) -> bool:
        return self.start <= addr <= self.end

    @property
    def version_key(self) -> tuple:
        """Sibling SASS loops with the same key are ptxas's versions of one Python `for` (unrolled loop
        and remainder); copies of a `for` on the two sides of an `if` are not versions of each other."""
        return self.source, self.sides


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


@dataclass(frozen=True)
class IfStatement:
    """A Python `if` statement: where it is, the function it is written in, its test, whether it has an
    `else` (an `elif` is an `else` holding another `if`)."""
    file: str
    line: int
    function: str
    test: str
    has_else: bool


@functools.lru_cache(maxsize=None)
def _statements(path: str) -> tuple:
    """Every `for` statement of a Python file, as (ForLoop, last line of its body), and every `if`
    statement as {line: IfStatement}."""
    with open(path) as f:
        tree = ast.parse(f.read())
    fors, ifs = [], {}

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.For):
                var = ast.unparse(child.target)
                fors.append((ForLoop(path, child.lineno, name, var, f"for {var} in {ast.unparse(child.iter)}",
                                     child.end_lineno), child.end_lineno))
            elif isinstance(child, ast.If):
                ifs[child.lineno] = IfStatement(path, child.lineno, name, ast.unparse(child.test), bool(child.orelse))
            visit(child, name)
    visit(tree, None)
    return fors, ifs


def _for_statements(path: str) -> list:
    return _statements(path)[0]


def if_statement(file: str | None, line: int | None) -> "IfStatement | None":
    """The Python `if` statement at file:line, if there is one."""
    if file is None or line is None or not os.path.exists(file):
        return None
    return _statements(file)[1].get(line)


@dataclass(eq=False)  # identity: sides key the regions
class Side:
    """One side of a Python `if` in the SASS: the instructions in [start, end) run only when the test
    holds (body=True) or only when it fails (body=False: the `else`). Every inlined copy of an `if` has
    sides of its own."""
    start: int
    end: int  # exclusive: the branch target
    source: IfStatement
    body: bool

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end


def if_sides(instrs: list, wanted) -> list:
    """The sides of the Python `if`s for which wanted(IfStatement) is true, from their forward branches
    (layout: see the module docstring). Others are left as straight-line code (both sides counted)."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    sides = []
    for i, ins in enumerate(instrs):
        if ins.base != "BRA" or not ins.predicate or ins.target is None or ins.target <= ins.addr:
            continue
        stmt = if_statement(ins.file, ins.line)
        if stmt is None or not wanted(stmt):
            continue
        if ins.target not in index:
            raise ValueError(f"the `if` at {stmt.file}:{stmt.line} branches out of the kernel ({ins.target:#x})")
        sides.append(Side(instrs[i + 1].addr, ins.target, stmt, True))
        last = instrs[index[ins.target] - 1]  # the body's last instruction: a jump over the else side?
        if (stmt.has_else and last.base == "BRA" and not last.predicate and last.target is not None
                and last.target > ins.target and (last.file, last.line) == (ins.file, ins.line)):
            sides.append(Side(ins.target, last.target, stmt, False))
    for a in sides:
        for b in sides:
            if a.start < b.start < a.end < b.end:
                raise ValueError(f"`if` sides at {a.start:#x} and {b.start:#x} overlap without nesting")
    return sides


def sides_of(addr: int, sides) -> tuple:
    """The sides that hold an address, outermost first."""
    return tuple(sorted((s for s in sides if s.contains(addr)), key=lambda s: (s.start, -s.end)))


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


def annotate(loops: list, instrs: list, sides=()) -> list:
    """Attach each loop's Python `for` and the `if` sides that hold it (in place, nested loops first);
    returns the loops.

    ptxas unrolls a small loop with a runtime trip count into an unrolled loop and a remainder loop,
    siblings from the same `for` (and sides): where siblings share them, each gets its unroll factor
    (the remainder's is 1) so that the Python loop's iterations can be shared out among them."""
    def visit(loop):
        taken = [t for child in loop.children for t in visit(child)]
        own = own_instructions(loop, instrs)
        loop.source = source_loop(loop.file, loop.line, frozenset((i.file, i.line) for i in own), tuple(taken))
        loop.sides = sides_of(loop.start, sides)
        return taken + [loop.source]

    def unrolls(siblings):
        for loop in siblings:
            if sum(s.version_key == loop.version_key for s in siblings) > 1:
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
        for key in dict.fromkeys(lp.version_key for lp in siblings):
            group = [lp for lp in siblings if lp.version_key == key]
            if max(lp.unroll for lp in group) == 1:
                continue
            src, sides = key
            hi = max(lp.end for lp in group)
            body = {(i.file, i.line, i.opcode) for i in instrs if any(lp.contains(i.addr) for lp in group)}
            skip.update(i.addr for i in region
                        if i.addr < hi and (i.file, i.line, i.opcode) in body and (i.file, i.line) != (src.file, src.line)
                        and all(s.contains(i.addr) for s in sides))
        for lp in siblings:
            visit(lp.children, own_instructions(lp, instrs))
    visit(loops, [i for i in instrs if not any(lp.contains(i.addr) for lp in loops)])
    return skip


def regions(instrs: list, loops: list, sides=()) -> list:
    """Split the instructions into (path, [Instr]) regions: the path is the tuple of enclosing loops,
    outermost first (empty for code outside every loop), then the `if` sides that hold the code,
    outermost first; each instruction is in exactly one."""
    out: dict = {}

    def path_of(addr, candidates, path):
        for loop in candidates:
            if loop.contains(addr):
                return path_of(addr, loop.children, path + (loop,))
        return path
    for ins in instrs:
        out.setdefault(path_of(ins.addr, loops, ()) + sides_of(ins.addr, sides), []).append(ins)
    return list(out.items())
