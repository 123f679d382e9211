"""Shared fixtures: the real data in ../shared/data (or $MATSCALE_SHARED_DATA) and a small synthetic store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    env = os.environ.get("MATSCALE_SHARED_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


#: what MLflow or matscale would leave in the working folder when a test forgets to use a temporary one
STRAY = ("mlruns", "mlartifacts", "mlflow.db", "runs", "runs/mlflow.db", "analysis-out", "ray_results")


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_clean():
    """Tests write only to temporary folders: a session that adds MLflow's default artifact folder (./mlruns), a
    default store or an output folder to the checkout fails at its end, naming it."""
    before = {name for name in STRAY if (ROOT / name).exists()}
    yield
    added = [name for name in STRAY if name not in before and (ROOT / name).exists()]
    assert not added, f"the tests wrote {', '.join(added)} into the checkout {ROOT}: use tmp_path"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: put ../shared/data beside the checkout or set MATSCALE_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """300 synthetic metals on 41 frequency points, graphs built (shared by the tests of a session)."""
    from gnn.synth import synth_store

    return synth_store(300, tmp_path_factory.mktemp("synth") / "store", points=41, seed=1, progress=False)
