"""The command line a first-time user meets: every option explained, `matscale ui`, and a sweep's console output
that stays short in a log (one progress display instead of Ray's per-trial tables)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from waiting import wait_for

CLI = [sys.executable, "-m", "analysis.cli"]


def _options(parser: argparse.ArgumentParser, path: list[str]):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, path + [name])
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), "/".join(action.option_strings) or action.dest, action.help


def test_every_option_has_help():
    from analysis.cli import build_parser

    options = list(_options(build_parser(), ["matscale"]))
    assert len(options) > 80
    assert [f"{cmd} {opt}" for cmd, opt, text in options if not text] == []


def test_ui_without_a_store_is_one_line_and_creates_nothing(tmp_path):
    db = tmp_path / "none" / "mlflow.db"
    res = subprocess.run(CLI + ["ui", "--tracking-uri", f"sqlite:///{db}"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "there is no MLflow store at" in res.stderr
    assert list(tmp_path.iterdir()) == []


def _tiny_spec(folder: Path) -> Path:
    spec = {"experiment": "quiet", "description": "a tiny sweep whose console output is counted",
            "dataset": {"synthetic": {"n": 300, "points": 21, "seed": 0}, "data_dir": str(folder / "data")},
            "archs": ["cgc"], "axes": {"data_fractions": [0.5, 1.0], "n_params": [1.0e4], "seeds": [0, 1]},
            "budget": {"epochs": 2, "patience": 5},
            "hpo": {"trials_per_point": 2, "space": {"lr": {"log_uniform": [1.0e-3, 3.0e-3]}, "batch_size": 32}},
            "system_metrics": False, "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
            "storage_path": str(folder / "ray")}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_a_sweep_in_a_log_is_short_and_ui_opens_on_its_runs(tmp_path):
    """8 trials into a pipe (not a terminal): a handful of lines, none of Ray's tables or checkpoint paths; then
    `matscale ui` serves the store and its address opens the experiment."""
    path = _tiny_spec(tmp_path)
    res = subprocess.run(CLI + ["sweep", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         cwd=tmp_path, timeout=900)
    lines = res.stdout.splitlines()
    assert res.returncode == 0, res.stdout[-3000:]
    assert len(lines) <= 25, res.stdout
    for noise in ("Checkpoint successfully created", "tensorboard", "╭", "Trial status", "View detailed results"):
        assert noise not in res.stdout
    assert any(line.startswith("trials 8/8 done (0 running, 0 pending)") for line in lines)
    assert "8 trials: 8 FINISHED" in lines

    ui = subprocess.Popen(CLI + ["ui", "--experiment", "quiet", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path,
                          start_new_session=True)
    try:
        first = ui.stdout.readline()
        assert first.startswith("MLflow UI: http://127.0.0.1:") and "/#/experiments/" in first
        url = first.split()[2]
        base, exp_id = url.split("/#/")[0], url.split("/experiments/")[1].split("/")[0]
        wait_for(lambda: urllib.request.urlopen(base + "/health", timeout=2).read() == b"OK", 120)
        body = urllib.request.urlopen(f"{base}/ajax-api/2.0/mlflow/experiments/get?experiment_id={exp_id}",
                                      timeout=10).read().decode()
        assert '"name": "quiet"' in body or '"name":"quiet"' in body
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
