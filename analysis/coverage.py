"""Data coverage: does *which* data a model sees matter as much as how much? (Gibson et al., arXiv 2409.07610)

From the aggregated points of a coverage sweep (one curve over D per subset strategy at each model size N):

* :func:`coverage_table`: loss mean ± std over seeds, its standard error, and the subset's diversity (RMS
  descriptor distance to the centroid, :func:`gnn.subsets.subset_stats`) and element count, per
  (arch, N, D, strategy).
* :func:`flags`: where, at fixed capacity (arch, N), more diverse data raises the loss —

  - ``diverse_worse``: at the same D, a strategy whose subset is more diverse than another's (by at least
    ``min_gain``, relative) has a higher loss;
  - ``more_data_worse``: within one strategy, the next larger D has a higher loss (the larger, more varied
    subset exceeded what the model can fit: diversity-induced underfitting).

  Each comparison is a one-sided t-test — on the per-seed differences when both points were run with the same
  ≥ 2 seeds (a seed fixes the initialisation, so pairing removes most of the seed noise; k − 1 degrees of
  freedom), else on the two means (min(k_a, k_b) − 1 degrees of freedom, conservative) — and the family of all
  comparisons of an analysis is corrected by Holm's step-down method, so a sweep of many strategies and sizes
  does not flag noise. With one seed there is no test: a relative difference above ``min_rel`` is reported as
  ``tentative``.
"""

from __future__ import annotations

import itertools

import numpy as np

ALPHA = 0.05  #: family-wise error rate of the flags (Holm)
MIN_GAIN = 0.05  #: relative diversity difference that makes one subset "more diverse" than another
MIN_REL = 0.05  #: relative loss difference reported (tentatively) when there is one seed


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


def _test(a, b) -> tuple[float | None, float | None]:
    """One-sided test that row ``a``'s loss exceeds ``b``'s: (t statistic, p-value), (None, None) without seeds."""
    from scipy.stats import t as student

    common = sorted(set(a["by_seed"]) & set(b["by_seed"]))
    if len(common) >= 2:  # paired over seeds
        d = np.array([a["by_seed"][k] - b["by_seed"][k] for k in common])
        se, dof = float(d.std(ddof=1) / np.sqrt(len(d))), len(d) - 1
        diff = float(d.mean())
    else:
        se, dof = float(np.hypot(a["se"], b["se"])), int(min(a["seeds"], b["seeds"])) - 1
        diff = float(a["loss"] - b["loss"])
    if not (np.isfinite(se) and se > 0 and dof >= 1):
        return None, None
    stat = diff / se
    return stat, float(student.sf(stat, dof))


def _candidates(table, min_gain: float):
    """Every comparison the flags consider: (kind, worse row, better row, context)."""
    for (arch, n, d), rows in table.groupby(["arch", "n_params_target", "n_train"]):
        for (_, a), (_, b) in itertools.permutations(rows.iterrows(), 2):
            if np.isfinite(a["diversity"]) and np.isfinite(b["diversity"]) and \
                    a["diversity"] > (1 + min_gain) * b["diversity"]:
                yield "diverse_worse", a, b, {"arch": arch, "N": float(n), "D": int(d), "more_diverse": a["subset"],
                                              "less_diverse": b["subset"]}
    for (arch, n, subset), rows in table.groupby(["arch", "n_params_target", "subset"]):
        rows = list(rows.sort_values("n_train").iterrows())
        for (_, a), (_, b) in zip(rows[:-1], rows[1:]):
            yield "more_data_worse", b, a, {"arch": arch, "N": float(n), "subset": subset,
                                            "D": [int(a["n_train"]), int(b["n_train"])]}


def flags(table, alpha: float = ALPHA, min_gain: float = MIN_GAIN, min_rel: float = MIN_REL) -> list[dict]:
    """``diverse_worse`` and ``more_data_worse`` findings (see the module docstring), Holm-corrected."""
    tested, tentative = [], []
    for kind, worse, better, ctx in _candidates(table, min_gain):
        stat, p = _test(worse, better)
        losses = [float(worse["loss"]), float(better["loss"])]
        if kind == "more_data_worse":
            losses = losses[::-1]  # [smaller D, larger D]
        diversity = [float(worse["diversity"]), float(better["diversity"])]
        if kind == "more_data_worse":
            diversity = diversity[::-1]  # [smaller D, larger D], like the losses
        item = {"kind": kind, **ctx, "loss": losses, "t": stat, "p": p, "diversity": diversity}
        if p is not None:
            tested.append(item)
        elif worse["loss"] > (1 + min_rel) * better["loss"]:
            tentative.append({**item, "tentative": True})
    out = []
    for rank, item in enumerate(sorted(tested, key=lambda f: f["p"])):  # Holm's step-down
        if item["p"] > alpha / (len(tested) - rank):
            break
        out.append({**item, "tentative": False, "tests": len(tested)})
    return out + tentative


def describe(flag: dict) -> str:
    """One sentence per finding, for the report."""
    from sweeps.spec import sci

    where = f"{flag['arch']} N={sci(flag['N'])}"
    sig = (f"t = {flag['t']:.1f}, p = {flag['p']:.2g}, Holm-corrected over {flag['tests']} comparisons"
           if not flag["tentative"] else "one seed: tentative, > 5 %")
    if flag["kind"] == "diverse_worse":
        return (f"{where}, D={flag['D']}: `{flag['more_diverse']}` (diversity {flag['diversity'][0]:.3g}) has loss "
                f"{flag['loss'][0]:.4g} vs {flag['loss'][1]:.4g} for `{flag['less_diverse']}` (diversity "
                f"{flag['diversity'][1]:.3g}) — more diverse data raised the loss at this capacity ({sig}).")
    return (f"{where}, `{flag['subset']}`: going from D={flag['D'][0]} to D={flag['D'][1]} raised the loss from "
            f"{flag['loss'][0]:.4g} to {flag['loss'][1]:.4g} ({sig}) — more data hurt at this capacity.")
