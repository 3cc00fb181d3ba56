"""superpos: train thousands of toy models of superposition at once."""
from .config import SCHEDULES, TrainConfig, TrainResult
from .spec import ACTIVATIONS, DataSpec, ModelSpec, Population, sample_batch
from .train import BACKENDS, resolve_backend, train

__version__ = "0.1.0"

__all__ = ["ModelSpec", "DataSpec", "Population", "TrainConfig", "TrainResult", "sample_batch", "train",
           "resolve_backend", "run_spec", "load_run", "best_of_seeds", "ACTIVATIONS", "SCHEDULES", "BACKENDS",
           "__version__"]


def __getattr__(name):  # heavy submodules load on first use
    import importlib
    if name in ("analysis", "plots", "run_figures", "sweep", "store", "rng", "reference"):
        return importlib.import_module(f".{name}", __name__)
    if name in ("load_run", "best_of_seeds"):
        return getattr(importlib.import_module(".store", __name__), name)
    if name == "run_spec":
        return importlib.import_module(".runspec", __name__).run_spec
    raise AttributeError(name)
