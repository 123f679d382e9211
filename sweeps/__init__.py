"""sweeps: Ray Tune schedules the scaling grid, Optuna searches inside each point, MLflow tracks every trial.

Entry points::

    from sweeps import load_spec, run_sweep
    summary = run_sweep(load_spec("sweeps/specs/demo.yaml"), address="local")

or ``matscale sweep SPEC [--address local|auto|ray://…] [--tracking-uri URI] [--resume] [--dry-run]``.
"""

from sweeps.driver import run_sweep
from sweeps.spec import Spec, load_spec

__all__ = ["Spec", "load_spec", "run_sweep"]
