"""Targeted extra-resolution sweeps near breakpoints: fit → propose → launch → refit, round after round.

``refine_experiment`` reads an experiment written by ``matscale sweep``, fits every curve along the chosen axis,
asks :func:`analysis.propose.propose` for new axis values, and launches them as a new stage of the parent
sweep (same spec, other axis values: new data sizes are nested subsets of the same permutation, new parameter
counts are new widths) with tags ``matscale.stage=refine``, ``matscale.round`` and ``matscale.parent_sweep``.
Every round leaves an ``analysis`` run with its fit and proposal. It stops when every break's CI half-width is
≤ ``until_ci`` decades, the trial budget is spent, or ``max_rounds`` rounds (counting earlier invocations) are
done — so re-running a finished refinement launches nothing.

Each curve's verdict is analyze's (:func:`analysis.fit.choose_law` on the same fits): a curve whose AICc winner
has no break gets no new points unless ``law`` assumes a broken form, and a broken winner's break and CI are the
numbers ``analyze`` prints (the same 1000 resamples, seed 0). Before launching (and in a dry run) it states the
trials a round launches and their estimated time (:func:`round_estimate`, with the dry run's estimator).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from analysis.fit import make_curve
from analysis.propose import propose
from analysis.report import safe_name
from analysis.runs import aggregate, load_runs
from gnn.errors import InputError
from sweeps import record, tracking
from sweeps.spec import Spec, duration, sci, validate


def parent_spec(c, exp_id: str) -> tuple[Spec, str]:
    """The spec of the newest grid sweep in the experiment (from its parent run's artifact)."""
    import yaml

    runs = tracking.search_all(c, [exp_id], record.runs_filter(record.KIND_SWEEP, stage=record.STAGE_GRID))
    if not runs:
        raise InputError("the experiment has no grid sweep to refine", field="experiment")
    run = max(runs, key=lambda r: r.info.start_time)
    with tempfile.TemporaryDirectory() as d:
        path = c.download_artifacts(run.info.run_id, "spec.yaml", d)
        raw = yaml.safe_load(Path(path).read_text())
    for key in ("path",):
        raw.pop(key, None)
    sweep_id = run.data.tags.get(record.SWEEP_ID, "")
    return validate(raw, f"spec of sweep {sweep_id}"), sweep_id


def rounds_done(c, exp_id: str) -> int:
    runs = tracking.search_all(c, [exp_id], record.runs_filter(record.KIND_ANALYSIS, stage=record.STAGE_REFINE))
    return max((int(r.data.tags.get(record.ROUND, 0)) for r in runs), default=0)


def _groups(best, axis: str):
    if axis == "data":
        for (arch, n), sub in best.groupby(["arch", "n_params_target"]):
            yield f"{arch} N={sci(n)}", {"arch": arch, "n_params": float(n)}, sub["n_train"].to_numpy(float), sub
    else:
        for (arch, d), sub in best.groupby(["arch", "n_train"]):
            yield f"{arch} D={int(d)}", {"arch": arch, "n_train": int(d)}, sub["n_params_target"].to_numpy(float), sub


def refine_experiment(experiment: str, tracking_uri: str, *, axis: str = "data", points: int = 3,
                      seeds: int | None = None, budget: int | None = None, until_ci: float = 0.1,
                      max_rounds: int = 3, dry_run: bool = False, address: str | None = "local",
                      metric: str = "val_loss", n_boot: int = 1000, seed: int = 0, law: str = "auto",
                      progress: bool = True, out=print) -> dict:
    """Run refinement rounds (see the module docstring); returns every round's proposals and outcome."""
    if axis not in ("data", "params"):
        raise InputError(f"axis must be data or params, got {axis!r}", field="axis")
    uri = tracking.normalise_uri(tracking_uri)
    c = tracking.client(uri)
    history, spent = [], 0
    while True:
        df, exp_id = load_runs(uri, experiment)
        best, _, _ = aggregate(df, metric)
        if (best["subset"] != "random").any() or (best["source_n"] > 0).any():
            raise InputError("refine works on data and parameter sweeps; this experiment has coverage subsets or "
                             "transfer points", field="experiment")
        spec, parent_sweep = parent_spec(c, exp_id)
        spec.tracking_uri = uri
        done = rounds_done(c, exp_id)
        if done >= max_rounds:
            out(f"{done} refinement rounds already done (--max-rounds {max_rounds}); nothing to launch")
            return {"rounds": history, "status": "max_rounds", "rounds_done": done}
        seed_list = _seeds(spec, seeds)
        proposals, blocks, states = _propose_round(best, spec, axis, metric, points, seed_list, done + 1, n_boot,
                                                   seed, law, until_ci, out)
        tpp = spec.hpo["trials_per_point"]
        new = [(n_params, n_train, len(b["seeds"]) * tpp) for bs in blocks.values() for b in bs
               for n_params in b["n_params"] for n_train in b["n_train"]]
        cost = sum(count for *_, count in new)
        estimate = round_estimate(spec, blocks, experiment, done + 1) if new else None
        if not blocks:
            status = _idle_status(states, until_ci, law, out)
            if dry_run:
                out("dry run: would launch 0 trials")
            return {"rounds": history, "status": status, "proposals": proposals, "trials": 0}
        plan = (f"{cost} trials ({len(new)} new axis values × {len(seed_list)} seeds × {tpp} HPO "
                f"trial{'s' if tpp != 1 else ''} per value"
                f"{f', {len(blocks)} architectures' if len(blocks) > 1 else ''})" + _estimate_text(estimate))
        if budget is not None and spent + cost > budget:
            out(f"the next round needs {plan}; {budget - spent} trials of the budget are left; stopping")
            return {"rounds": history, "status": "budget", "proposals": proposals, "trials": cost,
                    "estimate": estimate}
        if dry_run:
            out(f"dry run: would launch {plan}; nothing launched")
            return {"rounds": history, "status": "dry_run", "proposals": proposals, "trials": cost,
                    "estimate": estimate}
        out(f"round {done + 1}: launching {plan}")
        statuses = _launch_round(spec, blocks, experiment, done + 1, parent_sweep, address, progress)
        spent += cost
        _log_round(c, exp_id, done + 1, proposals)
        history.append({"round": done + 1, "proposals": proposals, "trials": cost, "estimate": estimate,
                        "status": statuses})
        bad = [st for st in statuses if st not in (record.FINISHED, "NOTHING_TO_DO")]
        if bad:
            return {"rounds": history, "status": bad[0]}


def _idle_status(states: list[str], until_ci: float, law: str, out) -> str:
    """Why a round launches nothing, said once: ``converged``, ``no_break`` or ``exhausted``."""
    if "exhausted" in states:
        return "exhausted"
    if "converged" in states:
        rest = states.count("no_break")
        out(f"every break is within ±{until_ci} decades" + (f" ({rest} curves have none)" if rest else "") + "; done")
        return "converged"
    out("nothing to refine: AICc prefers a law without a break for every curve"
        + (" (--law broken or broken_amp proposes points that test for one)" if law == "auto" else ""))
    return "no_break"


def _refine_specs(spec: Spec, blocks: dict, experiment: str, round_no: int) -> list[Spec]:
    """One refine spec per architecture: the parent sweep's spec with the round's axes blocks."""
    out = []
    for arch, arch_blocks in blocks.items():
        refine_spec = validate({**spec.as_dict(), "axes": arch_blocks, "archs": [arch]},
                               f"refine round {round_no} of {experiment}")
        refine_spec.tracking_uri = spec.tracking_uri
        out.append(refine_spec)
    return out


def round_estimate(spec: Spec, blocks: dict, experiment: str, round_no: int) -> dict | None:
    """The trial time a round would take, as ``matscale sweep --dry-run`` estimates it (:mod:`sweeps.estimate`:
    from this experiment's finished trials of the same model, else a few timed steps here): ``{"seconds",
    "notes"}``, summed over the round's trials at their full budget; None where a time is unknown."""
    from gnn.splits import grouped_split
    from gnn.store import Store
    from sweeps import estimate
    from sweeps.driver import prepare_store

    history = estimate.from_runs(spec)
    store = prepare_store(spec, progress=False)
    train_size = len(grouped_split(Store(store).formulas)["train"])
    seconds, notes = 0.0, []
    for refine_spec in _refine_specs(spec, blocks, experiment, round_no):
        points = refine_spec.points(train_size)
        times = estimate.estimate(refine_spec, points, history, store, None)
        if any(t is None for t in times.trial_s):
            return None
        seconds += sum(times.trial_s) * refine_spec.hpo["trials_per_point"]
        notes += [n for n in times.notes if n not in notes]
    return {"seconds": float(seconds), "notes": notes}


def _estimate_text(est: dict | None) -> str:
    if est is None:
        return "; no time estimate (no finished trial of the same model, and it could not be timed here)"
    return (f", about {duration(est['seconds'])} of trial time (summed over trials, each at its full budget; "
            f"side by side they finish sooner; {est['notes'][0] if est['notes'] else ''})")


def _seeds(spec: Spec, seeds: int | None) -> list[int]:
    """The seeds of each new axis value: the parent sweep's first ``seeds`` (all by default), more if asked."""
    n = seeds or len(spec.seeds)
    return spec.seeds[:n] if n <= len(spec.seeds) else list(range(n))


def _propose_round(best, spec: Spec, axis: str, metric: str, points: int, seed_list: list[int], round_no: int,
                   n_boot: int, seed: int, law: str, until_ci: float, out) -> tuple[list[dict], dict, list[str]]:
    """Fit every curve as analyze does and propose its new axis values: ``(proposals, axes blocks per arch, state
    per curve)``, a state being ``open`` (points proposed), ``converged`` (its break is within ``until_ci``
    decades), ``no_break`` (AICc prefers a law without one, nothing asked) or ``exhausted`` (points wanted, none
    left to propose)."""
    from gnn.splits import grouped_split
    from gnn.store import Store
    from sweeps.driver import prepare_store

    train_size = len(grouped_split(Store(prepare_store(spec, progress=False)).formulas)["train"])
    proposals, blocks, states = [], {}, []
    for name, fixed, x, sub in _groups(best, axis):
        curve = make_curve(x, sub[metric].to_numpy(float))
        bounds = (x.min(), float(train_size)) if axis == "data" else (x.min() / 2, x.max() * 2)
        prop = propose(curve, points, bounds, n_boot=n_boot, seed=seed, integer=True, law=law)
        proposals.append({"group": name, **prop.as_dict()})
        news = f" → new x {[int(p) for p in prop.points]}" if prop.points else ""
        if prop.predicted_half_width is not None:
            news += f", predicted ±{prop.predicted_half_width:.3f} decades"
        out(f"round {round_no} {name}: {prop.reason}{news}")
        if prop.half_width is not None and prop.half_width <= until_ci:
            states.append("converged")
            continue
        if prop.design is None:  # nothing to decide: no break by AICc, or too few points for a broken law
            states.append("no_break" if prop.verdict == "no break" and prop.break_x is None else "exhausted")
            continue
        if not prop.points:  # every candidate value is already measured (integer data sizes run out)
            out(f"round {round_no} {name}: no unmeasured axis value is left to propose")
            states.append("exhausted")
            continue
        states.append("open")
        if axis == "data":
            block = {"n_train": [int(p) for p in prop.points], "n_params": [fixed["n_params"]], "seeds": seed_list}
        else:
            block = {"n_train": [fixed["n_train"]], "n_params": [float(p) for p in prop.points], "seeds": seed_list}
        blocks.setdefault(fixed["arch"], []).append(block)
    return proposals, blocks, states


def _launch_round(spec: Spec, blocks: dict, experiment: str, round_no: int, parent_sweep: str,
                  address: str | None, progress: bool) -> list[str]:
    """One refine sweep per architecture, tagged with the round and the grid sweep it refines; their statuses."""
    from sweeps.driver import run_sweep

    tags = {record.ROUND: str(round_no), record.PARENT_SWEEP: parent_sweep}
    statuses = []
    for refine_spec in _refine_specs(spec, blocks, experiment, round_no):
        summary = run_sweep(refine_spec, address=address, stage=record.STAGE_REFINE, extra_tags=tags,
                            progress=progress)
        statuses.append(summary["status"])
    return statuses


def _log_round(c, exp_id: str, round_no: int, proposals: list[dict]) -> None:
    """The round's analysis run: its fit and proposal, so the UI shows how the interval shrank."""
    run = c.create_run(exp_id, run_name=f"refine-round-{round_no}", tags={
        record.KIND: record.KIND_ANALYSIS, record.STAGE: record.STAGE_REFINE, record.ROUND: str(round_no)})
    metrics = {}
    for p in proposals:
        key = safe_name(p["group"])
        if p["break_x"] is not None:
            metrics[f"{key}/break"] = p["break_x"]
            metrics[f"{key}/break_ci_lo"], metrics[f"{key}/break_ci_hi"] = p["break_ci"]
            metrics[f"{key}/half_width_decades"] = p["half_width"]
        if p["delta_aicc"] is not None:
            metrics[f"{key}/delta_aicc"] = p["delta_aicc"]
        if p["predicted_half_width"] is not None:
            metrics[f"{key}/predicted_half_width_decades"] = p["predicted_half_width"]
    metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    tracking.log_batch(c, run.info.run_id, metrics=metrics, params={"round": round_no})
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "proposal.json").write_text(json.dumps(proposals, indent=1, default=float))
        c.log_artifact(run.info.run_id, str(Path(d) / "proposal.json"))
    c.set_terminated(run.info.run_id, record.FINISHED)
