"""Data coverage: does *which* data a model sees matter as much as how much? (Gibson et al., arXiv 2409.07610)

From the aggregated points of a coverage sweep (one curve over D per subset strategy at each model size N):

* :func:`coverage_table`: loss mean ± std over seeds, its standard error, and the subset's diversity (RMS
  descriptor distance to the centroid, :func:`gnn.subsets.subset_stats`) and element count, per
  (arch, N, D, strategy).
* :func:`flags`: where, at fixed capacity (arch, N), more diverse data raises the loss —

  - ``diverse_worse``: at the same D, a strategy whose subset is more diverse than another's has a higher loss,
    significant at ``level`` by a one-sided t-test — on the per-seed differences when both were run with the
    same ≥ 2 seeds (a seed fixes the initialisation, so pairing removes most of the seed noise; k − 1 degrees of
    freedom), else on the two means (min(k_a, k_b) − 1 degrees of freedom, conservative); with one seed, a
    relative difference above ``min_rel``;
  - ``more_data_worse``: within one strategy, the next larger D has a loss higher by the same margin (the
    larger, more varied subset exceeded what the model can fit: diversity-induced underfitting).
"""

from __future__ import annotations

import itertools

import numpy as np

LEVEL = 0.95  #: one-sided confidence of a flag
MIN_REL = 0.05  #: relative loss difference that counts when there is one seed (no standard error)


def coverage_table(best, metric: str = "val_loss"):
    """One row per (arch, n_params_target, n_train, subset): loss, std, seeds, se, diversity, elements."""
    import pandas as pd

    keys = ["arch", "n_params_target", "n_train", "subset"]
    g = best.groupby(keys)
    col = (lambda c: g[c].mean() if c in best else np.nan)
    table = pd.DataFrame({"loss": g[metric].mean(), "std": g[metric].std(ddof=1), "seeds": g[metric].count(),
                          "diversity": col("subset_diversity"), "elements": col("subset_elements"),
                          "by_seed": g.apply(lambda r: dict(zip(r["seed"].astype(int), r[metric].astype(float))),
                                             include_groups=False)}).reset_index()
    table["se"] = table["std"] / np.sqrt(table["seeds"])
    return table


def _worse(a, b, level: float, min_rel: float) -> tuple[bool, float | None]:
    """Is row ``a``'s loss higher than ``b``'s beyond noise? (flag, t statistic or None with one seed)."""
    from scipy.stats import t as student

    diff = a["loss"] - b["loss"]
    common = sorted(set(a["by_seed"]) & set(b["by_seed"]))
    if len(common) >= 2:  # paired over seeds
        d = np.array([a["by_seed"][k] - b["by_seed"][k] for k in common])
        se = float(d.std(ddof=1) / np.sqrt(len(d)))
        if se > 0:
            stat = float(d.mean() / se)
            return bool(stat > student.ppf(level, len(d) - 1)), stat
    se = float(np.hypot(a["se"], b["se"]))
    dof = int(min(a["seeds"], b["seeds"])) - 1
    if np.isfinite(se) and se > 0 and dof >= 1:
        return bool(diff / se > student.ppf(level, dof)), float(diff / se)
    return bool(diff > min_rel * b["loss"]), None


def flags(table, level: float = LEVEL, min_rel: float = MIN_REL) -> list[dict]:
    """``diverse_worse`` and ``more_data_worse`` findings (see the module docstring)."""
    out = []
    for (arch, n, d), rows in table.groupby(["arch", "n_params_target", "n_train"]):
        for (_, a), (_, b) in itertools.permutations(rows.iterrows(), 2):
            if not (np.isfinite(a["diversity"]) and np.isfinite(b["diversity"]) and a["diversity"] > b["diversity"]):
                continue
            worse, score = _worse(a, b, level, min_rel)
            if worse:
                out.append({"kind": "diverse_worse", "arch": arch, "N": float(n), "D": int(d),
                            "more_diverse": a["subset"], "less_diverse": b["subset"],
                            "loss": [float(a["loss"]), float(b["loss"])],
                            "diversity": [float(a["diversity"]), float(b["diversity"])], "t": score})
    for (arch, n, subset), rows in table.groupby(["arch", "n_params_target", "subset"]):
        rows = rows.sort_values("n_train")
        for (_, a), (_, b) in zip(list(rows.iterrows())[:-1], list(rows.iterrows())[1:]):
            worse, score = _worse(b, a, level, min_rel)
            if worse:
                out.append({"kind": "more_data_worse", "arch": arch, "N": float(n), "subset": subset,
                            "D": [int(a["n_train"]), int(b["n_train"])], "loss": [float(a["loss"]), float(b["loss"])],
                            "diversity": [float(a["diversity"]), float(b["diversity"])], "t": score})
    return out


def describe(flag: dict) -> str:
    """One sentence per finding, for the report."""
    from sweeps.spec import sci

    where = f"{flag['arch']} N={sci(flag['N'])}"
    sig = f"t = {flag['t']:.1f}" if flag["t"] is not None else "one seed, > 5 %"
    if flag["kind"] == "diverse_worse":
        return (f"{where}, D={flag['D']}: `{flag['more_diverse']}` (diversity {flag['diversity'][0]:.3g}) has loss "
                f"{flag['loss'][0]:.4g} vs {flag['loss'][1]:.4g} for `{flag['less_diverse']}` (diversity "
                f"{flag['diversity'][1]:.3g}) — more diverse data raised the loss at this capacity ({sig}).")
    return (f"{where}, `{flag['subset']}`: going from D={flag['D'][0]} to D={flag['D'][1]} raised the loss from "
            f"{flag['loss'][0]:.4g} to {flag['loss'][1]:.4g} ({sig}) — more data hurt at this capacity.")
