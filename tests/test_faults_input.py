"""Bad input and corrupt data fail with one line naming the file, the entry, the field and the bad value.

Three kinds: sweep-spec values of the wrong type or range, crystal structures with overlapping atoms (every
reader), and damaged store files (``meta.json``, ``data.pt``, graph files). The CLI checks run the real
``matscale`` entry point, concurrently, once per module.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gnn.errors import InputError
from gnn.readers import import_store
from gnn.store import Store

# --------------------------------------------------------------------------------------------- sweep specs

PLAIN = {"experiment": "p", "dataset": {"synthetic": {"n": 100, "points": 11}}, "archs": ["cgc"],
         "axes": {"n_train": [30], "n_params": [1e4]}, "budget": {"epochs": 1}}
SOURCE = {"source": {"synthetic": {"n": 200, "points": 11}}}
TRANSFER_AXES = {"source_n": [50], "target_n": [30], "n_params": [1e4]}


def _set(spec: dict, dotted: str, value) -> dict:
    """A deep copy of ``spec`` with ``dotted`` (e.g. ``resources.cpu``) set to ``value``."""
    spec = json.loads(json.dumps(spec))
    *parents, last = dotted.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return spec


def _write_spec(folder: Path, spec: dict) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


NAN = float("nan")
#: (field path set, bad value, field named in the error); transfer fields get a transfer spec
BAD_SPEC_VALUES = [
    ("resources.cpu", "two", "resources.cpu"),
    ("resources.cpu", NAN, "resources.cpu"),
    ("resources.gpu", -1, "resources.gpu"),
    ("resources.gpu", "one", "resources.gpu"),
    ("resources.gpu", 1.5, "resources.gpu"),
    ("budget.epochs", "ten", "budget.epochs"),
    ("budget.epochs", True, "budget.epochs"),
    ("budget.patience", -1, "budget.patience"),
    ("budget.patience", "soon", "budget.patience"),
    ("budget.max_steps", 0, "budget.max_steps"),
    ("budget.max_steps", 2.5, "budget.max_steps"),
    ("max_failures", "many", "max_failures"),
    ("max_failures", -3, "max_failures"),
    ("max_concurrent", True, "max_concurrent"),
    ("max_concurrent", "four", "max_concurrent"),
    ("num_threads", "four", "num_threads"),
    ("num_threads", 0, "num_threads"),
    ("save_checkpoint", "no", "save_checkpoint"),
    ("system_metrics", "off", "system_metrics"),
    ("tracking_uri", 5, "tracking_uri"),
    ("storage_path", ["runs"], "storage_path"),
    ("description", 7, "description"),
    ("targets", [1], "targets"),
    ("loss_weights.drude", "heavy", "loss_weights.drude"),
    ("loss_weights.drude", NAN, "loss_weights.drude"),
    ("loss_weights.drude", True, "loss_weights.drude"),
    ("hpo.trials_per_point", True, "hpo.trials_per_point"),
    ("hpo.trials_per_point", "2x", "hpo.trials_per_point"),
    ("hpo.sampler", "grid", "hpo.sampler"),
    ("hpo.early_stopping.type", "hyperband", "hpo.early_stopping.type"),
    ("hpo.early_stopping.grace_epochs", "two", "hpo.early_stopping.grace_epochs"),
    ("hpo.early_stopping.reduction_factor", 1, "hpo.early_stopping.reduction_factor"),
    ("hpo.early_stopping.min_trials", -2, "hpo.early_stopping.min_trials"),
    ("hpo.space.lr", -0.001, "hpo.space.lr"),
    ("hpo.space.lr", NAN, "hpo.space.lr"),
    ("hpo.space.lr", {"log_uniform": ["low", 0.01]}, "hpo.space.lr"),
    ("hpo.space.weight_decay", {"choice": [0.01, "none"]}, "hpo.space.weight_decay"),
    ("hpo.space.batch_size", 3.5, "hpo.space.batch_size"),
    ("hpo.space.warmup_frac", 1.5, "hpo.space.warmup_frac"),
    ("dataset.cutoff", "far", "dataset.cutoff"),
    ("dataset.cutoff", math.inf, "dataset.cutoff"),
    ("dataset.synthetic.n", "ten", "dataset.synthetic.n"),
    ("dataset.synthetic.points", "many", "dataset.synthetic.points"),
    ("dataset.synthetic.seed", -1, "dataset.synthetic.seed"),
    ("dataset.synthetic.noise", "low", "dataset.synthetic.noise"),
    ("dataset.synthetic.noise", NAN, "dataset.synthetic.noise"),
    ("dataset.synthetic.gap", {"shift_ev": "big"}, "dataset.synthetic.gap"),
    ("dataset.synthetic.gap", {"broaden": NAN}, "dataset.synthetic.gap"),
    ("dataset.data_dir", 3, "dataset.data_dir"),
    ("axes.n_train", [math.inf], "axes.n_train"),
    ("axes.n_params", [True], "axes.n_params"),
    ("axes.seeds", [True], "axes.seeds"),
    ("transfer.pretrain.lr", "fast", "transfer.pretrain.lr"),
    ("transfer.pretrain.epochs", "ten", "transfer.pretrain.epochs"),
    ("transfer.pretrain.weight_decay", -1, "transfer.pretrain.weight_decay"),
    ("transfer.pretrain.patience", "x", "transfer.pretrain.patience"),
    ("transfer.source.synthetic.n", "many", "transfer.source.synthetic.n"),
    ("transfer.source.cutoff", "far", "transfer.source.cutoff"),
    ("transfer.source_targets", [3], "transfer.source_targets"),
    ("transfer.source", {"import": {"kind": "petousis", "src": "x.csv", "points": "many"}},
     "transfer.source.import.points"),
]
BAD_IMPORT_VALUES = [  # a spec whose data come from dataset.import
    ("kind", "vasp", "dataset.import.kind"),
    ("src", 42, "dataset.import.src"),
    ("points", "many", "dataset.import.points"),
    ("points", 1, "dataset.import.points"),
    ("targets", "n", "dataset.import.targets"),
    ("min_distance", -0.1, "dataset.import.min_distance"),
    ("min_distance", "close", "dataset.import.min_distance"),
]


def _spec_with(dotted: str, value) -> dict:
    base = PLAIN
    if dotted.startswith("transfer."):
        base = {**PLAIN, "transfer": SOURCE, "axes": TRANSFER_AXES}
    return _set(base, dotted, value)


def _assert_names(msg: str, path, field: str, value) -> None:
    """One line naming the file and the field, and, after the field, the bad value."""
    assert "\n" not in msg and str(path) in msg, msg
    assert f"field '{field}': " in msg, msg
    after = msg.split(f"field '{field}': ", 1)[1]
    assert any(repr(v) in after for v in _leaves(value)), msg


def _leaves(value) -> list:
    """``value`` and, in a mapping or list, every value inside it (one of them is the bad one)."""
    inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [value] + [leaf for v in inner for leaf in _leaves(v)]


@pytest.mark.parametrize("dotted,value,field", BAD_SPEC_VALUES, ids=[f"{d}={v!r}" for d, v, _ in BAD_SPEC_VALUES])
def test_spec_values_of_the_wrong_type_or_range_name_file_field_and_value(tmp_path, dotted, value, field):
    from sweeps.spec import load_spec

    path = _write_spec(tmp_path, _spec_with(dotted, value))
    with pytest.raises(InputError) as err:
        load_spec(path)
    _assert_names(str(err.value), path, field, value)


@pytest.mark.parametrize("key,value,field", BAD_IMPORT_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_IMPORT_VALUES])
def test_spec_import_block_is_type_checked(tmp_path, key, value, field):
    from sweeps.spec import load_spec

    spec = {**PLAIN, "dataset": {"import": {"kind": "cif-folder", "src": "cifs", key: value}}}
    path = _write_spec(tmp_path, spec)
    with pytest.raises(InputError) as err:
        load_spec(path)
    _assert_names(str(err.value), path, field, value)


def test_spec_accepts_numbers_as_strings_and_booleans_as_true_false(tmp_path):
    """YAML reads ``1e-3`` (no dot) and every ``${VAR}`` as a string: those still count as numbers."""
    from sweeps.spec import load_spec

    spec = {**PLAIN, "budget": {"epochs": "3", "patience": "2"}, "resources": {"cpu": "1e0", "gpu": "0"},
            "save_checkpoint": "false", "system_metrics": "True", "max_failures": "0", "num_threads": "2",
            "hpo": {"space": {"lr": "1e-3"}, "early_stopping": {"type": "asha", "grace_epochs": "2"}}}
    s = load_spec(_write_spec(tmp_path, spec))
    assert s.budget == {"epochs": 3, "max_steps": None, "patience": 2}
    assert s.resources == {"cpu": 1.0, "gpu": 0.0} and s.max_failures == 0 and s.num_threads == 2
    assert s.save_checkpoint is False and s.system_metrics is True
    assert s.hpo["early_stopping"]["grace_epochs"] == 2


def test_spec_hash_of_existing_specs_is_unchanged():
    """The hashes the code had before the type checks (finished runs of a sweep are found by it)."""
    from sweeps.spec import validate

    a = {"experiment": "pinned", "dataset": {"synthetic": {"n": 100, "points": 11}, "cutoff": 5},
         "targets": ["eps", "drude"], "loss_weights": {"drude": 1}, "archs": ["cgc"],
         "axes": {"data_fractions": [0.5, 1], "n_params": ["1e4"], "seeds": [0, 1]},
         "budget": {"epochs": 2, "patience": 4.0, "max_steps": 100},
         "hpo": {"trials_per_point": 2, "space": {"lr": {"log_uniform": ["1e-4", 1.0e-2]}, "batch_size": 32},
                 "early_stopping": {"type": "asha", "grace_epochs": 2}},
         "resources": {"cpu": 2}}
    b = {**a, "dataset": {"import": {"kind": "petousis", "src": "x.csv", "targets": ["n"]}}, "targets": ["n"],
         "loss_weights": {}}
    assert (validate(a).hash, validate(b).hash) == ("c2473726346e59fb", "e52ca2abfccc5ace")
    assert validate(validate(a).as_dict()).hash == validate(a).hash  # a refine round re-validates a spec
    with_min = _set(b, "dataset.import.min_distance", 0.3)
    assert validate(with_min).dataset["import"]["min_distance"] == 0.3 and validate(with_min).hash != validate(b).hash


# --------------------------------------------------------------------------------------- overlapping atoms

CIF_HEAD = """data_{name}
_symmetry_space_group_name_H-M 'P 1'
_cell_length_a 3.6
_cell_length_b 3.6
_cell_length_c 3.6
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
loop_
_symmetry_equiv_pos_as_xyz
  'x, y, z'
