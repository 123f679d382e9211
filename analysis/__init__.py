"""analysis: scaling laws fitted with honest uncertainty, from MLflow experiments or any CSV.

Entry points::

    from analysis import fit_curve, make_curve, analyze_experiment
    result = fit_curve(make_curve(n_train, val_loss), law="auto", holdout=2)   # every candidate, winner by AICc
    analyze_experiment("matscale-demo", "sqlite:///runs/demo/mlflow.db", axis="data", out="analysis-out")

or ``matscale fit CSV --x COL --y COL`` and ``matscale analyze --experiment NAME``.
"""

from analysis.cli import analyze_experiment
from analysis.fit import Curve, make_curve
from analysis.laws import make_law
from analysis.scaling import fit_curve

__all__ = ["Curve", "analyze_experiment", "fit_curve", "make_curve", "make_law"]
