"""Outputs of an analysis: plots, ``report.md``, ``fits.json``, and an ``analysis`` run in MLflow."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from analysis.fit import Curve
from analysis.laws import make_law


def safe_name(name: str) -> str:
    """A group name usable in file names and MLflow metric keys (e.g. ``cgc N=1e4`` → ``cgc_N1e4``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("=", ""))


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported on first use: plotting is optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curve(title: str, curve: Curve, result: dict, path: Path, xlabel: str, ylabel: str) -> None:
    """Log-log means ± seed std, every candidate law, the breakpoint CI band, and residuals of the winner."""
    plt = pyplot()
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    err = np.nan_to_num(curve.std)
    ax.errorbar(curve.x, curve.y, yerr=err, fmt="o", color="k", capsize=3, label="seed mean ± std", zorder=5)
    grid = np.logspace(np.log10(curve.x.min()) - 0.15, np.log10(curve.x.max()) + 0.3, 300)
    xs, _ = curve.spans()
    for cand in result["candidates"]:
        law = make_law(cand["law"], xs, (0.0, 0.0))
        with np.errstate(all="ignore"):
            yv = law.predict(grid, cand["params"])
        win = cand["law"] == result["law"]
        aicc = f"{cand['aicc']:.1f}" if isinstance(cand["aicc"], float) else "– (too few points)"
        ax.plot(grid, yv, lw=2.2 if win else 1.0, ls="-" if win else "--",
                label=f"{cand['law']} (AICc {aicc}){' ★' if win else ''}")
    for bp in result.get("breakpoints", []):
        if bp["x"] is not None:
            ax.axvline(bp["x"], color="tab:red", lw=1)
            if None not in bp["ci"]:
                ax.axvspan(*bp["ci"], color="tab:red", alpha=0.12, label="break (95% CI)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    win = make_law(result["law"], xs, (0.0, 0.0))
    with np.errstate(all="ignore"):
        resid = (curve.y - win.predict(curve.x, result["params"])) / curve.y
    rax.axhline(0, color="0.5", lw=0.8)
    rax.plot(curve.x, 100 * resid, "o", color="k")
    rax.set_ylabel("resid. %")
    rax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_grid(title: str, curve: Curve, result: dict, path: Path) -> None:
    """Heat map of the joint law over (N, D) with iso-loss contours, the observed points and the frontier."""
    plt = pyplot()
    xs, x2s = curve.spans()
    law = make_law(result["law"], xs, (0.0, 0.0), x2s)
    n = np.logspace(xs[0] - 0.2, xs[1] + 0.2, 120)
    d = np.logspace(x2s[0] - 0.2, x2s[1] + 0.2, 120)
    nn, dd = np.meshgrid(n, d)
    with np.errstate(all="ignore"):
        z = law.predict((nn.ravel(), dd.ravel()), result["params"]).reshape(nn.shape)
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    mesh = ax.pcolormesh(nn, dd, np.log10(z), shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="log10 loss")
    cs = ax.contour(nn, dd, z, levels=8, colors="w", linewidths=0.7)
    ax.clabel(cs, fontsize=7, fmt="%.3g")
    regimes = result.get("regimes", {})
    for p in regimes.get("points", []):
        ax.plot(p["N"], p["D"], "o", color="tab:red" if p["regime"] == "data-limited" else "tab:orange", ms=5)
    fr = result.get("frontier")
    if fr:  # the compute-optimal path N*(C), D*(C) over the plotted range, and the point the verdict is about
        _plot_frontier(ax, law, result["params"], fr, n, d)
    else:
        front = [(f["N"], f["D"]) for f in regimes.get("frontier", []) if f["D"]]
        if front:
            ax.plot(*zip(*front), color="tab:red", lw=2, label="frontier: equal gain from 2×N and 2×D")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("D (training structures)")
    ax.set_title(f"{title}: {result['law']} (red: data-limited, orange: model-limited)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_frontier(ax, law, params: dict, fr: dict, n: np.ndarray, d: np.ndarray) -> None:
    from analysis import frontier
    from analysis.frontier import Cost

    cost = Cost(fr["cost"]["expr"])
    corners = cost(np.array([n[0], n[-1]]), np.array([d[0], d[-1]]))
    budgets = np.logspace(np.log10(corners[0]), np.log10(corners[1]), 40)
    row = np.array([[params[k] for k in law.names]])
    n_s, d_s, _ = frontier.optimum(law, row, cost, budgets, (np.log10(n[0]), np.log10(n[-1])))
    inside = (n_s[0] >= n[0]) & (n_s[0] <= n[-1]) & (d_s[0] >= d[0]) & (d_s[0] <= d[-1])
    ax.plot(n_s[0][inside], d_s[0][inside], color="tab:red", lw=2, label=f"compute-optimal N*(C), D*(C), C = "
            f"{fr['cost']['model']}")
    v = fr["verdict"]
    ax.plot(v["N"], v["D"], "*", color="white", mec="black", ms=13, label=f"best measured: {v['verdict']}")


def fmt(v) -> str:
    """A number for a report: 4 significant digits, ``–`` for a missing one."""
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v:.4g}"


def markdown(title: str, groups: list[dict], problems: list[dict], flagged: list[dict]) -> str:
    """The human-readable report: every candidate per group (one the points do not determine as "not enough
    points for this law"), the model choice in ``refine``'s words, the winner with CIs, and the answers."""
    from analysis.scaling import break_line, not_enough_text, saturation_text

    lines = [f"# {title}", "", f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}.", ""]
    for g in groups:
        r = g["result"]
        choice = f" {r['choice']['verdict'].capitalize()}: {r['choice']['summary']}." if r.get("choice") else ""
        lines += [f"## {g['name']}", "", f"{r['n_points']} points from {r['n_runs']} runs; objective "
                  f"{r['objective']}; {r['n_boot']} bootstrap resamples; winner by AICc: **{r['law']}** "
                  f"(`{r['formula']}`).{choice}", "", "| law | AICc | RMSLE (held out) | parameters |",
                  "|---|---|---|---|"]
        for c in r["candidates"]:
            missing = not_enough_text(c)
            if missing:
                lines.append(f"| {c['law']} | – | – | {missing} |")
                continue
            ps = ", ".join(f"{k}={fmt(v)}" for k, v in c["params"].items())
            lines.append(f"| {c['law']} | {fmt(c['aicc'])} | {fmt(c['rmsle_holdout'])} | {ps} |")
        lines += ["", "| parameter | value | std. error | 95% CI |", "|---|---|---|---|"]
        for k, v in r["params"].items():
            ci = r["ci"].get(k, [None, None])
            lines.append(f"| {k} | {fmt(v)} | {fmt(r['stderr'].get(k))} | [{fmt(ci[0])}, {fmt(ci[1])}] |")
        lines.append("")
        for bp in r.get("breakpoints", []):
            text = break_line(bp)
            lines.append(f"- {text[0].upper()}{text[1:]}.")
        sat = r.get("saturation")
        if sat:
            lines.append(f"- Saturation: {saturation_text(sat, fmt)}.")
        if r.get("doubling"):
            dbl = r["doubling"]
            lines.append(f"- Doubling x from {fmt(dbl['x'])} lowers the loss by {fmt(100 * dbl['value'])} % "
                         f"(CI [{fmt(100 * dbl['ci'][0]) if dbl['ci'][0] is not None else '–'}, "
                         f"{fmt(100 * dbl['ci'][1]) if dbl['ci'][1] is not None else '–'}] %).")
        if r.get("target"):
            t = r["target"]
            lines.append(f"- Loss {t['loss']} needs x = {fmt(t['x'])} (CI [{fmt(t['ci'][0])}, {fmt(t['ci'][1])}])"
                         if t["reachable"] else f"- Loss {t['loss']} is unreachable: below the fitted asymptote.")
        if r.get("regimes"):
            pts = r["regimes"]["points"]
            n_data = sum(p["regime"] == "data-limited" for p in pts)
            lines.append(f"- {n_data} of {len(pts)} grid points are data-limited (doubling D buys more than "
                         f"doubling N); the rest are model-limited. The frontier is in fits.json and the heat map.")
        if r.get("frontier"):
            from analysis.frontier import text as frontier_text

            lines += ["", "Compute-optimal allocation (95 % CIs):", ""]
            lines += [f"- {line.strip()}" for line in frontier_text(r["frontier"], fmt)]
        lines += ["", f"![{g['name']}](plots/{g['plot']})", ""]
    if flagged:
        lines += ["## Points with seed spread above 5 %", ""] + [f"- {f}" for f in flagged] + [""]
    if problems:
        lines += ["## Failed or unfinished runs", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(lines)


def write_outputs(out: Path, title: str, groups: list[dict], problems: list[dict], flagged: list[dict]) -> None:
    """fits.json and report.md, written atomically (plots are already in out/plots)."""
    payload = {"title": title, "groups": [{"name": g["name"], "axis": g["axis"], **g["result"]} for g in groups],
               "problems": problems, "flagged": flagged}
    write_files(out, {"fits.json": json.dumps(payload, indent=1, default=str),
                      "report.md": markdown(title, groups, problems, flagged)})


def write_files(out: Path, files: dict[str, str]) -> None:
    """Write text files into ``out``, each through a temporary file and a rename."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out / name)


def report_html(md: str, folder: Path) -> str:
    """``report.md`` (the markdown that :func:`markdown` and the variant reports write) as one self-contained HTML
    page for MLflow's artifact viewer, which renders HTML and images but shows markdown as raw text: headings,
    paragraphs, lists, tables, ``**bold**`` and ``code``, and each ``![alt](plots/…png)`` as the image itself,
    embedded (``folder`` is where the links point from), so the page needs no other artifact."""
    import base64
    import html

    def inline(text: str) -> str:
        text = html.escape(text, quote=False)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)

    def image(alt: str, src: str) -> str:
        path = (folder / src).resolve()
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".gif", ".svg") or not path.is_file():
            return f"<p>[{html.escape(alt)}: {html.escape(src)} missing]</p>"
        mime = {"jpg": "jpeg", "svg": "svg+xml"}.get(path.suffix[1:].lower(), path.suffix[1:].lower())
        data = base64.b64encode(path.read_bytes()).decode()
        return (f'<figure><img src="data:image/{mime};base64,{data}" alt="{html.escape(alt)}">'
                f"<figcaption>{html.escape(alt)} (<code>{html.escape(src)}</code>)</figcaption></figure>")

    def row(line: str, cell: str) -> str:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        return "<tr>" + "".join(f"<{cell}>{inline(c)}</{cell}>" for c in cells) + "</tr>"

    body, title, lines, i = [], "report", md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        picture = re.fullmatch(r"\s*!\[([^\]]*)\]\(([^)\s]+)\)\s*", line)
        if not line.strip():
            i += 1
        elif heading:
            level = len(heading.group(1))
            title = heading.group(2) if level == 1 and title == "report" else title
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
            i += 1
        elif picture:
            body.append(image(*picture.groups()))
            i += 1
        elif line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            rule = len(block) > 1 and re.fullmatch(r"[\s|:-]+", block[1])
            head, rest = (block[:1], block[2:]) if rule else ([], block)
            body.append("<table>" + "".join(row(r, "th") for r in head) + "".join(row(r, "td") for r in rest)
                        + "</table>")
        elif re.match(r"\s*[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                items.append(f"<li>{inline(lines[i].lstrip()[2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"#|\s*[-*] |\s*\||\s*!\[", lines[i]):
                para.append(lines[i].strip())
                i += 1
            body.append(f"<p>{inline(' '.join(para))}</p>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;padding:0 1rem;color:#1f272d;"
             "line-height:1.45}table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid "
             "#ccd;padding:.25rem .55rem;text-align:left}th{background:#f1f3f6}code{background:#f1f3f6;padding:0 "
             ".2rem;border-radius:3px}figure{margin:1rem 0}img{max-width:100%;height:auto}figcaption{font-size:.85rem;"
             "color:#5f6b76}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def analysis_note(groups: list[dict], metric: str) -> str:
    """An analysis run's description in the MLflow UI (markdown): the winning law of every group, and where the
    report and the plots are."""
    winners = [f"- {g['name']}: **{g['result'].get('law', '?')}**" for g in groups[:20]]
    more = [f"- … and {len(groups) - 20} more"] if len(groups) > 20 else []
    return "\n".join([f"Scaling laws of `{metric}` fitted to this experiment's trials; winner by AICc per curve:", "",
                      *winners, *more, "", "Open `report.html` under *Artifacts* for the tables, CIs and plots "
                      "(`plots/` holds the PNGs, `fits.json` every number)."])


def log_analysis_run(tracking_uri: str, experiment_id: str, out: Path, groups: list[dict], metric: str,
                     tags: dict | None = None) -> str | None:
    """An ``analysis`` run in the experiment: winners as params, fitted values and CIs as metrics, files as artifacts.

    None, after a one-line warning, when the store takes no writes (a read-only folder or user): the files in
    ``out`` are the analysis, the run only mirrors them.
    """
    from analysis.runs import failure
    from sweeps import tracking

    read_only = _read_only_store(tracking_uri)
    if read_only:
        print(f"warning: the analysis is in {out} but was not logged to {tracking.redact_uri(tracking_uri)} "
              f"({read_only})", file=sys.stderr)
        return None
    try:
        return _log_analysis_run(tracking.client(tracking.normalise_uri(tracking_uri)), experiment_id, out, groups,
                                 metric, tags)
    except Exception as exc:  # noqa: BLE001 - any backend failure: the analysis itself is done
        print(f"warning: the analysis is in {out} but was not logged to {tracking.redact_uri(tracking_uri)} "
              f"({failure(exc)})", file=sys.stderr)
        return None


def _read_only_store(tracking_uri: str) -> str | None:
    """Why a local SQLite store takes no writes (its file or folder is read-only; SQLite writes a journal beside
    the file), else None: asked before writing, since MLflow logs a traceback of every failed SQL write."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///"):].split("?", 1)[0]).resolve()
    return next((f"{p} is read-only" for p in (db, db.parent) if not os.access(p, os.W_OK)), None)


