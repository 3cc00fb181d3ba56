"""Work Triton's interpreter (3.6 to 3.9) repeats on every call although the result cannot change, which
together took about 40% of the kernel tests' time. install() makes it do each once; what a kernel
computes does not change (tests/test_interpreter_shortcuts.py). interpreter_args.interpret_as_a_gpu_launch()
installs it for the triton backend on the CPU, the test suite and bench/accuracy_trace.py.

- At every call of a @triton.jit helper it re-patches all of triton.language (every builtin of tl,
  tl.tensor and tl.math, found by inspect.getmembers), although the launch already patched it: a tiled
  tf32x3 test made 15,534 helper calls, 27 s of its 96 s. patch_language_once_per_launch() skips the
  re-patch when the modules the helper sees (triton.language, triton.language.core) were patched by the
  running launch; a launch, or a helper seeing a module the launch did not patch, goes through Triton.
- _get_np_dtype (tl dtype -> numpy dtype, called for every operation's result) builds its 17-entry
  table at every call, ~80 us: 13 s of a 137 s small-kernel test. np_dtypes_from_one_table() builds
  the table once and looks types up in it as Triton's function does.
- tl.tuple builds its type (a name string of every value's type) at construction; the tiny path's
  per-feature tuples made 1.1 million of them in one test. tuple_types_when_asked() builds it on first
  read (interpreter only).

Measured on a 2-core CPU, one test at a time, none / the first two / all three:
test_kernel_matches_reference[5-2-linear-cosine-0.0] 21.9 / 13.0 / 11.1 s,
test_hopper_tf32x3_wide_dw_products[40-300] 23.0 / 14.4 / 15.0 s."""
import inspect
import os

from .interpreter_args import replace_in_interpreter


def install() -> bool:
    """The shortcuts (idempotent); False where this Triton's interpreter lacks one of the functions, or
    where TRITON_INTERPRET is not 1 (then tuples keep Triton's own constructor: the compiler uses them)."""
    return patch_language_once_per_launch() & np_dtypes_from_one_table() & tuple_types_when_asked()


def patch_language_once_per_launch() -> bool:
    return replace_in_interpreter("_patch_lang", _patch_lang_once_per_launch, "superpos_shortcut")


def np_dtypes_from_one_table() -> bool:
    return replace_in_interpreter("_get_np_dtype", _np_dtype_from_one_table, "superpos_shortcut")


def _patch_lang_once_per_launch(original):
    from triton.runtime import interpreter
    import triton.language as tl

    patched = set()  # ids of the language modules the running launch patched; empty between launches
    seen = {}  # id of a helper's globals -> (those globals, kept so the id stays theirs; ids of its language modules)

    def languages(fn):
        g = fn.__globals__
        if id(g) not in seen:
            seen[id(g)] = (g, frozenset(id(v) for v in g.values() if inspect.ismodule(v) and v in (tl, tl.core)))
        return seen[id(g)][1]

    def patch_lang(fn):
        langs = languages(fn)
        if patched and langs and langs <= patched:
            return interpreter._LangPatchScope()  # a helper call inside the launch: nothing to change
        scope = original(fn)
        if not patched:  # a launch: it restores its scope when its grid is done
            restore = scope.restore

            def restore_and_forget():
                restore()
                patched.clear()
            scope.restore = restore_and_forget
        patched.update(langs)
        return scope
    return patch_lang


def _np_dtype_from_one_table(original):
    import triton.language as tl

    # the scalar types Triton's function knows, each mapped as it maps them
    table = {}
    for name in ("int1", "float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                 "int64", "uint64", "bfloat16", "float8e5", "float8e5b16", "float8e4nv", "float8e4b8", "float8e4b15"):
        if hasattr(tl, name):
            table[getattr(tl, name)] = original(getattr(tl, name))

    def get_np_dtype(tt_dtype):
        if isinstance(tt_dtype, tl.block_type):
            tt_dtype = tt_dtype.element_ty
        if isinstance(tt_dtype, tl.pointer_type):
            return original(tt_dtype)
        return table[tt_dtype] if tt_dtype in table else original(tt_dtype)  # anything else: Triton's answer
    return get_np_dtype


def tuple_types_when_asked() -> bool:
    """tl.tuple's type computed when first read, not at every construction (where Triton builds it, name
    string included, from every value's type: a fifth of a small-kernel test, 1.1 million tuples); the
    same type, from the same values. Only under the interpreter."""
    import triton.language.core as core
    cls = core.tuple
    if getattr(cls, "superpos_shortcut", False):
        return True
    if os.environ.get("TRITON_INTERPRET") != "1" or not hasattr(core, "_type_for_tuple_values"):
        return False

    def __init__(self, args, type=None):
        self.values = [i for i in args]
        if isinstance(type, core.tuple_type):
            self._type = type
        elif type is not None:  # a list or tuple of types, as Triton's constructor takes them
            self._type = core.tuple_type(type)
        else:
            self._type = None  # from self.values, when read

    def get_type(self):
        t = self.__dict__.get("_type")  # not getattr: tl.tuple's __getattr__ reads self.type
        if t is None:
            t = self._type = core._type_for_tuple_values(self.values)
        return t

    def set_type(self, value):
        self._type = value

    cls.superpos_original_init = cls.__init__  # for the test that compares the two
    cls.__init__ = __init__
    cls.type = property(get_type, set_type)
    cls.superpos_shortcut = True
    return True
