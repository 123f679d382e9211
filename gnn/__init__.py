"""gnn: one scaling-law trial — materials data, periodic graphs, sized GNNs and their training.

Entry points::

    from gnn import build_model, train, TrainConfig
    model = build_model("cgc", n_params=1e5, targets=["eps", "drude"], n_points=101)
    metrics = train(TrainConfig(data="data/demo", arch="transformer", n_params=3e5, fraction=0.5, epochs=20))

The names below are imported on first use (PEP 562), so ``import gnn.errors`` — what the pure-numpy
analysis code needs — does not load torch.
"""

from __future__ import annotations

import importlib
import sys
import types

#: public name → the module that defines it
_HOME = {
    "ARCHS": "gnn.models", "CrystalGNN": "gnn.models", "build_model": "gnn.models", "count_params": "gnn.models",
    "DivergedError": "gnn.train", "TrainConfig": "gnn.train", "train": "gnn.train",
    "InputError": "gnn.errors", "Store": "gnn.store",
}

__all__ = ["ARCHS", "CrystalGNN", "DivergedError", "InputError", "Store", "TrainConfig", "build_model",
           "count_params", "train"]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``gnn.train`` is the function, as with eager imports: importing the submodule ``gnn.train`` (which sets the
    package attribute to the module once it has run) binds the function of that name instead."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}" and name in __all__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
