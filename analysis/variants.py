"""``matscale analyze --axis transfer`` and ``--axis coverage``: the transfer law and the coverage findings of an
experiment, written like the scaling analysis (``report.md``, ``fits.json``, ``plots/``, an ``analysis`` run).
The numbers come from :mod:`analysis.transfer` and :mod:`analysis.coverage`; this module reads, plots and writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis import coverage, transfer
from analysis.fit import make_curve
from analysis.report import fmt, log_analysis_run, pyplot, safe_name, write_files
from analysis.scaling import fit_curve
from gnn.errors import InputError
from sweeps import record
from sweeps.spec import sci


def analyze_transfer(experiment: str, tracking_uri: str, best, points, exp_id: str, *, out: Path,
                     metric: str = "val_loss", n_boot: int = 1000, seed: int = 0, target: float | None = None,
                     log: bool = True, verbose: bool = True) -> dict:
    """Fit L(n) = D n^-alpha + C per (arch, N, target size, strategy) and compare with the baseline."""
    if not (best["source_n"] > 0).any():
        raise InputError("the experiment has no transfer runs (source_n > 0); run a spec with a transfer section",
                         field="experiment")
    (out / "plots").mkdir(parents=True, exist_ok=True)
    groups, skipped = [], []
    base = best[best["source_n"] == 0]
    base_pts = points[points["source_n"] == 0]
    for (arch, n, t, strategy, subset), sub in best[best["source_n"] > 0].groupby(
            ["arch", "n_params_target", "n_train", "strategy", "subset"]):
        name = f"{arch} N={sci(n)} target_n={int(t)} ({strategy})" + ("" if subset == "random" else f" subset={subset}")
        curve = make_curve(sub["source_n"].to_numpy(float), sub[metric].to_numpy(float))
        try:
            r = transfer.fit_transfer(curve, n_boot=n_boot, seed=seed, target=target)
        except InputError as exc:
            skipped.append(f"{name}: {exc}")
            r = None
        same = (lambda df: df[(df["arch"] == arch) & (df["n_params_target"] == n) & (df["subset"] == subset)])
        b_rows, b_here = same(base), same(base_pts)
        b_here = b_here[b_here["n_train"] == t]
        law0 = transfer.baseline_law(b_rows["n_train"].to_numpy(float), b_rows[metric].to_numpy(float),
                                     n_boot=n_boot, seed=seed) if len(b_rows) else None
        pts = same(points)
        pts = pts[(pts["n_train"] == t) & (pts["strategy"] == strategy) & (pts["source_n"] > 0)].sort_values("source_n")
        equivalent = []
        for p in pts.itertuples():
            e = {"source_n": int(p.source_n), "loss": float(p.loss), "std": transfer.finite(p.std), "seeds": int(p.seeds)}
            if law0 is not None:
                measured = None if b_here.empty else float(b_here["loss"].iloc[0])
                e.update(transfer.equivalent_target_samples(law0, float(p.loss), float(t), baseline_loss=measured))
            equivalent.append(e)
        result = {**(r or {"law": "transfer", "formula": transfer.FORMULA, "params": {}, "ci": {}, "aicc": None}),
                  "baseline": None if b_here.empty else {"loss": float(b_here["loss"].iloc[0]),
                                                         "std": transfer.finite(b_here["std"].iloc[0])},
                  "baseline_law": None if law0 is None else {"t0": law0["t0"], "beta": law0["beta"],
                                                             "sizes": law0["sizes"]},
                  "equivalent": equivalent, "fitted": r is not None}
        plot = f"transfer-{safe_name(name)}.png"
        _plot_transfer(name, curve, result, out / "plots" / plot, metric)
        groups.append({"name": name, "axis": "transfer", "result": result, "plot": plot})
        if verbose:
            print(_transfer_text(name, result))
    text = _transfer_markdown(experiment, metric, groups, skipped)
    write_files(out, {"fits.json": json.dumps({"title": f"Transfer analysis of {experiment}", "groups": [
        {"name": g["name"], **g["result"]} for g in groups], "skipped": skipped}, indent=1, default=str),
                      "report.md": text})
    fitted = [g for g in groups if g["result"]["fitted"]]
    run_id = log_analysis_run(tracking_uri, exp_id, out, fitted, metric, {record.AXIS: "transfer"}) if log else None
    if verbose:
        print(f"wrote {out / 'fits.json'}, {out / 'report.md'} and {len(groups)} plots"
              + (f"; MLflow analysis run {run_id}" if run_id else ""))
    return {"groups": [{"name": g["name"], **g["result"]} for g in groups], "skipped": skipped, "run_id": run_id,
            "out": str(out)}


def _transfer_text(name: str, r: dict) -> str:
    lines = [f"== {name}"]
    if r["fitted"]:
        p, ci = r["params"], r["ci"]
        lines.append(f"   {r['formula']}: alpha {p['alpha']:.3g} [{fmt(ci['alpha'][0])}, {fmt(ci['alpha'][1])}], "
                     f"C {p['C']:.4g} [{fmt(ci['C'][0])}, {fmt(ci['C'][1])}], D {p['D']:.4g}")
        if r.get("target"):
            t = r["target"]
            lines.append(f"   loss {t['loss']} needs source_n = {fmt(t['source_n'])} (95% CI {fmt(t['ci'][0])} – "
                         f"{fmt(t['ci'][1])})" if t["reachable"] else
                         f"   loss {t['loss']} is unreachable: below the transfer gap C")
    if r["baseline"]:
        lines.append(f"   no pretraining: loss {r['baseline']['loss']:.4g}")
    for e in r["equivalent"]:
        if "target_equivalent" in e:
            lines.append(f"   source_n {e['source_n']}: loss {e['loss']:.4g}, worth {_worth(e)} target samples"
                         + ("" if e["far"] else f" (×{e['gain']:.2f}{', extrapolated' if e['extrapolated'] else ''})"))
    if not r["fitted"]:
        lines.append("   L(n) not fitted: fewer than 4 pretraining sizes")
    return "\n".join(lines)


def _worth(e: dict) -> str:
    """The equivalent target samples, or a bound when the baseline would be extrapolated more than tenfold."""
    return f"> {fmt(e['far'])} (beyond 10× the largest baseline size)" if e["far"] else fmt(e["target_equivalent"])


def _transfer_markdown(experiment: str, metric: str, groups: list[dict], skipped: list[str]) -> str:
    lines = [f"# Transfer analysis of {experiment} ({metric})", "",
             f"Per target size: `{transfer.FORMULA}` over the pretraining size n (alpha: scaling intensity, C: "
             "transfer gap), 95% bootstrap CIs; the no-pretraining baseline; and how many target samples "
             "pretraining is worth (the baseline curve over target sizes solved for the pretrained loss).", ""]
    for g in groups:
        r = g["result"]
        lines += [f"## {g['name']}", ""]
        if r["fitted"]:
            lines += ["| parameter | value | 95% CI |", "|---|---|---|"]
            for k in ("alpha", "C", "D"):
                ci = r["ci"].get(k, [None, None])
                lines.append(f"| {k} | {fmt(r['params'][k])} | [{fmt(ci[0])}, {fmt(ci[1])}] |")
            lines.append("")
            gap = "resolved (its CI excludes 0)" if r["gap_resolved"] else "not resolved from 0 by these data"
            aicc = "AICc needs ≥ 5 pretraining sizes" if not np.isfinite(r["aicc"]) else \
                f"AICc {fmt(r['aicc'])} with C, {fmt(r['aicc_no_gap'])} without"
            lines.append(f"- Transfer gap C {gap}; {aicc}.")
            if r.get("target"):
                t = r["target"]
                lines.append(f"- Loss {t['loss']} needs n = {fmt(t['source_n'])} pretraining structures (CI "
                             f"[{fmt(t['ci'][0])}, {fmt(t['ci'][1])}])" if t["reachable"] else
                             f"- Loss {t['loss']} is unreachable by pretraining alone: it is below C "
                             f"({100 * (t['unreachable_fraction'] or 0):.0f} % of bootstrap draws agree).")
        if r["baseline"]:
            lines.append(f"- No pretraining: loss {fmt(r['baseline']['loss'])} ± {fmt(r['baseline']['std'])}.")
        if r["equivalent"]:
            lines += ["", "| source n | loss | ± std | worth target samples | 95% CI | gain |",
                      "|---|---|---|---|---|---|"]
            for e in r["equivalent"]:
                te = e.get("target_equivalent")
                note = " (extrapolated)" if e.get("extrapolated") and not e.get("far") else ""
                note += " (negative transfer)" if e.get("negative_transfer") else ""
                ci = e.get("ci", [None, None])
                lines.append(f"| {e['source_n']} | {fmt(e['loss'])} | {fmt(e['std'])} | "
                             f"{_worth(e) if te is not None else '–'}{note} | "
                             f"[{fmt(ci[0])}, {fmt(ci[1])}] | {'–' if e.get('far') else fmt(e.get('gain'))} |")
        lines += ["", f"![{g['name']}](plots/{g['plot']})", ""]
    if skipped:
        lines += ["## Not fitted", ""] + [f"- {s}" for s in skipped] + [""]
    return "\n".join(lines)


def _plot_transfer(title: str, curve, r: dict, path: Path, ylabel: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ax.errorbar(curve.x, curve.y, yerr=np.nan_to_num(curve.std), fmt="o", color="k", capsize=3,
                label="pretrained, seed mean ± std")
    if r["fitted"]:
        p = r["params"]
        grid = np.logspace(np.log10(curve.x.min()) - 0.2, np.log10(curve.x.max()) + 1.0, 200)
        ax.plot(grid, p["D"] * grid ** -p["alpha"] + p["C"], color="tab:blue",
                label=f"D n^-α + C (α={p['alpha']:.2g}, C={p['C']:.3g})")
        lo, hi = r["ci"]["C"]
        if lo is not None and hi is not None:
            ax.axhspan(lo, hi, color="tab:blue", alpha=0.12, label="transfer gap C (95% CI)")
    if r["baseline"]:
        ax.axhline(r["baseline"]["loss"], color="tab:red", ls="--", label="no pretraining")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (pretraining structures)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def analyze_coverage(experiment: str, tracking_uri: str, best, points, exp_id: str, *, out: Path,
                     metric: str = "val_loss", n_boot: int = 1000, seed: int = 0, target: float | None = None,
                     log: bool = True, verbose: bool = True) -> dict:
    """Curves over D per subset strategy at each (arch, N), power-law exponents, and the coverage flags."""
    best = best[best["source_n"] == 0]
    if best["subset"].nunique() < 2:
        raise InputError("the experiment has one subset strategy; a coverage sweep needs the `subset` axis with "
                         "≥ 2 strategies", field="experiment")
    (out / "plots").mkdir(parents=True, exist_ok=True)
    table = coverage.coverage_table(best, metric)
    found = coverage.flags(table)
    groups, fits = [], []
    for (arch, n), rows in table.groupby(["arch", "n_params_target"]):
        name = f"{arch} N={sci(n)}"
        exps = {}
        for subset, sub in best[(best["arch"] == arch) & (best["n_params_target"] == n)].groupby("subset"):
            curve = make_curve(sub["n_train"].to_numpy(float), sub[metric].to_numpy(float))
            if curve.n >= 3:
                r = fit_curve(curve, "power", n_boot=n_boot, seed=seed)
                exps[subset] = {"alpha": r["params"]["alpha"], "ci": r["ci"]["alpha"]}
                fits.append({"name": f"{name} {subset}", "result": r})
        plot = f"coverage-{safe_name(name)}.png"
        _plot_coverage(name, rows, exps, out / "plots" / plot, metric)
        groups.append({"name": name, "plot": plot, "exponents": exps,
                       "table": rows.drop(columns=["arch", "n_params_target", "by_seed"]).to_dict(orient="records"),
                       "flags": [f for f in found if f["arch"] == arch and f["N"] == float(n)]})
    text = _coverage_markdown(experiment, metric, groups)
    write_files(out, {"fits.json": json.dumps({"title": f"Coverage analysis of {experiment}", "groups": groups,
                                               "flags": found}, indent=1, default=_json),
                      "report.md": text})
    run_id = log_analysis_run(tracking_uri, exp_id, out, fits, metric,
                              {record.AXIS: "coverage", record.COVERAGE_FLAGS: str(len(found))}) if log else None
    if verbose:
        for g in groups:
            print(f"== {g['name']}: " + ", ".join(f"{s} alpha {e['alpha']:.3g}" for s, e in g["exponents"].items()))
        for f in found:
            print("   FLAG " + coverage.describe(f))
        print(f"wrote {out / 'fits.json'}, {out / 'report.md'} and {len(groups)} plots"
              + (f"; MLflow analysis run {run_id}" if run_id else ""))
    return {"groups": groups, "flags": found, "run_id": run_id, "out": str(out)}


def _json(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)


def _coverage_markdown(experiment: str, metric: str, groups: list[dict]) -> str:
    lines = [f"# Coverage analysis of {experiment} ({metric})", "",
             "Loss over the training-set size D for each subset strategy at fixed model size, the power-law "
             "exponent alpha of each curve (L = (x0/D)^alpha, 95% bootstrap CI), and where more diverse data "
             "raised the loss (one-sided t-tests paired over seeds, family-wise error "
             f"{coverage.ALPHA:.0%} by Holm's method; a subset counts as more diverse when its diversity is ≥ "
             f"{coverage.MIN_GAIN:.0%} higher). Diversity: RMS distance of the subset's composition/structure "
             "descriptors to their centroid.", ""]
    for g in groups:
        lines += [f"## {g['name']}", "", "| D | strategy | loss | ± std | seeds | diversity | elements |",
                  "|---|---|---|---|---|---|---|"]
        for row in sorted(g["table"], key=lambda r: (r["n_train"], r["subset"])):
            lines.append(f"| {int(row['n_train'])} | {row['subset']} | {fmt(row['loss'])} | {fmt(transfer.finite(row['std']))} | "
                         f"{int(row['seeds'])} | {fmt(transfer.finite(row['diversity']))} | {fmt(transfer.finite(row['elements']))} |")
        lines.append("")
        for s, e in g["exponents"].items():
            lines.append(f"- `{s}`: alpha = {e['alpha']:.3g} (CI [{fmt(e['ci'][0])}, {fmt(e['ci'][1])}])")
        lines += [f"- FLAG: {coverage.describe(f)}" for f in g["flags"]] or ["- No strategy or size raised the loss "
                                                                              "beyond the seed noise."]
        lines += ["", f"![{g['name']}](plots/{g['plot']})", ""]
    return "\n".join(lines)


def _plot_coverage(title: str, rows, exps: dict, path: Path, ylabel: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for subset, sub in rows.groupby("subset"):
        sub = sub.sort_values("n_train")
        label = subset + (f" (α={exps[subset]['alpha']:.2g})" if subset in exps else "")
        ax.errorbar(sub["n_train"], sub["loss"], yerr=np.nan_to_num(sub["std"].to_numpy(float)), marker="o",
                    capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("D (training structures)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}: loss per subset strategy", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