loop_
_atom_site_type_symbol
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
"""
FCC_CU = "Cu Cu1 0 0 0\nCu Cu2 0.5 0.5 0\nCu Cu3 0.5 0 0.5\nCu Cu4 0 0.5 0.5\n"
CU_POSCAR = "Cu\n1.0\n0 1.8 1.8\n1.8 0 1.8\n1.8 1.8 0\nCu\n1\ndirect\n0 0 0 Cu\n"


def _cif_folder(root: Path) -> Path:
    """A CIF folder whose entry ``cu5`` has a fifth Cu atom 0.3 Å from the first one."""
    d = root / "cifs"
    d.mkdir()
    (d / "cu.cif").write_text(CIF_HEAD.format(name="cu") + FCC_CU)
    (d / "cu5.cif").write_text(CIF_HEAD.format(name="cu5") + FCC_CU + "Cu Cu5 0.0833333 0 0\n")
    (d / "id_prop.csv").write_text("cu,1.0\ncu5,2.0\n")
    return d


def _extxyz(root: Path, case: str) -> Path:
    """A good fcc Cu frame, then a bad one: two atoms 0.144 Å apart only through the periodic boundary, or
    one atom 0.4 Å from its own image (a cell far too small)."""
    from ase import Atoms
    from ase.build import bulk
    from ase.io import write

    good = bulk("Cu", "fcc", a=3.6)
    good.info.update({"id": "good", "gap": 0.0})
    if case == "image":
        bad = Atoms("CuAu", scaled_positions=[[0.02, 0, 0], [0.98, 0, 0]], cell=np.eye(3) * 3.6, pbc=True)
    else:
        bad = Atoms("Cu", positions=[[0, 0, 0]], cell=np.diag([0.4, 3.6, 3.6]), pbc=True)
    bad.info.update({"id": "bad", "gap": 1.0})
    path = root / "set.extxyz"
    write(path, [good, bad])
    return path


def _optimetal(root: Path, shared_data: Path) -> Path:
    """The real OptiMetal samples, the second with its first site duplicated (two atoms on one position)."""
    src = root / "om"
    src.mkdir()
    (src / "a.json").write_text((shared_data / "optimetal_samples" / "agm002143991.json").read_text())
    raw = json.loads((shared_data / "optimetal_samples" / "agm001003411.json").read_text())
    raw["structure"]["sites"].append(json.loads(json.dumps(raw["structure"]["sites"][0])))
    (src / "b.json").write_text(json.dumps(raw))
    return src


def _petousis(root: Path) -> Path:
    """A Petousis-format CSV: a good row, then one whose POSCAR has a Na and a Cl on the same position."""
    tensor = "[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]"
    poscar = "NaCl\n1.0\n0 2.8 2.8\n2.8 0 2.8\n2.8 2.8 0\nNa Cl\n1 {n_cl}\ndirect\n0 0 0 Na\n0.5 0.5 0.5 Cl\n"
    rows = []
    for k, (mat_id, extra) in enumerate([("mp-good", ""), ("mp-dup", "0 0 0 Cl\n")]):
        text = poscar.format(n_cl=2 if extra else 1) + extra
        rows.append({"idx": k, "band_gap": 5.0, "e_electronic": tensor, "e_total": tensor,
                     "meta": repr({"material_id": mat_id, "poscar": text}), "n": 1.5, "poly_electronic": 2.0,
                     "poly_total": 2.0, "pot_ferroelectric": False})
    path = root / "petousis.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _overlap_cases():
    # (name, build(root, shared_data) -> (kind, src), file named, entry, text of the pair)
    return [
        ("cif_0.3A", lambda r, s: ("cif-folder", _cif_folder(r)), "cifs/cu5.cif", "cu5",
         "atoms 0 (Cu) and 4 (Cu) are 0.300 Å apart"),
        ("extxyz_through_image", lambda r, s: ("extxyz", _extxyz(r, "image")), "set.extxyz", "bad",
         "atoms 0 (Cu) and 1 (Au) are 0.144 Å apart"),
        ("extxyz_own_image", lambda r, s: ("extxyz", _extxyz(r, "self")), "set.extxyz", "bad",
         "atom 0 (Cu) is 0.400 Å from its own periodic image"),
        ("optimetal_same_position", lambda r, s: ("optimetal", _optimetal(r, s)), "om/b.json", "agm001003411",
         "are 0.000 Å apart"),
        ("petousis_same_position", lambda r, s: ("petousis", _petousis(r)), "petousis.csv", "mp-dup",
         "atoms 0 (Na) and 2 (Cl) are 0.000 Å apart"),
    ]


@pytest.mark.parametrize("name,build,file,entry,pair", _overlap_cases(), ids=[c[0] for c in _overlap_cases()])
def test_overlapping_atoms_are_rejected_by_every_reader(tmp_path, shared_data, name, build, file, entry, pair):
    kind, src = build(tmp_path, shared_data)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError) as err:
        import_store(kind, src, tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / file) in msg, msg
    assert f"entry '{entry}': field 'structure': " in msg and pair in msg and "0.5 Å" in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no store, no temporary folder


def test_min_distance_is_configurable(tmp_path):
    d = _cif_folder(tmp_path)
    store = Store(import_store("cif-folder", d, tmp_path / "loose", min_distance_a=0.25, progress=False))
    assert store.ids == ["cu", "cu5"]
    assert len(Store(import_store("cif-folder", d, tmp_path / "off", min_distance_a=0, progress=False))) == 2
    with pytest.raises(InputError, match="atoms 0 .Cu. and 4 .Cu. are 0.300 Å apart, closer than the minimum 0.35"):
        import_store("cif-folder", d, tmp_path / "strict", min_distance_a=0.35, progress=False)
    with pytest.raises(InputError, match="field 'min_distance': must be a distance ≥ 0 Å, got -1"):
        import_store("cif-folder", d, tmp_path / "neg", min_distance_a=-1, progress=False)


def test_default_min_distance_admits_the_synthetic_metals():
    from gnn.geometry import closest_pair
    from gnn.ingest import DEFAULT_MIN_DISTANCE_A
    from gnn.synth import generate

    for e in generate(100, points=11, seed=3, progress=False):
        s = e.structure
        assert closest_pair(s.cart_coords, s.lattice.matrix, DEFAULT_MIN_DISTANCE_A) is None, e.id


# -------------------------------------------------------------------------------------------- store files

@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> Path:
    from gnn.synth import synth_store

    return synth_store(40, tmp_path_factory.mktemp("good") / "store", points=11, seed=2, progress=False)


def _graph_file(store: Path) -> Path:
    return next((store / "graphs").glob("cutoff*.pt"))


def _damage(store: Path, file: str, how: str) -> Path:
    """Damage one file of ``store`` in place; returns the damaged file."""
    path = _graph_file(store) if file == "graph" else store / file
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "garbage": bytes(range(256)) * 7, "empty": b"",
                      "not_object": b"[1, 2, 3]"}[how])
    return path


STORE_DAMAGE = [(f, h) for f in ("data.pt", "meta.json", "graph") for h in ("truncated", "garbage", "empty")] + \
    [("meta.json", "not_object")]


def _copy(store: Path, dest: Path) -> Path:
    return Path(shutil.copytree(store, dest / "store"))


@pytest.mark.parametrize("file,how", STORE_DAMAGE, ids=[f"{f}-{h}" for f, h in STORE_DAMAGE])
def test_damaged_store_files_are_one_line_naming_the_file(good_store, tmp_path, file, how):
    from gnn.graphs import load_graphs

    store = _copy(good_store, tmp_path)
    damaged = _damage(store, file, how)
    with pytest.raises(InputError) as err:
        load_graphs(Store(store).path, 5.5, progress=False)  # the store opens, then its graphs
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{damaged}: ") and ("empty file" if how == "empty" else "corrupt") in msg
    assert ("delete" in msg and "graphs/" in msg) if file == "graph" else "--overwrite" in msg, msg


def test_missing_data_file_and_tensors_that_do_not_fit_meta(good_store, tmp_path):
    store = _copy(good_store, tmp_path)
    tensors = dict(torch.load(store / "data.pt", weights_only=True))
    tensors["node_ptr"] = tensors["node_ptr"][:-5]
    torch.save(tensors, store / "data.pt")
    with pytest.raises(InputError, match=r"data.pt: field 'node_ptr': corrupt: shape \(36,\), expected \(41,\)"):
        Store(store)
    (store / "data.pt").unlink()
    with pytest.raises(InputError, match=r"data.pt: missing; delete the store folder"):
        Store(store)


def test_a_crash_while_writing_leaves_no_store_that_looks_valid(good_store, tmp_path, monkeypatch):
    """Store and graph files are written whole under temporary names, then renamed into place."""
    import gnn.graphs
    import gnn.ingest
    from gnn.ingest import write_store

    store = _copy(good_store, tmp_path)
    src = Store(store)
    entries = [src.structure(i) for i in range(3)]

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while building the graphs

    monkeypatch.setattr(gnn.ingest, "build_graphs", crash)
    from gnn.store import Entry

    new = [Entry(f"e{i}", s, {"drude": 1.0}) for i, s in enumerate(entries)]
    with pytest.raises(KeyboardInterrupt):
        write_store(new, tmp_path / "fresh", kind="test", source="test", progress=False)
    with pytest.raises(KeyboardInterrupt):
        write_store(new, store, kind="test", source="test", overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no fresh store, no temporary folder
    assert len(Store(store)) == 40  # the old store is untouched
    monkeypatch.undo()

    graph = _graph_file(store)
    graph.unlink()

    def half_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(gnn.graphs.torch, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        gnn.graphs.build_graphs(store, 5.5, workers=1, progress=False)
    assert [p.name for p in (store / "graphs").iterdir() if not p.name.startswith(".lock")] == []


# ----------------------------------------------------------------------------------------------- the CLI

def _error_line(stderr: str) -> str:
    """The one line of a failed command's stderr; an import's progress bars (tqdm, on stderr) are dropped."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    rest = [line for line in lines if line.startswith("error: ") or not ("entry [" in line or "it/s]" in line)]
    assert len(rest) == 1, stderr
    return rest[0]


