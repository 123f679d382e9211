"""Load sweep results from MLflow into a tidy table, and aggregate them into scaling points.

One row per trial run: ``run_id, status, stage, sweep_id, trial_key, point, arch, n_params`` (actual),
``n_params_target, n_train, seed, trial_index``, the variant of the point (``subset``: the coverage strategy,
``random`` by default; ``source_n`` and ``strategy``: the pretraining size and fine-tuning strategy of a transfer
point, 0 and ``none`` without pretraining), the HPO params (``hp.*``), every final metric, and
``failure_reason`` / ``early_stopped``. Aggregation: the best HPO trial per (point, seed) by the chosen
validation metric, then mean ± std over seeds per point; points whose seed spread exceeds 5 % are flagged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gnn.errors import InputError
from sweeps import record, tracking

VARIANT = ["subset", "source_n", "strategy"]
POINT = ["arch", "n_params_target", "n_train"] + VARIANT
SPREAD_FLAG = 0.05


def load_runs(tracking_uri: str, experiment: str, *, sweep: str | None = None, stage: str | None = None,
              status: str | None = None):
    """``(table, experiment_id)``: every trial run of ``experiment`` (optionally of one sweep id, stage, status)
    as a DataFrame, one row per run (:func:`sweeps.record.trial_row`)."""
    import pandas as pd

    _, c, exp = open_experiment(tracking_uri, experiment)
    runs = tracking.search_all(c, [exp.experiment_id], record.runs_filter(record.KIND_TRIAL, sweep_id=sweep,
                                                                          stage=stage, status=status))
    return pd.DataFrame([record.trial_row(r) for r in runs]), exp.experiment_id


def open_experiment(tracking_uri: str, experiment: str):
    """``(uri, client, experiment)`` for reading an existing experiment; every failure is one line.

    ``uri`` is :func:`reading_uri`'s (nothing is created); a backend that cannot be opened (a missing database
    driver, a refused login) or has no such experiment is an :class:`InputError`, the URI's password masked.
    """
    uri = reading_uri(tracking_uri, experiment)
    try:
        c = tracking.client(uri)
        exp = c.get_experiment_by_name(experiment)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the backend could not be opened or reached
        raise InputError(f"cannot read {tracking.redact_uri(tracking_uri)} ({failure(exc)})",
                         field="tracking_uri") from None
    if exp is None:
        raise InputError(f"no experiment named {experiment!r} at {tracking.redact_uri(tracking_uri)}",
                         field="experiment")
    return uri, c, exp


def reading_uri(tracking_uri: str, experiment: str) -> str:
    """``tracking_uri`` checked for reading without creating anything (reading commands never create a store).

    A SQLite store must be an existing file (its URI is made absolute); an http(s) server must answer within
    seconds, and its credentials move out of the URI (:func:`sweeps.tracking.use_credentials`). Otherwise one line, the URI's
    password masked.
    """
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):].split("?", 1)[0]).resolve()
        if not path.is_file():
            raise InputError(f"no experiment named {experiment!r}: there is no MLflow store at {path} (a reading "
                             "command creates none; check --tracking-uri or $MLFLOW_TRACKING_URI)", field="experiment")
        return tracking.normalise_uri(tracking_uri)
    tracking.check_reachable(tracking_uri)
    return tracking.use_credentials(tracking_uri)


def failure(exc: Exception) -> str:
    """``Type: message`` of a backend failure, on one short line, URIs' passwords masked."""
    return f"{type(exc).__name__}: {tracking.redact_uri(' '.join(str(exc).split()))[:200]}"


def aggregate(df, metric: str = "val_loss"):
    """``(best, points, problems)``: the best HPO trial per (point, seed) by ``metric``; per point the mean ± std
    of those over seeds (with the seed spread flagged above :data:`SPREAD_FLAG`); and the runs that did not
    finish (``trial_key, status, failure_reason``)."""
    import pandas as pd

    if df.empty:
        raise InputError("the experiment has no trial runs", field="experiment")
    problems = df[df["status"] != record.FINISHED][["trial_key", "status", "failure_reason"]]
    ok = df[(df["status"] == record.FINISHED) & ~df["early_stopped"]]
    if metric not in ok.columns or ok[metric].isna().all():
        raise InputError(f"no FINISHED run has the metric {metric!r}", field="metric")
    ok = ok[np.isfinite(ok[metric].astype(float))]
    if ok.empty:
        raise InputError("the experiment has no finished runs", field="experiment")
    best = ok.loc[ok.groupby(POINT + ["seed"])[metric].idxmin()]
    g = best.groupby(POINT)
    points = pd.DataFrame({
        "loss": g[metric].mean(), "std": g[metric].std(ddof=1), "seeds": g[metric].count(),
        "n_params": g["n_params"].mean() if "n_params" in best else g["n_params_target"].mean(),
    }).reset_index()
    points["spread"] = points["std"] / points["loss"]
    points["flag_spread"] = points["spread"] > SPREAD_FLAG
    return best, points, problems


def variant_label(subset: str = "random", source_n: float = 0.0, strategy: str = "none") -> str:
    """`` subset=…`` / `` source_n=… (strategy)`` for group names; empty for a plain point."""
    out = "" if subset == "random" else f" subset={subset}"
    return out + (f" source_n={int(source_n)} ({strategy})" if source_n else "")
