"""What a user sees in the MLflow UI, and where a study's files go.

An experiment a sweep uses opens on its runs (``mlflow.experimentKind = custom_model_development``, else MLflow 3
opens an empty GenAI traces page) and carries the spec's description; a local SQLite store keeps its artifacts
beside itself (``DIR/mlartifacts/<experiment>``), never in the working folder (MLflow's default ``./mlruns``); a
finished trial says its ``val_loss`` in its description; an analysis run holds ``report.html`` with its plots
embedded (the artifact viewer shows markdown as raw text) and the learning curve has readable ticks.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import yaml

from sweeps import record, tracking


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_sqlite_stores_experiments_keep_their_artifacts_beside_it(tmp_path):
    db = tmp_path / "study" / "mlflow.db"
    assert tracking.default_artifact_location(f"sqlite:///{db}", "matscale-demo") == \
        (tmp_path / "study" / "mlartifacts" / "matscale-demo").as_uri()
    odd = tracking.default_artifact_location(f"sqlite:///{db}", "my study/v2")
    assert odd.startswith((tmp_path / "study" / "mlartifacts").as_uri() + "/my_study_v2-")
    assert odd != tracking.default_artifact_location(f"sqlite:///{db}", "my study_v2")  # never one folder for two
    for uri in ("http://127.0.0.1:5000", "https://u:p@mlflow.lab", "postgresql://u:p@db/mlflow"):
        assert tracking.default_artifact_location(uri, "x") is None  # the server decides (--serve-artifacts)


@pytest.fixture()
def in_empty_cwd(tmp_path, monkeypatch) -> Path:
    """The working folder is an empty temporary one, which each test checks stays empty."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_experiment_id_tags_new_and_reused_experiments_once(tmp_path, in_empty_cwd):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    tags = {record.EXPERIMENT_KIND: record.EXPERIMENT_KIND_TRAINING, record.NOTE: tracking.experiment_note("About.")}
    view = {record.SAVED_VIEW + record.TRIALS_VIEW: "ours"}
    new = c.get_experiment(tracking.experiment_id(c, "fresh", tags=tags, defaults=view))
    assert new.artifact_location == tracking.default_artifact_location(uri, "fresh")
    assert {k: new.tags[k] for k in {**tags, **view}} == {**tags, **view}
    # an experiment made before (elsewhere; the user switched it to GenAI and edited our view): kind and note are
    # ours again, the user's view stays
    old_id = c.create_experiment("older", artifact_location=(tmp_path / "elsewhere").as_uri(),
                                 tags={record.EXPERIMENT_KIND: "genai_development",
                                       record.SAVED_VIEW + record.TRIALS_VIEW: "edited"})
    assert tracking.experiment_id(c, "older", tags=tags, defaults=view) == old_id
    old = c.get_experiment(old_id)
    assert {k: old.tags[k] for k in tags} == tags and old.artifact_location == (tmp_path / "elsewhere").as_uri()
    assert old.tags[record.SAVED_VIEW + record.TRIALS_VIEW] == "edited"

    class Spy:  # a second call writes nothing
        def __init__(self, c):
            self.c, self.writes = c, []

        def __getattr__(self, name):
            return getattr(self.c, name)

        def set_experiment_tag(self, *args):
            self.writes.append(args)

    spy = Spy(c)
    assert tracking.experiment_id(spy, "older", tags=tags, defaults=view) == old_id and spy.writes == []
    assert _files(in_empty_cwd) == []


def test_the_experiment_note_keeps_the_description_and_masks_passwords():
    note = tracking.experiment_note("Scaling of n on DFPT data, store at postgresql://u:hunter2@db/x.", "val_loss",
                                    "matscale trials")
    assert note.startswith("Scaling of n on DFPT data") and "hunter2" not in note
    assert "`val_loss`" in note and "*matscale trials*" in note and "report.html" in note
    assert tracking.trial_note({"val_loss": 0.43226, "n_params": 10104, "n_train": 300.0, "epochs": 12}) == \
        "val_loss 0.4323 · N 10,104 params · D 300 · 12 epochs"


