"""Sweep specs: a TOML file -> a grid of models, grouped by shape and training config, cut into chunks.

The spec format (sections, axes, range forms, [quick], grid order, model ids and the seed rule) is
documented in docs/spec-format.md.

Nothing here is per model until asked: the grid of a million models is a few small arrays, and
`Sweep.population(start, stop)` / `Sweep.rows(start, stop)` build one chunk at a time.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .spec import FLOAT32_MAX, MAX_SEED, DataSpec, ModelSpec, Population, check_model_field

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

FORMAT = 1
MODEL_KEYS = tuple(f.name for f in fields(ModelSpec))
TRAIN_KEYS = TrainConfig.field_names()
DATASPEC_KEYS = tuple(f.name for f in fields(DataSpec))  # [sweep] only: one DataSpec per group
GROUP_KEYS = MODEL_KEYS + TRAIN_KEYS + DATASPEC_KEYS
DEFAULTS = {f.name: f.default for f in fields(ModelSpec) + fields(TrainConfig) + fields(DataSpec)
            if f.default is not MISSING}
# keys added after FORMAT 1 was fixed: left out of the resolved spec at their defaults, so that the run
# directories written before them still hold "the same spec" and resume
LATER_KEYS = ("hidden_activation", "tied", "target", "value_range", "snapshots", "snapshot_steps") + DATASPEC_KEYS
IMPORTANCE_KEYS = ("importance", "importance_decay", "relative_importance")
DATA_KEYS = ("feature_probability",) + IMPORTANCE_KEYS
SWEEP_KEYS = GROUP_KEYS + DATA_KEYS + ("seeds", "base_seed")
TOP_KEYS = ("name", "description", "model", "train", "sweep", "quick")
RANGE_FORMS = ("linspace", "logspace", "geomspace", "range")
MAX_MODELS = 1 << 32  # models in one sweep (a run directory); checked before anything is built


def _kind(cls, name) -> str:
    """'int' | 'float' | 'str' | 'bool' | 'pair': the type of a ModelSpec / TrainConfig field, from its annotation."""
    ann = {f.name: str(f.type) for f in fields(cls)}[name]
    return {"int": "int", "float": "float", "str": "str", "bool": "bool", "tuple": "pair"}[ann]


KINDS = {**{k: _kind(ModelSpec, k) for k in MODEL_KEYS}, **{k: _kind(TrainConfig, k) for k in TRAIN_KEYS},
         "snapshot_steps": "int_list", "correlated_sets": "sets", "anticorrelated_sets": "sets",
         "dataset_size": "int"}


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _type_name(x) -> str:
    return {dict: "table", list: "list", str: "string", bool: "boolean"}.get(type(x), type(x).__name__)


# --------------------------------------------------------------------------------------------------
# value parsing
# --------------------------------------------------------------------------------------------------
def _scalar(path: str, kind: str, value):
    """One value of a model/train key, type-checked (range checks are left to ModelSpec/TrainConfig)."""
    if kind == "int":  # 5.0 is refused, as ModelSpec / TrainConfig refuse it
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise ValueError(f"{path}: must be an integer, got {_type_name(value)} {value!r}")
    if kind == "float":
        if _is_number(value):
            return float(value)
        raise ValueError(f"{path}: must be a number, got {_type_name(value)} {value!r}")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ValueError(f"{path}: must be a string, got {_type_name(value)} {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{path}: must be true or false, got {_type_name(value)} {value!r}")
    if kind == "int_list":
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [int(v) for v in value]
        raise ValueError(f"{path}: must be a list of integers, got {_type_name(value)} {value!r}")
    if kind == "sets":
        if isinstance(value, list) and all(isinstance(s, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                                                       for i in s) for s in value):
            return [list(s) for s in value]
        raise ValueError(f"{path}: must be a list of feature-index lists like [[0, 1], [2, 3]], got {value!r}")
    if isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value):
        return [float(v) for v in value]
    raise ValueError(f"{path}: must be a pair of numbers like [0.9, 0.999], got {value!r}")


def _range_form(path: str, form: dict, integer: bool) -> list:
    """{linspace|logspace|geomspace|range = [...]} -> list of numbers."""
    forms = [k for k in form if k in RANGE_FORMS]
    extra = [k for k in form if k not in RANGE_FORMS + ("base",)]
    if extra:
        raise ValueError(f"{path}.{extra[0]}: unknown key (a range is one of {', '.join(RANGE_FORMS)}, "
                         f"with 'base' for logspace)")
    if len(forms) != 1:
        raise ValueError(f"{path}: a range table needs exactly one of {', '.join(RANGE_FORMS)}, got {sorted(form)}")
    f = forms[0]
    args = form[f]
    if "base" in form and f != "logspace":
        raise ValueError(f"{path}.base: only allowed with logspace")
    if f == "range":
        if not integer:
            raise ValueError(f"{path}.range: only for integer keys (use linspace/logspace/geomspace)")
        if not (isinstance(args, list) and len(args) in (2, 3) and all(isinstance(a, int) and not isinstance(a, bool) for a in args)):
            raise ValueError(f"{path}.range: must be [start, stop] or [start, stop, step] integers, got {args!r}")
        if len(args) == 3 and args[2] == 0:
            raise ValueError(f"{path}.range: step must not be 0")
        if len(range(*args)) > MAX_MODELS:
            raise ValueError(f"{path}.range: gives {len(range(*args)):.3g} values, more than a run may hold (2**32)")
        values = list(range(*args))
    else:
        if not (isinstance(args, list) and len(args) == 3 and all(_is_number(a) for a in args[:2])
                and isinstance(args[2], int) and not isinstance(args[2], bool)):
            raise ValueError(f"{path}.{f}: must be [start, stop, num] with an integer num, got {args!r}")
        a, b, num = args
        if not 1 <= num <= MAX_MODELS:
            raise ValueError(f"{path}.{f}: num must be in [1, 2**32], got {num}")
        if f == "linspace":
            arr = np.linspace(a, b, num)
        elif f == "logspace":
            base = form.get("base", 10.0)
            if not _is_number(base) or not base > 0:
                raise ValueError(f"{path}.base: must be a positive number, got {base!r}")
            arr = np.logspace(a, b, num, base=float(base))
        else:
            if not (a > 0 and b > 0):
                raise ValueError(f"{path}.geomspace: start and stop must be > 0, got {args!r}")
            arr = np.geomspace(a, b, num)
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}.{f}: gives non-finite values")
        values = arr.tolist()
        if integer:
            rounded = [round(v) for v in values]
            if any(abs(v - r) > 1e-9 * max(1.0, abs(r)) for v, r in zip(values, rounded)):
                raise ValueError(f"{path}.{f}: gives non-integer values for an integer key: {values}")
            values = rounded
    if not values:
        raise ValueError(f"{path}.{f}: gives no values")
    return values


def _axis(path: str, value, kind: str) -> list:
    """An axis of a model/train key in [sweep]: scalar, list or range table -> list of checked values."""
    if isinstance(value, dict):
        if kind not in ("int", "float"):
            raise ValueError(f"{path}: range tables are for numeric keys; give a list")
        values = _range_form(path, value, kind == "int")
    elif isinstance(value, list) and kind in ("int_list", "sets") and not _is_axis_of_lists(value, kind):
        values = [value]  # one list of steps / one list of sets: a single-valued axis
    elif isinstance(value, list):
        if kind == "pair" and len(value) == 2 and all(_is_number(v) for v in value):
            value = [value]  # one pair: a single-valued axis
        if not value:
            raise ValueError(f"{path}: must not be an empty list")
        values = value
    else:
        values = [value]
    return [_scalar(f"{path}[{i}]" if len(values) > 1 else path, kind, v) for i, v in enumerate(values)]


def _is_axis_of_lists(value: list, kind: str) -> bool:
    """Is a list-valued key's list an axis of values? snapshot_steps: a list of lists; sets: a list whose
    items hold lists (``[[0, 1]]`` is one value, one set; ``[[[0, 1]], []]`` an axis of two values)."""
    if kind == "int_list":
        return bool(value) and all(isinstance(v, list) for v in value)
    return any(isinstance(v, list) and any(isinstance(s, list) for s in v) for v in value)


def _number_list(path: str, value) -> list:
    if isinstance(value, dict):
        return [float(v) for v in _range_form(path, value, False)]
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{path}: must not be an empty list")
        out = []
        for i, v in enumerate(value):
            if not _is_number(v):
                raise ValueError(f"{path}[{i}]: must be a number, got {_type_name(v)} {v!r}")
            out.append(float(v))
        return out
    if _is_number(value):
        return [float(value)]
    raise ValueError(f"{path}: must be a number, a list of numbers or a range table, got {_type_name(value)} {value!r}")


def _check_finite(path, values, lo, lo_open, what):
    for i, v in enumerate(values):
        vs = v if isinstance(v, list) else [v]
        for x in vs:
            too_big = x > 1 if what == "probability" else x > FLOAT32_MAX  # importances are float32
            if not math.isfinite(x) or (x <= lo if lo_open else x < lo) or too_big:
                where = f"{path}[{i}]" if len(values) > 1 else path
                allowed = "in (0, 1]" if what == "probability" else (f"> {lo}" if lo_open else f">= {lo}") + \
                    f" and finite (at most {FLOAT32_MAX:.4g}, float32)"
                raise ValueError(f"{where}: must be {allowed}, got {x!r}")


def _feature_probability(path: str, value) -> list:
    """Axis of densities: each a float (same for every feature) or a per-feature list."""
    if isinstance(value, list) and any(isinstance(v, list) for v in value):
        out = []
        for i, v in enumerate(value):
            if isinstance(v, list):
                if not v:
                    raise ValueError(f"{path}[{i}]: must not be an empty list")
                out.append(_number_list(f"{path}[{i}]", v))
            elif _is_number(v):
                out.append(float(v))
            else:
                raise ValueError(f"{path}[{i}]: must be a number or a per-feature list, got {_type_name(v)} {v!r}")
        values = out
    else:
        values = _number_list(path, value)
    _check_finite(path, values, 0.0, True, "probability")
    return values


ONE_FEATURE_KEYS = ("value", "feature", "factor")


def _one_feature_scaled(path: str, form: dict, n_values: list) -> list:
    """{value = p, feature = i, factor = AXIS} -> axis of per-feature vectors: p everywhere, p * f at i.

    The non-uniform experiments vary one feature's density against the others' (one vector per factor).
    """
    extra = [k for k in form if k not in ONE_FEATURE_KEYS]
    if extra or len(form) != len(ONE_FEATURE_KEYS):
        bad = extra[0] if extra else next(k for k in ONE_FEATURE_KEYS if k not in form)
        raise ValueError(f"{path}.{bad}: {'unknown' if extra else 'missing'} key (a one-feature scaling "
                         f"needs exactly {', '.join(ONE_FEATURE_KEYS)})")
    if len(set(n_values)) != 1:
        raise ValueError(f"{path}.factor: needs a single n_features, got {sorted(set(n_values))}")
    n = n_values[0]
    feature = form["feature"]
    if not (isinstance(feature, int) and not isinstance(feature, bool) and 0 <= feature < n):
        raise ValueError(f"{path}.feature: must be an integer in [0, {n}) (n_features = {n}), got {feature!r}")
    value = form["value"]
    if not _is_number(value):
        raise ValueError(f"{path}.value: must be one number, got {_type_name(value)} {value!r}")
    value = float(value)
    factors = _number_list(f"{path}.factor", form["factor"])
    _check_finite(f"{path}.value", [value], 0.0, True, "probability")
    _check_finite(f"{path}.factor", factors, 0.0, True, "factor")
    out = []
    for i, f in enumerate(factors):
        vector = [value] * n
        vector[feature] = value * f
        if not 0 < vector[feature] <= 1:
            raise ValueError(f"{path}.factor" + (f"[{i}]" if len(factors) > 1 else "")
                             + f": value * factor = {vector[feature]!r} is not a probability in (0, 1]")
        out.append(vector)
    return out


def _importance(path: str, value) -> list:
    """`importance`: scalar -> [c]; flat list -> [one vector]; list of lists -> axis of vectors."""
    if isinstance(value, dict):
        raise ValueError(f"{path}: a per-feature list or a number (for decays use importance_decay)")
    if _is_number(value):
        values = [float(value)]
    elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        values = [_number_list(f"{path}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, list):
        values = [_number_list(path, value)]
    else:
        raise ValueError(f"{path}: must be a number, a per-feature list or a list of such lists, got {_type_name(value)} {value!r}")
    _check_finite(path, values, 0.0, False, "importance")
    return values


def _seed_int(path, v):
    if not (isinstance(v, int) and not isinstance(v, bool)) or not 0 <= v <= MAX_SEED:
        raise ValueError(f"{path}: must be an integer in [0, 2**63), got {v!r}")
    return int(v)


# --------------------------------------------------------------------------------------------------
# spec -> resolved spec (a canonical, JSON-able dict) -> Sweep
# --------------------------------------------------------------------------------------------------
def _merge_quick(raw: dict) -> dict:
    quick = raw.get("quick")
    if quick is None:
        raise ValueError("quick: --quick needs a [quick] table in the spec")
    if not isinstance(quick, dict):
        raise ValueError(f"quick: must be a table, got {_type_name(quick)}")
    out = copy.deepcopy({k: v for k, v in raw.items() if k != "quick"})
    for section, table in quick.items():
        if section not in ("model", "train", "sweep"):
            raise ValueError(f"quick.{section}: unknown key (allowed: model, train, sweep)")
        if not isinstance(table, dict):
            raise ValueError(f"quick.{section}: must be a table, got {_type_name(table)}")
        for key, value in table.items():
            # a key set in [quick.X] replaces the same key wherever the base spec set it
            for other in ("model", "train", "sweep"):
                if other != section and isinstance(out.get(other), dict):
                    out[other].pop(key, None)
            if section == "sweep" and key in IMPORTANCE_KEYS and isinstance(out.get("sweep"), dict):
                for k in IMPORTANCE_KEYS:
                    out["sweep"].pop(k, None)
            out.setdefault(section, {})
            if not isinstance(out[section], dict):
                raise ValueError(f"{section}: must be a table, got {_type_name(out[section])}")
            out[section][key] = value
    return out


def _check_list_lengths(key: str, values: list, n_values: list) -> None:
    """Each per-feature list among an axis's values has one entry per feature, for every n_features."""
    for i, v in enumerate(values):
        if isinstance(v, list):
            for n in n_values:
                if len(v) != n:
                    where = key + (f"[{i}]" if len(values) > 1 else "")
                    raise ValueError(f"{where}: a per-feature list needs n_features = {n} entries, got {len(v)}")