def _cli_cases(root: Path, good: Path) -> dict:
    """name -> (matscale arguments, strings the error line must contain); inputs are written under ``root``."""
    cases = {}
    for name, (dotted, value) in {"spec_cpu": ("resources.cpu", "two"), "spec_epochs": ("budget.epochs", "ten"),
                                  "spec_max_failures": ("max_failures", "many"),
                                  "spec_checkpoint": ("save_checkpoint", "no")}.items():
        folder = root / name
        folder.mkdir()
        path = _write_spec(folder, _set(PLAIN, dotted, value))
        cases[name] = (["sweep", str(path), "--dry-run"], [str(path), f"field '{dotted}'", repr(value)])
    for name, how in {"cif": "cif", "extxyz": "image"}.items():
        folder = root / name
        folder.mkdir()
        src = _cif_folder(folder) if how == "cif" else _extxyz(folder, how)
        file, entry = (src / "cu5.cif", "cu5") if how == "cif" else (src, "bad")
        cases[f"import_{name}"] = (["data", "import", "cif-folder" if how == "cif" else "extxyz", str(src), "--out",
                                    str(folder / "out")],
                                   [str(file), f"entry '{entry}'", "field 'structure'", "Å apart"])
    cases["import_min_distance_nan"] = (["data", "import", "cif-folder", str(root / "cif" / "cifs"), "--out",
                                         str(root / "cif" / "out"), "--min-distance", "nan"],
                                        ["field 'min_distance'", "got nan"])
    for file, how, cmd in [("data.pt", "truncated", "info"), ("data.pt", "garbage", "train"),
                           ("data.pt", "empty", "info"), ("meta.json", "truncated", "train"),
                           ("meta.json", "garbage", "info"), ("graph", "garbage", "info"),
                           ("graph", "truncated", "train")]:
        name = f"{cmd}_{file}_{how}"
        store = Path(shutil.copytree(good, root / name / "store"))
        damaged = _damage(store, file, how)
        args = ["data", "info", str(store)] if cmd == "info" else \
            ["train", "--data", str(store), "--epochs", "1", "--n-params", "1e4", "--json"]
        cases[name] = (args, [str(damaged), "empty file" if how == "empty" else "corrupt"])
    return cases


