"""analysis: scaling laws fitted with honest uncertainty, from MLflow experiments or any CSV — the top of the stack.

Entry points::

    from analysis import fit_curve, make_curve, analyze_experiment
    result = fit_curve(make_curve(n_train, val_loss), law="auto", holdout=2)   # every candidate, winner by AICc
    analyze_experiment("matscale-demo", "sqlite:///runs/demo/mlflow.db", axis="data", out="analysis-out")

or ``matscale fit CSV --x COL --y COL`` and ``matscale analyze --experiment NAME``. The fitting modules
(:mod:`analysis.fit`, :mod:`analysis.laws`, :mod:`analysis.scaling`, :mod:`analysis.propose`) need only numpy
and scipy; names are imported on first use.
"""

from importlib import import_module

_WHERE = {"Curve": "analysis.fit", "make_curve": "analysis.fit", "make_law": "analysis.laws",
          "fit_curve": "analysis.scaling", "analyze_experiment": "analysis.experiment"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