def resolve(raw: dict, quick: bool = False) -> dict:
    """Validate a parsed spec (a dict as from TOML) and return its resolved, canonical form.

    Every error is a ValueError whose message starts with the key it is about.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"spec: must be a table, got {_type_name(raw)}")
    for key in raw:
        if key not in TOP_KEYS:
            raise ValueError(f"{key}: unknown key (allowed at top level: {', '.join(TOP_KEYS)})")
    if "quick" in raw:
        # the base spec and its quick form must both be valid, whichever is run; an error that only
        # the quick form has is reported under "quick."
        base = resolve({k: v for k, v in raw.items() if k != "quick"})
        try:
            quick_resolved = resolve(_merge_quick(raw))
        except ValueError as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith("quick") else f"quick.{msg}") from None
        if quick:
            quick_resolved["quick"] = True
            return quick_resolved
        return base
    if quick:
        _merge_quick(raw)  # raises: no [quick] table

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name: required, a non-empty string, got {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"description: must be a string, got {_type_name(description)}")
    sections = {}
    for section in ("model", "train", "sweep"):
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"{section}: must be a table, got {_type_name(table)}")
        sections[section] = table
    for key in sections["model"]:
        if key not in MODEL_KEYS:
            raise ValueError(f"model.{key}: unknown key (allowed: {', '.join(MODEL_KEYS)})")
    for key in sections["train"]:
        if key not in TRAIN_KEYS:
            raise ValueError(f"train.{key}: unknown key (allowed: {', '.join(TRAIN_KEYS)})")
    for key in sections["sweep"]:
        if key not in SWEEP_KEYS:
            raise ValueError(f"sweep.{key}: unknown key (allowed: {', '.join(SWEEP_KEYS)})")
        for section in ("model", "train"):
            if key in sections[section]:
                raise ValueError(f"sweep.{key}: also set in [{section}]; a key is either fixed or swept")

    # shape and training axes: one list of values per key, validated one value at a time
    defaults = {f.name: f.default for f in fields(ModelSpec) + fields(TrainConfig) if f.default is not MISSING}
    axes, fixed = {}, {"model": {}, "train": {}}
    for key in GROUP_KEYS:
        section = "model" if key in MODEL_KEYS else "train"
        if key in sections["sweep"]:
            axes[key] = _axis(f"sweep.{key}", sections["sweep"][key], KINDS[key])
        elif key in DATASPEC_KEYS or (key in LATER_KEYS and key not in sections[section]):
            continue  # at its default: left out of the resolved spec
        elif key in sections[section]:
            fixed[section][key] = _scalar(f"{section}.{key}", KINDS[key], sections[section][key])
            if key in LATER_KEYS and fixed[section][key] == _default_value(key):
                del fixed[section][key]  # written out at its default: the same spec as leaving it out
        elif key in defaults:
            d = defaults[key]
            fixed[section][key] = list(d) if isinstance(d, tuple) else d
        else:
            raise ValueError(f"model.{key}: required (an integer, or an axis in [sweep])")
    for key, v in {**fixed["model"], **fixed["train"]}.items():
        _check_value(f"{'model' if key in MODEL_KEYS else 'train'}.{key}", key, v)
    for key, values in axes.items():  # every value is checked on its own, then the few combinations below
        for i, v in enumerate(values):
            _check_value(f"sweep.{key}" + (f"[{i}]" if len(values) > 1 else ""), key, v)
    base = {**fixed["model"], **fixed["train"]}

    sw = sections["sweep"]
    n_values = axes.get("n_features", [base.get("n_features")])
    fp_raw = sw.get("feature_probability", 1.0)
    if isinstance(fp_raw, dict) and "factor" in fp_raw:
        fp = _one_feature_scaled("sweep.feature_probability", fp_raw, n_values)
    else:
        fp = _feature_probability("sweep.feature_probability", fp_raw)
    _check_list_lengths("sweep.feature_probability", fp, n_values)
    _check_combinations(axes, base, n_values, fp)
    given = [k for k in IMPORTANCE_KEYS if k in sw]
    if len(given) > 1:
        raise ValueError(f"sweep.{given[1]}: only one of {', '.join(IMPORTANCE_KEYS)} may be given, got {', '.join(given)}")
    imp_key = given[0] if given else "importance"
    if imp_key == "importance":
        imp = _importance("sweep.importance", sw.get("importance", 1.0))
        _check_list_lengths("sweep.importance", imp, n_values)
    else:
        imp = _number_list(f"sweep.{imp_key}", sw[imp_key])
        lo_open = imp_key == "importance_decay"
        _check_finite(f"sweep.{imp_key}", imp, 0.0, lo_open, "importance")
        if imp_key == "importance_decay":
            for i, r in enumerate(imp):
                with np.errstate(over="ignore"):
                    top = float(np.float32(np.float64(r) ** (max(n_values) - 1)))
                if not math.isfinite(top):
                    raise ValueError(f"sweep.importance_decay" + (f"[{i}]" if len(imp) > 1 else "")
                                     + f": {r}**(n_features-1) overflows float32")

    seeds = sw.get("seeds", 1)
    seed_list = None
    if isinstance(seeds, list):
        if not seeds:
            raise ValueError("sweep.seeds: must not be an empty list")
        seed_list = [_seed_int(f"sweep.seeds[{i}]", s) for i, s in enumerate(seeds)]
        if len(set(seed_list)) != len(seed_list):
            raise ValueError("sweep.seeds: explicit seeds must be distinct")
        if "base_seed" in sw:
            raise ValueError("sweep.base_seed: not used with an explicit list of seeds")
        n_seeds = len(seed_list)
    elif isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"sweep.seeds: must be >= 1, got {seeds}")
        n_seeds = seeds
    else:
        raise ValueError(f"sweep.seeds: must be an integer count or a list of seeds, got {_type_name(seeds)} {seeds!r}")
    base_seed = _seed_int("sweep.base_seed", sw.get("base_seed", 0))

    resolved = {
        "format": FORMAT, "name": name, "description": description, "quick": bool(quick),
        "model": fixed["model"], "train": fixed["train"],
        "sweep": {**{k: axes[k] for k in GROUP_KEYS if k in axes},
                  "feature_probability": fp, imp_key: imp},
        "seeds": n_seeds, "seed_list": seed_list, "base_seed": base_seed,
    }
    n_models = math.prod(len(v) for v in resolved["sweep"].values()) * n_seeds
    if n_models > MAX_MODELS:
        raise ValueError(f"sweep: the grid has {n_models:.3g} models; a run holds at most 2**32 "
                         f"({math.prod(len(v) for v in resolved['sweep'].values())} points x {n_seeds} seeds)")
    if seed_list is None and base_seed + n_models - 1 > MAX_SEED:
        raise ValueError(f"sweep.base_seed: base_seed + model index must stay below 2**63 ({n_models} models)")
    return resolved


def _check_value(path: str, key: str, value):
    """Check `key` = `value` on its own as ModelSpec / TrainConfig / DataSpec do; a ValueError names `path`."""
    try:
        if key in MODEL_KEYS:
            check_model_field(key, value)
        elif key in DATASPEC_KEYS:
            DataSpec(**{key: value})
        elif key in ("snapshots", "snapshot_steps"):
            return  # checked against the steps in _check_combinations
        else:
            TrainConfig(**{key: tuple(value) if key == "betas" else value})
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _default_value(key: str):
    d = DEFAULTS[key]
    return list(d) if isinstance(d, tuple) else d


def _check_combinations(axes: dict, base: dict, n_values: list, fp: list) -> None:
    """The checks that tie keys together, over every combination of their values (few: these axes are short)."""
    import itertools

    def values(key):
        return axes[key] if key in axes else [base.get(key, DEFAULTS.get(key))]

    def path(key):
        section = "sweep" if key in axes else ("model" if key in MODEL_KEYS else "train")
        return f"{section}.{key}"

    def check(keys, fn):
        for combo in itertools.product(*(values(k) for k in keys)):
            try:
                fn(**dict(zip(keys, combo)))
            except ValueError as e:
                msg = str(e)
                named = next((k for k in keys if msg.startswith(k)), keys[0])
                raise ValueError(f"{path(named)}: {msg}") from None

    check(("target", "value_range"), lambda **kw: ModelSpec(1, 1, **kw))
    check(("steps", "snapshots", "snapshot_steps"), lambda **kw: TrainConfig(**kw))
    fp_arrays = [np.asarray(v, dtype=np.float64) for v in fp]

    def data_ok(n_features, **kw):
        data = DataSpec(**kw)
        data.check(n_features)
        if data.has_sets:
            for p in fp_arrays:
                data.check(n_features, np.broadcast_to(p, (1, n_features)))

    check(("n_features",) + DATASPEC_KEYS, data_ok)


def load_spec(path, quick: bool = False) -> "Sweep":
    """Read a TOML spec file and return its Sweep (ValueError naming the key on any problem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"spec file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a spec file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); a spec is a UTF-8 TOML file") from None
    return parse_spec(text, quick=quick, source=str(path))