@pytest.fixture(scope="module")
def cli_cases(tmp_path_factory, good_store) -> dict:
    return _cli_cases(tmp_path_factory.mktemp("cli"), good_store)


@pytest.mark.parametrize("name", ["spec_cpu", "spec_epochs", "spec_max_failures", "spec_checkpoint", "import_cif",
                                  "import_extxyz", "import_min_distance_nan", "info_data.pt_truncated",
                                  "train_data.pt_garbage", "info_data.pt_empty", "train_meta.json_truncated",
                                  "info_meta.json_garbage", "info_graph_garbage", "train_graph_truncated"])
def test_cli_main_prints_one_line_and_returns_2(cli_cases, capsys, name):
    """``matscale``'s main, in this process (the subprocess test below runs a few through the real script)."""
    from analysis.cli import main

    args, expected = cli_cases[name]
    assert main(args) == 2
    err = capsys.readouterr().err
    line = _error_line(err)
    assert line.startswith("error: ") and all(text in line for text in expected), line
    if not name.startswith("import_"):
        assert err.strip() == line  # nothing else on stderr at all


def test_matscale_script_prints_one_line_and_exits_2(cli_cases):
    """The installed entry point, as a user runs it: a spec, an import and a training run on a damaged store."""
    names = ["spec_cpu", "import_cif", "train_graph_truncated"]
    with ThreadPoolExecutor(len(names)) as pool:
        runs = list(pool.map(lambda name: subprocess.run([sys.executable, "-m", "analysis.cli", *cli_cases[name][0]],
                                                         capture_output=True, text=True, timeout=600), names))
    for name, res in zip(names, runs):
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        line = _error_line(res.stderr)
        assert all(text in line for text in cli_cases[name][1]), line
        if not name.startswith("import_"):
            assert res.stderr.strip() == line


def test_cli_min_distance_option_admits_close_atoms(tmp_path, capsys):
    from analysis.cli import main

    d = _cif_folder(tmp_path)
    assert main(["data", "import", "cif-folder", str(d), "--out", str(tmp_path / "out"), "--min-distance", "0.2",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n_structures"] == 2
