"""Shared-memory bank conflicts of a compiled kernel, read from its PTX: for every `ld.shared`,
`st.shared`, `ldmatrix` and `stmatrix`, each thread's address is computed by evaluating the integer
arithmetic that produces it (from %tid.x, constants and the shared base), and the wavefronts the warp's
access needs are counted: 32 banks of 4 bytes, one 4-byte word per bank per wavefront, lanes reading the
same word share it (broadcast). Used by superpos.bench.costmodel to weigh each source line's shared
wavefronts, which it otherwise counts conflict-free.

Why the PTX: Triton's shared layouts for FMA `tl.dot` operands are unswizzled, and whether a layout
conflicts is decided by how the lanes' addresses fall on the banks, which the PTX states as plain integer
arithmetic of the thread index (the SASS computes the same addresses, scheduled differently).

Assumptions (each an approximation of the hardware, stated where it is used):
- An address register's value is that of its first definition in program order: a loop-carried
  register is defined before its loop and redefined at the loop's end, so this is its first trip's
  value. Loop-carried offsets are the same for every lane (a chunk's start), and a common offset does
  not change how many distinct words fall on one bank, so the first trip stands for every trip.
- Values that do not come from the thread index (kernel parameters, program ids) are taken as 0: they
  are the same for every lane of a warp. An address that depends on loaded data is "unknown" and counted
  conflict-free.
- Predicates are ignored (every lane counted), as the cost model counts predicated-off instructions.
- Wavefronts of one warp instruction = the most distinct 4-byte words any one bank must deliver, at least
  one. A conflict-free 16-byte-per-lane access of 32 lanes is 4, as costmodel.count_instructions counts it.
"""
from __future__ import annotations

import bisect
import re
from collections import defaultdict
from dataclasses import dataclass

_LOC = re.compile(r"^\s*\.loc\s+(\d+)\s+(\d+)\s+(\d+)")
_FILE = re.compile(r'^\s*\.file\s+(\d+)\s+"([^"]+)"')
_INSTR = re.compile(r"^\s*(@!?%\w+\s+)?([a-z][\w.]*)\s*(.*?);\s*$")
_INT = re.compile(r"^-?(0x[0-9a-fA-F]+|\d+)$")
_ADDRESS = re.compile(r"^\[?\s*(%?\w+)\s*(?:\+\s*(-?\d+))?\s*\]?$")
_NO_DEST = ("st.", "bar.", "bra", "ret", "stmatrix", "red.", "atom.", "fence", "membar", "cp.async", "@")
BANKS = 32


@dataclass(frozen=True)
class Access:
    """One shared-memory instruction of the PTX: its source line (innermost), width per lane, the
    wavefronts the cost model assumes without conflicts, and the wavefronts counted (None: unknown)."""
    file: str | None
    line: int | None
    opcode: str
    bytes_per_lane: int
    assumed: int
    wavefronts: float | None


def _split_operands(text: str) -> list:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "{["
        depth -= ch in "}]"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + ([cur.strip()] if cur.strip() else [])


def parse(ptx: str) -> tuple:
    """([(opcode, operands, (file index, line) or None, block)], {file index: path}) of the PTX's
    instructions; `block` counts labels, branches and barriers before the instruction (ptxas merges
    accesses only within one)."""
    files, instrs, loc, block = {}, [], None, 0
    for raw in ptx.splitlines():
        text = raw.split("//")[0]
        if m := _FILE.match(text):
            files[int(m.group(1))] = m.group(2)
            continue
        if m := _LOC.match(text):
            loc = (int(m.group(1)), int(m.group(2)))
            continue
        stripped = text.strip()
        if stripped.endswith(":") and not stripped.startswith("$L__tmp"):  # $L__tmp: line-info labels only
            block += 1
        if not stripped or stripped.startswith(".") or stripped.endswith(":") or stripped in "{}":
            continue
        if m := _INSTR.match(text):
            op = m.group(2)
            if op.startswith(("bra", "bar", "ret", "exit")):
                block += 1
            instrs.append((op, _split_operands(m.group(3)), loc, block))
    return instrs, files


def _bits(opcode: str) -> int:
    for part in opcode.split(".")[1:]:
        if re.fullmatch(r"[bsuf](8|16|32|64)", part):
            return int(part[1:])
    return 32


def _signed(opcode: str) -> bool:
    return any(re.fullmatch(r"s(8|16|32|64)", p) for p in opcode.split(".")[1:])


def _truncating_div(a: int, b: int) -> int:
    """PTX's integer division: rounds toward zero (0 where b is 0: undefined in PTX, never an address)."""
    if b == 0:
        return 0
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


