"""sweeps: Ray Tune schedules the scaling grid, Optuna searches inside each point, MLflow tracks every trial.

Entry points::

    from sweeps import load_spec, run_sweep
    summary = run_sweep(load_spec("sweeps/specs/demo.yaml"), address="local")

or ``matscale sweep SPEC [--address local|auto|ray://…] [--tracking-uri URI] [--resume] [--dry-run]``. What the
MLflow runs hold is :mod:`sweeps.record`'s. Names are imported on first use (Ray and MLflow are heavy).
"""

from importlib import import_module

_WHERE = {"Spec": "sweeps.spec", "load_spec": "sweeps.spec", "run_sweep": "sweeps.driver"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