def test_a_sweep_tags_its_experiment_and_puts_its_artifacts_beside_the_store(tmp_path, in_empty_cwd, synth_dir):
    from sweeps import driver
    from sweeps.spec import load_spec

    study = tmp_path / "study"
    study.mkdir()
    path = study / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "ui", "description": "Tiny study for the UI test.", "dataset": {"store": str(synth_dir)},
        "archs": ["cgc"], "axes": {"data_fractions": [1.0], "n_params": [1.0e4], "seeds": [0]},
        "budget": {"epochs": 1}, "hpo": {"trials_per_point": 1}, "system_metrics": False,
        "tracking_uri": "sqlite:///mlflow.db", "storage_path": str(study / "ray")}))
    spec = load_spec(path)
    spec.tracking_uri = f"sqlite:///{study / 'mlflow.db'}"
    for _ in range(2):  # a new experiment, then the same one reused by the next sweep
        sw = driver._prepare(spec, record.STAGE_GRID, {}, False, io.StringIO())
    c = tracking.client(tracking.normalise_uri(spec.tracking_uri))
    exp = c.get_experiment(sw.exp_id)
    assert exp.tags[record.EXPERIMENT_KIND] == record.EXPERIMENT_KIND_TRAINING
    assert exp.tags[record.NOTE].startswith("Tiny study for the UI test.")
    view = json.loads(exp.tags[record.SAVED_VIEW + record.TRIALS_VIEW])
    state = json.loads(view["state"])
    assert view["name"] == record.TRIALS_VIEW_NAME and state["searchFilter"] == record.runs_filter(record.KIND_TRIAL)
    assert state["selectedColumns"][0] == f"metrics.`{record.VAL_LOSS}`" and state["orderByAsc"] is True
    assert {"metrics.`n_params`", "metrics.`n_train`", "metrics.`seed`"} <= set(state["selectedColumns"])
    assert exp.artifact_location == (study / "mlartifacts" / "ui").as_uri()
    run = c.create_run(sw.exp_id)
    (tmp_path / "a.txt").write_text("x")
    c.log_artifact(run.info.run_id, str(tmp_path / "a.txt"))
    assert (study / "mlartifacts" / "ui" / run.info.run_id / "artifacts" / "a.txt").is_file()
    assert _files(in_empty_cwd) == []


def _fake_analysis(out: Path) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(parents=True)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.loglog([1, 10], [1, 0.5])
    fig.savefig(out / "plots" / "cgc_N1e4.png")
    plt.close(fig)
    (out / "report.md").write_text(
        "# Scaling analysis of x (val_loss)\n\nGenerated today.\n\n## cgc N=1e4\n\n4 points; winner **power** "
        "(`L = (x0/x)^alpha`).\n\n| law | AICc |\n|---|---|\n| power | -3.1 |\n| floor <x> | – |\n\n"
        "- Break at x = 1e3.\n- Saturation: none.\n\n![cgc N=1e4](plots/cgc_N1e4.png)\n")
    (out / "fits.json").write_text("{}")
    return [{"name": "cgc N=1e4", "result": {"law": "power", "aicc": -3.1, "params": {"alpha": 0.3},
                                             "ci": {"alpha": [0.2, 0.4]}}}]


def test_report_html_renders_the_markdown_with_its_plots_embedded(tmp_path):
    from analysis.report import report_html

    _fake_analysis(tmp_path)
    page = report_html((tmp_path / "report.md").read_text(), tmp_path)
    assert "<title>Scaling analysis of x (val_loss)</title>" in page and "<h2>cgc N=1e4</h2>" in page
    assert "<strong>power</strong>" in page and "<code>L = (x0/x)^alpha</code>" in page
    assert "<th>law</th>" in page and "<td>floor &lt;x&gt;</td>" in page and "|---|" not in page
    assert page.count("<li>") == 2
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{200,}" alt="cgc N=1e4">', page)
    assert "![" not in page


def test_an_analysis_run_logs_report_html_plots_and_a_description(tmp_path, in_empty_cwd):
    from analysis.report import log_analysis_run

    uri = f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}"
    exp_id = tracking.experiment_id(tracking.client(uri), "analysed")
    out = tmp_path / "out"
    groups = _fake_analysis(out)
    run_id = log_analysis_run(uri, exp_id, out, groups, "val_loss")
    c = tracking.client(uri)
    arts = {a.path for a in c.list_artifacts(run_id)} | {a.path for a in c.list_artifacts(run_id, "plots")}
    assert {"report.html", "report.md", "fits.json", "plots/cgc_N1e4.png"} <= arts
    note = c.get_run(run_id).data.tags[record.NOTE]
    assert "cgc N=1e4: **power**" in note and "report.html" in note
    assert (tmp_path / "study" / "mlartifacts" / "analysed" / run_id / "artifacts" / "report.html").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["fits.json", "plots", "report.md"]  # the folder is as it was
    assert _files(in_empty_cwd) == []


@pytest.mark.parametrize("low, high", [(0.62, 0.55), (0.5031, 0.5012), (1.5, 0.4), (8.0, 0.3), (50.0, 0.01)])
def test_the_learning_curve_has_several_readable_ticks(low, high):
    import matplotlib.pyplot as plt

    from sweeps.trial import _learning_curve_figure

    n = 12
    history = [{"epoch": i, "train_loss": low * (high / low) ** (i / (n - 1)),
                "val_loss": 1.02 * low * (high / low) ** (i / (n - 1))} for i in range(n)]
    fig = _learning_curve_figure(history)
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        lo, hi = ax.get_ylim()
        labels = [t.get_text() for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi and t.get_text()]
    finally:
        plt.close(fig)
    assert 3 <= len(labels) <= 8, labels
    assert len(set(labels)) == len(labels), labels  # enough digits to tell them apart