def parse_spec(spec, quick: bool = False, source: str = "spec") -> "Sweep":
    """A Sweep from a spec given as TOML text, a path to a TOML file, or a dict (as TOML would parse).

    A str without a newline and without '=' is taken as a path.
    """
    if isinstance(spec, dict):
        return Sweep(resolve(copy.deepcopy(spec), quick=quick))
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and "\n" not in spec and "=" not in spec):
        return load_spec(spec, quick=quick)
    if not isinstance(spec, str):
        raise ValueError(f"spec must be a path, TOML text or a dict, got {type(spec).__name__}")
    try:
        raw = tomllib.loads(spec)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: invalid TOML: {e}") from None
    sweep = Sweep(resolve(raw, quick=quick))
    sweep.source_text = spec
    return sweep


# --------------------------------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """Models sharing one shape and one TrainConfig: ids [start, stop)."""

    index: int
    spec: ModelSpec
    cfg: TrainConfig
    start: int
    stop: int
    data: DataSpec = DataSpec()

    @property
    def n_models(self) -> int:
        return self.stop - self.start


class Sweep:
    """A resolved spec as a lazy grid of models. Build with `load_spec` / `parse_spec` / `Sweep(resolved)`."""

    def __init__(self, resolved: dict):
        if resolved.get("format") != FORMAT:
            raise ValueError(f"spec format {resolved.get('format')!r} is not supported (expected {FORMAT})")
        self.resolved = resolved
        self.source_text = None
        self.name = resolved["name"]
        sw = resolved["sweep"]
        base = {**DEFAULTS, **resolved["model"], **resolved["train"]}
        self.group_axes = [(k, sw[k] if k in sw else [base[k]]) for k in GROUP_KEYS]
        self.swept_keys = [k for k in GROUP_KEYS if k in sw]
        self.fp_values = sw["feature_probability"]
        self.importance_key = next(k for k in IMPORTANCE_KEYS if k in sw)
        self.importance_values = sw[self.importance_key]
        self.n_seeds = resolved["seeds"]
        self.seed_list = resolved["seed_list"]
        self.base_seed = resolved["base_seed"]
        self.group_shape = tuple(len(v) for _, v in self.group_axes)
        self.data_shape = (len(self.fp_values), len(self.importance_values))
        self.n_groups = math.prod(self.group_shape)
        self.points_per_group = math.prod(self.data_shape)
        self.models_per_group = self.points_per_group * self.n_seeds
        self.n_points = self.n_groups * self.points_per_group
        self.n_models = self.n_points * self.n_seeds
        self.groups = []
        for g in range(self.n_groups):
            idx = np.unravel_index(g, self.group_shape)
            v = {k: vals[i] for (k, vals), i in zip(self.group_axes, idx)}
            spec = ModelSpec(**{k: v[k] for k in MODEL_KEYS})
            cfg_kw = {k: v[k] for k in TRAIN_KEYS}
            cfg_kw["betas"] = tuple(cfg_kw["betas"])
            self.groups.append(Group(g, spec, TrainConfig(**cfg_kw), g * self.models_per_group,
                                     (g + 1) * self.models_per_group, DataSpec(**{k: v[k] for k in DATASPEC_KEYS})))
        # per-group and per-point lookup arrays for vectorised rows
        self._fp_scalar = np.array([_common(v) for v in self.fp_values], dtype=np.float64)
        self._fp_has_lists = any(isinstance(v, list) for v in self.fp_values)
        self._imp_has_lists = self.importance_key == "importance" and any(isinstance(v, list) for v in self.importance_values)

    def __repr__(self):
        return f"Sweep({self.name!r}, {self.n_models} models, {self.n_groups} groups, {self.n_points} points)"

    def to_json(self) -> str:
        return canonical_json(self.resolved)

    def group_of(self, model_id: int) -> Group:
        if not 0 <= model_id < self.n_models:
            raise ValueError(f"model_id must be in [0, {self.n_models}), got {model_id}")
        return self.groups[model_id // self.models_per_group]

    # -- per-model arrays --------------------------------------------------------------------------
    def _decompose(self, ids: np.ndarray):
        g, rem = np.divmod(ids, self.models_per_group)
        point_in, s = np.divmod(rem, self.n_seeds)
        fp_i, imp_i = np.unravel_index(point_in, self.data_shape)
        return g, point_in, s, fp_i, imp_i

    def seeds_of(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if self.seed_list is not None:
            return np.asarray(self.seed_list, dtype=np.int64)[ids % self.n_seeds]
        return self.base_seed + ids

    def _check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_models):
            raise ValueError(f"model ids must be in [0, {self.n_models})")
        return ids

    def feature_probability(self, ids) -> np.ndarray:
        """(k, n) float64 feature probabilities of models `ids` (all of one n_features)."""
        ids = self._check_ids(ids)
        n = self._common_n(ids)
        _, _, _, fp_i, _ = self._decompose(ids)
        table = np.array([np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) for v in self.fp_values])
        return table[fp_i]

    def importance(self, ids) -> np.ndarray:
        """(k, n) float64 feature importances of models `ids` (all of one n_features)."""
        ids = self._check_ids(ids)
        n = self._common_n(ids)
        _, _, _, _, imp_i = self._decompose(ids)
        table = np.array([self._importance_vector(v, n) for v in self.importance_values])
        return table[imp_i]

    def _importance_vector(self, v, n: int) -> np.ndarray:
        if self.importance_key == "importance_decay":
            return v ** np.arange(n, dtype=np.float64)
        if self.importance_key == "relative_importance":
            out = np.ones(n)
            out[-1] = v
            return out
        return np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()

    def _common_n(self, ids) -> int:
        g = np.unique(ids // self.models_per_group)
        ns = {self.groups[i].spec.n_features for i in g}
        if len(ns) > 1:
            raise ValueError(f"these models have different n_features {sorted(ns)}; ask one shape at a time")
        return ns.pop() if ns else 1

    def population(self, start: int, stop: int) -> Population:
        """The Population of models [start, stop) (one group), initialised from their seeds."""
        group = self.group_of(start)
        if not start < stop <= group.stop:
            raise ValueError(f"models [{start}, {stop}) must lie inside group {group.index} [{group.start}, {group.stop})")
        ids = np.arange(start, stop, dtype=np.int64)
        return Population(group.spec, self.feature_probability(ids), self.importance(ids),
                          [int(s) for s in self.seeds_of(ids)], data=group.data)

    def rows(self, start: int, stop: int) -> dict:
        """Per-model table columns (dict of equal-length numpy arrays / lists) for models [start, stop)."""
        ids = np.arange(start, stop, dtype=np.int64)
        g, point_in, s, fp_i, imp_i = self._decompose(ids)
        cols = {"model_id": ids, "point_id": g * self.points_per_group + point_in,
                "seed_index": s.astype(np.int32), "seed": self.seeds_of(ids), "group": g.astype(np.int32)}
        for key, per_group in self._group_columns().items():
            cols[key] = per_group[g]
        cols["feature_probability"] = self._fp_scalar[fp_i]
        if self._fp_has_lists:
            cols["feature_probability_list"] = [list(r) for r in self._per_model_vectors(ids, g, self.feature_probability)]
        decay, rel = self._importance_columns()
        cols["importance_decay"] = decay[g, imp_i]
        cols["relative_importance"] = rel[g, imp_i]
        if self._imp_has_lists:
            cols["importance_list"] = [list(r) for r in self._per_model_vectors(ids, g, self.importance)]
        return cols

    def _group_columns(self) -> dict:
        """Column name -> (n_groups,) array of the shape / TrainConfig values of each group (cached)."""
        if getattr(self, "_group_cols", None) is None:
            cols = {}
            for key, _ in self.group_axes:
                if key == "betas":
                    cols["beta1"] = np.array([grp.cfg.betas[0] for grp in self.groups])
                    cols["beta2"] = np.array([grp.cfg.betas[1] for grp in self.groups])
                    continue
                owner = lambda grp: grp.spec if key in MODEL_KEYS else (grp.data if key in DATASPEC_KEYS else grp.cfg)  # noqa: E731
                vals = [_column_value(key, getattr(owner(grp), key)) for grp in self.groups]
                dtype = object if isinstance(vals[0], str) else (
                    bool if isinstance(vals[0], bool) else (np.int32 if isinstance(vals[0], int) else np.float64))
                cols[key] = np.array(vals, dtype=dtype)
            self._group_cols = cols
        return self._group_cols

    def _per_model_vectors(self, ids, g, fn):
        out = [None] * len(ids)
        for grp in np.unique(g):
            sel = np.flatnonzero(g == grp)
            for j, row in zip(sel, fn(ids[sel])):
                out[j] = row
        return out

    def _importance_columns(self):
        """(n_groups, n_importance) arrays: importance_decay and relative_importance (NaN when not of that form)."""
        if getattr(self, "_imp_cols", None) is not None:
            return self._imp_cols
        decay = np.full((self.n_groups, len(self.importance_values)), np.nan)
        rel = np.full_like(decay, np.nan)
        for gi, grp in enumerate(self.groups):
            n = grp.spec.n_features
            for j, v in enumerate(self.importance_values):
                vec = self._importance_vector(v, n)
                if self.importance_key == "importance_decay":
                    decay[gi, j] = v
                elif (vec == 1).all():
                    decay[gi, j] = 1.0
                if self.importance_key == "relative_importance":
                    rel[gi, j] = v
                elif (vec[:-1] == 1).all():
                    rel[gi, j] = vec[-1]
        self._imp_cols = (decay, rel)
        return self._imp_cols


def _column_value(key: str, value):
    """A group value as a table cell: lists (sets, snapshot steps) as compact JSON, no dataset as 0."""
    if isinstance(value, (list, tuple)):
        return json.dumps([list(v) if isinstance(v, (list, tuple)) else v for v in value], separators=(",", ":"))
    if key == "dataset_size" and value is None:
        return 0
    return value


def _common(v) -> float:
    """A feature-probability value as one float: itself, or NaN for a per-feature list that varies."""
    if isinstance(v, list):
        return float(v[0]) if all(x == v[0] for x in v) else float("nan")
    return float(v)


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


# --------------------------------------------------------------------------------------------------
# chunk plan
# --------------------------------------------------------------------------------------------------
def plan_chunks(sweep: Sweep, max_models) -> np.ndarray:
    """Cut every group into chunks of at most `max_models(group)` models, sizes as even as possible.

    Returns an (n_chunks, 3) int64 array of (group, start, stop) in model-id order.
    """
    out = []
    for grp in sweep.groups:
        cap = max(1, int(max_models(grp)))
        k = -(-grp.n_models // cap)
        bounds = grp.start + (np.arange(k + 1, dtype=np.int64) * grp.n_models) // k
        out.append(np.stack([np.full(k, grp.index, dtype=np.int64), bounds[:-1], bounds[1:]], axis=1))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 3), dtype=np.int64)