class ThreadValues:
    """Integer values of PTX registers in each of `threads` threads (lists of Python ints), None where a
    value depends on memory or on an operation not modelled."""

    def __init__(self, instrs: list, threads: int):
        self.instrs, self.threads = instrs, threads
        self.defs: dict = {}
        for i, (op, ops, _, _) in enumerate(instrs):
            if not ops or op.startswith(_NO_DEST):
                continue
            dest = ops[0]
            regs = re.findall(r"%\w+|_", dest) if dest.startswith("{") else [dest.split("|")[0]]
            for j, reg in enumerate(regs):
                self.defs.setdefault(reg, (i, j, len(regs)))
        self.cache: dict = {}

    def _const(self, s: str):
        if _INT.match(s):
            return [int(s, 0)] * self.threads
        if s == "%tid.x":
            return list(range(self.threads))
        if s == "%laneid":
            return [t % 32 for t in range(self.threads)]
        if s == "%warpid":
            return [t // 32 for t in range(self.threads)]
        if s in ("%tid.y", "%tid.z", "global_smem") or s.startswith(("%ctaid", "%nctaid", "%ntid", "%clusterid",
                                                                        "%cluster_ctaid")):
            return [0] * self.threads  # the same in every lane of a warp (the shared base: 0)
        return None

    def value(self, s: str):
        s = s.strip()
        if (c := self._const(s)) is not None:
            return c
        if s in self.cache:
            return self.cache[s]
        self.cache[s] = None  # a register that feeds itself (loop phi) before its first value: unknown
        if s in self.defs:
            i, j, parts = self.defs[s]
            self.cache[s] = self._compute(i, j, parts)
        return self.cache[s]

    def _compute(self, i: int, j: int, parts: int):
        op, ops, _, _ = self.instrs[i]
        name, bits, signed = op.split(".")[0], _bits(op), _signed(op)
        mask = (1 << bits) - 1

        def sx(v, b=bits):
            v &= (1 << b) - 1
            return v - (1 << b) if v >> (b - 1) else v

        def arg(v):  # an operand as the instruction's type reads it
            return sx(v) if signed else v & mask

        if name == "ld":
            return [0] * self.threads if ".param" in op else None
        if name == "mov" and ops[1].startswith("{"):  # pack registers into a wider one
            halves = [self.value(r) for r in re.findall(r"%\w+|_", ops[1])]
            if any(h is None for h in halves):
                return None
            w = bits // len(halves)
            return [sum((h[t] & ((1 << w) - 1)) << (w * k) for k, h in enumerate(halves)) for t in range(self.threads)]
        if name == "mov" and parts > 1:  # unpack
            v = self.value(ops[1])
            w = bits // parts
            return None if v is None else [(x >> (w * j)) & ((1 << w) - 1) for x in v]
        src = [self.value(o) for o in ops[1:]]
        if any(s is None for s in src):
            return None
        cols = list(zip(*src))
        mods = op.split(".")
        if name == "mov":
            return [x[0] & mask for x in cols]
        if name == "cvt":
            dst_t, src_t = mods[-2], mods[-1]
            if not (re.fullmatch(r"[bsu]\d+", dst_t) and re.fullmatch(r"[bsu]\d+", src_t)):
                return None
            sb = int(src_t[1:])
            return [(sx(x[0], sb) if src_t[0] == "s" else x[0] & ((1 << sb) - 1)) & ((1 << int(dst_t[1:])) - 1)
                    for x in cols]
        wide = "wide" in mods
        out_mask = (1 << (2 * bits)) - 1 if wide else mask
        f = {
            "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "neg": lambda a: -a,
            "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b, "not": lambda a: ~a,
            "shl": lambda a, b: a << (b & 0xFF) if b < bits else 0,
            "shr": lambda a, b: arg(a) >> min(b & 0xFF, bits),
            "min": lambda a, b: min(arg(a), arg(b)), "max": lambda a, b: max(arg(a), arg(b)),
            "selp": lambda a, b, p: a if p else b,
            "div": lambda a, b: _truncating_div(arg(a), arg(b)),
            "rem": lambda a, b: arg(a) - _truncating_div(arg(a), arg(b)) * arg(b),
        }.get(name)
        if f is not None:
            return [f(*x) & out_mask for x in cols]
        if name == "mul" or name == "mad":
            prods = [arg(x[0]) * arg(x[1]) for x in cols]
            if "hi" in mods:
                prods = [p >> bits for p in prods]
            if name == "mad":
                prods = [p + x[2] for p, x in zip(prods, cols)]
            return [p & out_mask for p in prods]
        if name == "bfe":
            out = []
            for a, pos, ln in cols:
                field = (a >> (pos & 0xFF)) & ((1 << (ln & 0xFF)) - 1)
                if signed and ln and field >> (ln - 1):
                    field -= 1 << ln
                out.append(field & mask)
            return out
        if name == "bfi":
            out = []
            for a, b, pos, ln in cols:
                m = ((1 << ln) - 1) << pos
                out.append(((b & ~m) | ((a << pos) & m)) & mask)
            return out
        if name == "setp":
            cmp = {"lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
                   "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b}.get(mods[1])
            if cmp is None or len(src) != 2:
                return None
            return [int(cmp(arg(a), arg(b))) for a, b in cols]
        return None


def _access_shape(op: str, ops: list):
    """(address operand, bytes per lane, lanes, wavefronts the cost model assumes) or None."""
    if op.startswith(("ld.shared", "st.shared")):
        vec = next((int(p[1:]) for p in op.split(".") if p in ("v2", "v4", "v8")), 1)
        width = vec * _bits(op) // 8
        return ops[1] if op.startswith("ld") else ops[0], width, 32, max(1, -(-32 * width // 128))
    if op.startswith(("ldmatrix", "stmatrix")):
        n = 4 if ".x4" in op else 2 if ".x2" in op else 1
        return ops[1] if op.startswith("ldmatrix") else ops[0], 16, 8 * n, n
    return None


PHASES = True


def wavefronts(addresses: list, width: int) -> int:
    """Wavefronts of one warp access: the most distinct 4-byte words that fall on one bank."""
    step = max(1, 128 // width) if PHASES else len(addresses)
    total = 0
    for p in range(0, len(addresses), step):
        words = defaultdict(set)
        for a in addresses[p:p + step]:
            for w in range(a // 4, (a + width + 3) // 4):
                words[w % BANKS].add(w)
        total += max((len(s) for s in words.values()), default=1)
    return total


def _pieces(ranges: list, aligned) -> list:
    """(offset, width) of the vector accesses that cover byte ranges [start, end) of one base address:
    16-, 8- or 4-byte pieces, each aligned to its width (aligned(offset, width): in every thread)."""
    covered = sorted({b for start, end in ranges for b in range(start, end)})
    out, i = [], 0
    while i < len(covered):
        start = covered[i]
        for width in (16, 8, 4):
            if aligned(start, width) and all(start + k in covered for k in range(width)):
                break
        out.append((start, width))
        i = bisect.bisect_left(covered, start + width, i)
    return out


def shared_accesses(ptx: str, num_warps: int) -> list:
    """Every shared-memory access of the PTX as ptxas issues it, as an Access (wavefronts: the mean over
    the warps). Plain loads and stores of one source line in one block that read the same base register
    at different immediate offsets are merged as ptxas merges them: the bytes they cover, cut into
    16-, 8- or 4-byte pieces aligned in every thread (the tiled kernel's FMA-dot operand loads: 46
    ld.shared.b32, 1 .v2 and 4 .v4 of one line become 16 LDS.128 in its SASS)."""
    instrs, files = parse(ptx)
    values = ThreadValues(instrs, 32 * num_warps)
    groups: dict = {}
    out = []
    for op, ops, loc, block in instrs:
        shape = _access_shape(op, ops)
        if shape is None:
            continue
        operand, width, lanes, assumed = shape
        file, line = (files.get(loc[0]), loc[1]) if loc else (None, None)
        m = _ADDRESS.match(operand.strip())
        try:
            base = values.value(m.group(1)) if m else None
        except RecursionError:  # a definition chain deeper than Python's stack: unknown, counted as assumed
            base = None
        if base is None:
            out.append(Access(file, line, op, width, assumed, None))
        elif lanes < 32:  # ldmatrix / stmatrix: as they are
            wf = sum(wavefronts([b + int(m.group(2) or 0) for b in base[w * 32: w * 32 + lanes]], width)
                     for w in range(num_warps)) / num_warps
            out.append(Access(file, line, op, width, assumed, wf))
        else:
            key = (file, line, op.split(".")[0], block, m.group(1))
            groups.setdefault(key, (base, []))[1].append((int(m.group(2) or 0), int(m.group(2) or 0) + width))
    for (file, line, kind, _, _), (base, ranges) in groups.items():
        def aligned(offset, width, base=base):
            return all((b + offset) % width == 0 for b in base)
        for offset, width in _pieces(ranges, aligned):
            wf = sum(wavefronts([b + offset for b in base[w * 32: (w + 1) * 32]], width)
                     for w in range(num_warps)) / num_warps
            out.append(Access(file, line, f"{kind}.shared.{8 * width}", width, -(-32 * width // 128), wf))
    return out


def line_factors(ptx: str, num_warps: int) -> dict:
    """{(file, line): counted / assumed wavefronts} over the shared accesses of each source line (unknown
    addresses count as assumed): the factor the cost model applies to that line's SASS shared wavefronts."""
    counted, assumed = defaultdict(float), defaultdict(float)
    for a in shared_accesses(ptx, num_warps):
        counted[a.file, a.line] += a.assumed if a.wavefronts is None else a.wavefronts
        assumed[a.file, a.line] += a.assumed
    return {key: counted[key] / assumed[key] for key in counted}