def _log_analysis_run(c, experiment_id: str, out: Path, groups: list[dict], metric: str, tags: dict | None) -> str:
    """:func:`log_analysis_run` through the client ``c``."""
    from sweeps import record, tracking

    run = c.create_run(experiment_id, run_name=f"analysis-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}",
                       tags={record.KIND: record.KIND_ANALYSIS, record.STAGE: record.STAGE_ANALYSIS, **(tags or {})})
    params, metrics = {"metric": metric}, {}
    for g in groups:
        key = safe_name(g["name"])
        r = g["result"]
        params[f"{key}.law"] = r["law"]
        if isinstance(r["aicc"], float):
            metrics[f"{key}/aicc"] = r["aicc"]
        for p, v in r["params"].items():
            metrics[f"{key}/{p}"] = v
            lo, hi = r["ci"].get(p, [None, None])
            if lo is not None and hi is not None:
                metrics[f"{key}/{p}_ci_lo"], metrics[f"{key}/{p}_ci_hi"] = lo, hi
        for i, bp in enumerate(r.get("breakpoints", [])):
            if bp["x"] is not None:
                metrics[f"{key}/break{i + 1}"] = bp["x"]
        fr = r.get("frontier")
        if fr:
            params[f"{key}.verdict"] = fr["verdict"]["verdict"]
            params[f"{key}.cost"] = fr["cost"]["model"]
            for name, a in (("frontier_a", fr["a"]), ("frontier_b", fr["b"]), ("gain_ratio", fr["verdict"]["ratio"])):
                metrics[f"{key}/{name}"] = a["value"]
                metrics[f"{key}/{name}_ci_lo"], metrics[f"{key}/{name}_ci_hi"] = a["ci"]
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    tracking.log_batch(c, run.info.run_id, metrics=metrics, params=params,
                       tags={record.NOTE: analysis_note(groups, metric)})
    c.log_artifacts(run.info.run_id, str(out))
    if (out / "report.md").is_file():  # the artifact viewer renders HTML (plots embedded), not markdown
        with tempfile.TemporaryDirectory() as d:
            page = Path(d) / "report.html"
            page.write_text(report_html((out / "report.md").read_text(), out))
            c.log_artifact(run.info.run_id, str(page))
    c.set_terminated(run.info.run_id, record.FINISHED)
    return run.info.run_id
