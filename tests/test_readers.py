import json
import subprocess
import sys

import numpy as np
import pytest

from gnn.errors import InputError
from gnn.readers import import_store
from gnn.store import Store

CU_POSCAR = "Cu\n1.0\n0 1.8 1.8\n1.8 0 1.8\n1.8 1.8 0\nCu\n1\ndirect\n0 0 0 Cu\n"
NACL_CIF = """data_NaCl
_symmetry_space_group_name_H-M 'P 1'
_cell_length_a 3.99
_cell_length_b 3.99
_cell_length_c 3.99
_cell_angle_alpha 60
_cell_angle_beta 60
_cell_angle_gamma 60
loop_
_atom_site_type_symbol
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Na Na1 0 0 0
Cl Cl1 0.5 0.5 0.5
"""


def test_optimetal_samples_shapes_and_averages(shared_data, tmp_path):
    folder = shared_data / "optimetal_samples"
    store = Store(import_store("optimetal", folder, tmp_path / "om", progress=False))
    assert len(store) == 2 and store.omega_ev.shape == (2001,)
    np.testing.assert_allclose(store.omega_ev, np.linspace(0, 20, 2001), atol=1e-4)
    for k, entry_id in enumerate(store.ids):
        raw = json.loads((folder / f"{entry_id}.json").read_text())
        re = np.array(raw["data"]["eps_inter_re"]["data"])
        im = np.array(raw["data"]["eps_inter_im"]["data"])
        eps = store.tensors["y_eps"][k].numpy()
        assert eps.shape == (2, 2001)
        np.testing.assert_allclose(eps[0], re[:, 1:].mean(1), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(eps[1], im[:, 1:].mean(1), rtol=1e-5, atol=1e-4)
        drude = np.array(raw["data"]["drude_freq"])
        assert store.tensors["y_drude"][k].item() == pytest.approx(np.sqrt(np.mean(drude**2)), rel=1e-6)
        assert store.structure(k).composition.reduced_formula == store.formulas[k]


def test_optimetal_bundled_jsonl_gz_and_resampling(shared_data, tmp_path):
    import gzip

    files = sorted((shared_data / "optimetal_samples").glob("*.json"))
    bundle = tmp_path / "bundle.jsonl.gz"
    with gzip.open(bundle, "wt") as f:
        for p in files:
            f.write(json.dumps(json.loads(p.read_text())) + "\n")
    store = Store(import_store("optimetal", bundle, tmp_path / "b", points=201, progress=False))
    assert len(store) == 2 and store.tensors["y_eps"].shape == (2, 2, 201)


def test_all_petousis_entries_import(shared_data, tmp_path):
    store = Store(import_store("petousis", shared_data / "petousis2017_dielectric.csv", tmp_path / "p",
                               progress=False))
    assert len(store) == 1056
    assert set(store.targets) == {"band_gap", "n", "poly_electronic", "poly_total", "eps_electronic", "eps_total"}
    assert store.ids[0] == "mp-441" and store.formulas[0] == "Rb2Te"
    assert store.tensors["y_n"][0].item() == pytest.approx(1.86)


def test_cif_folder_with_and_without_header(tmp_path):
    d = tmp_path / "cifs"
    d.mkdir()
    (d / "nacl.cif").write_text(NACL_CIF)
    (d / "POSCAR-cu").write_text(CU_POSCAR)
    (d / "id_prop.csv").write_text("id,gap,bulk\nnacl,5.0,24\ncu,0.0,140\n")
    store = Store(import_store("cif-folder", d, tmp_path / "a", progress=False))
    assert store.ids == ["nacl", "cu"] and set(store.targets) == {"gap", "bulk"}
    (d / "id_prop.csv").write_text("nacl,5.0\ncu,0.0\n")
    store = Store(import_store("cif-folder", d, tmp_path / "b", progress=False))
    assert list(store.targets) == ["target"] and store.tensors["y_target"].tolist() == [5.0, 0.0]


def test_extxyz_targets_from_info(tmp_path):
    from ase.build import bulk
    from ase.io import write

    frames = []
    for k, (sym, a) in enumerate([("Cu", 3.6), ("Al", 4.05), ("Ni", 3.52)]):
        atoms = bulk(sym, "fcc", a=a)
        atoms.info.update({"id": f"m{k}", "gap": 0.0, "bulk_modulus": 100.0 + k})
        frames.append(atoms)
    write(tmp_path / "set.extxyz", frames)
    store = Store(import_store("extxyz", tmp_path / "set.extxyz", tmp_path / "x", progress=False))
    assert store.ids == ["m0", "m1", "m2"]
    assert store.tensors["y_bulk_modulus"].tolist() == [100.0, 101.0, 102.0]


def _optimetal_entry(shared_data, mutate):
    raw = json.loads((shared_data / "optimetal_samples" / "agm001003411.json").read_text())
    mutate(raw)
    return raw


def _bad_cases():
    def missing_eps(r):
        del r["data"]["eps_inter_im"]

    def misshaped(r):
        r["data"]["eps_inter_re"]["data"] = [row[:3] for row in r["data"]["eps_inter_re"]["data"]]

    def grid_not_increasing(r):
        for part in ("eps_inter_re", "eps_inter_im"):
            r["data"][part]["data"][5][0] = 0.0

    def nan_target(r):
        r["data"]["eps_inter_re"]["data"][7][2] = float("nan")

    def bad_drude(r):
        r["data"]["drude_freq"] = [1.0, float("inf"), 2.0]

    def bad_structure(r):
        r["structure"]["lattice"] = "oops"

    def lonely_atom(r):
        r["structure"]["lattice"]["matrix"] = [[40.0, 0, 0], [0, 40.0, 0], [0, 0, 40.0]]

    return [(missing_eps, "data.eps_inter_im"), (misshaped, "data.eps_inter_re"), (grid_not_increasing, "omega_ev"),
            (nan_target, "eps"), (bad_drude, "drude"), (bad_structure, "structure"), (lonely_atom, "structure")]


@pytest.mark.parametrize("mutate,field", _bad_cases(), ids=[c[0].__name__ for c in _bad_cases()])
def test_bad_optimetal_entries_name_file_entry_field_and_leave_nothing(shared_data, tmp_path, mutate, field):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.json").write_text((shared_data / "optimetal_samples" / "agm002143991.json").read_text())
    (src / "b.json").write_text(json.dumps(_optimetal_entry(shared_data, mutate)))
    with pytest.raises(InputError) as err:
        import_store("optimetal", src, tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "b.json" in msg and "agm001003411" in msg and f"field '{field}'" in msg
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temporary folder left either


def test_cli_bad_input_is_one_line_without_traceback(shared_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    raw = _optimetal_entry(shared_data, lambda r: r["data"].pop("drude_freq"))
    (src / "x.json").write_text(json.dumps(raw))
    res = subprocess.run([sys.executable, "-m", "analysis.cli", "data", "import", "optimetal", str(src), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip() and "reading optimetal" not in line]
    assert lines == [f"error: {src / 'x.json'}: entry 'agm001003411': field 'data.drude_freq': missing"]
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


def test_unknown_target_and_missing_source(tmp_path, shared_data):
    with pytest.raises(InputError, match="field 'gap'.*target not found"):
        import_store("petousis", shared_data / "petousis2017_dielectric.csv", tmp_path / "o", targets=["gap"],
                     progress=False)
    with pytest.raises(InputError, match="no such file"):
        import_store("extxyz", tmp_path / "nope.xyz", tmp_path / "o", progress=False)
    with pytest.raises(InputError, match="unknown data kind"):
        import_store("vasp", tmp_path, tmp_path / "o", progress=False)
