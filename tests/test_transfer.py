"""Transfer: fine-tuning strategies, pretrain → fine-tune, the transfer law, and the coverage flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from analysis import coverage
from analysis.fit import make_curve
from analysis.transfer import baseline_law, equivalent_target_samples, fit_transfer
from gnn.errors import InputError
from gnn.finetune import freeze, load_pretrained
from gnn.models import build_model, model_from_config
from gnn.splits import grouped_split
from gnn.store import Store
from gnn.train import TrainConfig, export_best, load_model
from gnn.transfer import pretrain_finetune
from sweeps.spec import load_spec


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_strategies_freeze_what_they_name():
    model = build_model("cgc", 2e4, ["eps", "drude"], 21)
    names = {n for n, _ in model.named_parameters()}
    assert freeze(model, "full") == model.n_params and _trainable(model) == names
    freeze(model, "heads")
    assert _trainable(model) == {n for n in names if n.startswith("heads.")}
    freeze(model, "freeze:2")
    frozen = names - _trainable(model)
    assert frozen == {n for n in names if n.startswith(("embed.", "rbf.", "blocks.0.", "blocks.1."))}
    with pytest.raises(InputError, match="0 ≤ K ≤"):
        freeze(model, "freeze:4")  # three interaction blocks


def test_pretrained_backbone_and_matching_heads_carry_over(tmp_path):
    source = build_model("cgc", 2e4, ["eps", "drude"], 21)
    torch.save({"model_config": vars(source.config), "model": source.state_dict()}, tmp_path / "m.pt")
    cfg = vars(source.config) | {"targets": ["drude"]}  # same width, a different set of heads
    target = model_from_config(cfg)
    copied = load_pretrained(target, tmp_path / "m.pt")
    assert any(n.startswith("blocks.") for n in copied) and "heads.scalars.0.weight" in copied
    assert not any(n.startswith("heads.eps") for n in copied)
    for name in copied:
        assert torch.equal(dict(target.named_parameters())[name], dict(source.named_parameters())[name])
    other = model_from_config(vars(source.config) | {"targets": ["band_gap"]})  # a scalar head of another target
    assert not any(n.startswith("heads.") for n in load_pretrained(other, tmp_path / "m.pt"))
    narrow = build_model("cgc", 5e3, ["drude"], 21)
    with pytest.raises(InputError, match="shares no interaction block"):
        load_pretrained(narrow, tmp_path / "m.pt")


def test_pretrain_then_finetune_on_a_gapped_target(synth_dir, tmp_path):
    from gnn.synth import synth_store

    target = synth_store(120, tmp_path / "target", points=41, seed=9, noise=0.1, progress=False,
                         gap={"shift_ev": 0.4, "broaden": 1.5, "drude_scale": 0.9})
    source = TrainConfig(data=str(synth_dir), n_train=150, epochs=2, num_threads=1)
    tuned = TrainConfig(data=str(target), n_params=1e4, n_train=40, epochs=2, strategy="heads", num_threads=1)
    first = pretrain_finetune(source, tuned)
    assert first["pretrain_n_train"] == 150 and first["n_train"] == 40 and first["pretrain_cached"] == 0
    assert first["pretrain_width"] == first["width"] and first["pretrain_ffn_width"] == first["ffn_width"]
    model = build_model("cgc", 1e4, ["drude", "eps"], 41)  # the target's model: same plan, same names
    heads = sum(p.numel() for n, p in model.named_parameters() if n.startswith("heads."))
    assert first["n_params"] == model.n_params and first["n_trainable"] == heads  # strategy "heads"
    assert first["n_transferred_tensors"] == len(list(model.parameters()))  # same targets: every tensor carries over
    n_test = len(grouped_split(Store(target).formulas)["test"])  # the target's own fixed test split
    assert first["n_test"] == n_test > 0 and np.isfinite(first["test_loss"])
    second = pretrain_finetune(source, tuned)  # another trial of the same source size: from the cache
    assert second["pretrain_cached"] == 1 and second["pretrain_val_loss"] == first["pretrain_val_loss"]


@pytest.mark.parametrize("alpha,gap,d", [(0.5, 0.4, 3.0), (0.3, 0.15, 1.2)])
def test_transfer_law_recovers_a_known_gap(alpha, gap, d):
    rng = np.random.default_rng(int(alpha * 100))
    n = np.array([100, 200, 400, 800, 1600, 3200, 6400])
    x = np.repeat(n, 3)
    y = (d * x ** -alpha + gap) * (1 + 0.015 * rng.standard_normal(len(x)))
    r = fit_transfer(make_curve(x, y), n_boot=400, target=gap * 1.2)
    for name, truth in (("alpha", alpha), ("C", gap)):
        lo, hi = r["ci"][name]
        assert lo <= truth <= hi and abs(r["params"][name] - truth) < 0.25 * truth
    assert r["gap_resolved"]
    exact = (d / (0.2 * gap)) ** (1 / alpha)  # n* for L* = 1.2 C
    assert r["target"]["reachable"] and 0.5 * exact < r["target"]["source_n"] < 2 * exact
    below = fit_transfer(make_curve(x, y), n_boot=200, target=0.9 * gap)["target"]
    assert not below["reachable"] and below["source_n"] == "unreachable"
    with pytest.raises(InputError, match="need ≥ 4"):
        fit_transfer(make_curve(x[:9], y[:9]))


def test_equivalent_target_samples_on_a_known_baseline():
    rng = np.random.default_rng(0)
    sizes = np.repeat([50, 100, 200, 400], 3)
    base = baseline_law(sizes, (500 / sizes) ** 0.3 * (1 + 0.01 * rng.standard_normal(len(sizes))), n_boot=300)
    e = equivalent_target_samples(base, (500 / 300) ** 0.3, 50)  # the loss a baseline reaches at 300 samples
    assert 270 < e["target_equivalent"] < 330 and e["ci"][0] < 300 < e["ci"][1]
    assert 5.4 < e["gain"] < 6.6 and not e["extrapolated"] and not e["negative_transfer"]
    worse = equivalent_target_samples(base, (500 / 30) ** 0.3, 50)  # pretraining hurt
    assert worse["negative_transfer"] and worse["gain"] < 1
    measured = (500 / 50) ** 0.3 * 1.05  # a baseline point above its own law: a loss below it is no harm
    assert not equivalent_target_samples(base, (500 / 48) ** 0.3, 50, baseline_loss=measured)["negative_transfer"]


def _table(diverse_penalty: float, seeds=(0, 1, 2)):
    rng = np.random.default_rng(1)
    rows = []
    for d in (100, 200, 400):
        for s in seeds:
            seed_offset = 0.3 * rng.standard_normal()  # shared by both strategies: the initialisation
            for subset, div, extra in (("random", 1.0, 0.0), ("diverse", 1.3, diverse_penalty)):
                loss = (1000 / d) ** 0.2 + seed_offset + extra + 0.005 * rng.standard_normal()
                rows.append({"arch": "cgc", "n_params_target": 1e4, "n_train": d, "subset": subset, "seed": s,
                             "val_loss": loss, "subset_diversity": div, "subset_elements": 40.0})
    return coverage.coverage_table(pd.DataFrame(rows))


def test_coverage_flags_more_diverse_data_that_raises_the_loss():
    found = coverage.flags(_table(0.05))
    worse = [f for f in found if f["kind"] == "diverse_worse"]
    assert {f["D"] for f in worse} == {100, 200, 400}
    assert all(f["more_diverse"] == "diverse" and f["less_diverse"] == "random" for f in worse)
    assert "more diverse data raised the loss" in coverage.describe(worse[0])
    assert coverage.flags(_table(0.0)) == []  # seed noise alone (large, but shared) flags nothing


def test_coverage_flags_more_data_that_raises_the_loss():
    t = _table(0.0)
    t.loc[(t["subset"] == "random") & (t["n_train"] == 400), "loss"] += 0.5
    t.loc[(t["subset"] == "random") & (t["n_train"] == 400), "by_seed"] = [{0: 9.0, 1: 9.1, 2: 9.2}]
    found = coverage.flags(t)
    assert [(f["kind"], f["subset"], f["D"]) for f in found if f["kind"] == "more_data_worse"] == [
        ("more_data_worse", "random", [200, 400])]


def _transfer_spec(tmp_path, **changes):
    spec = {"experiment": "t", "dataset": {"synthetic": {"n": 100, "points": 11}},
            "transfer": {"source": {"synthetic": {"n": 200, "points": 11}}},
            "archs": ["cgc"], "axes": {"source_n": [50], "target_n": [30], "n_params": [1e4]},
            "budget": {"epochs": 1}}
    for key, value in changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("change,field,message", [
    ({"transfer": None}, "axes.target_n", "needs a transfer section"),
    ({"axes": {"source_n": [50], "n_params": [1e4]}, "transfer": None}, "axes.source_n", "needs a transfer section"),
    ({"axes": {"target_n": [30], "n_params": [1e4]}}, "axes.source_n", "missing"),
    ({"transfer": {"source": {"synthetic": {"n": 200}}, "strategy": "thaw"}}, "transfer.strategy", "unknown fine-tuning"),
    ({"transfer": {"source": {"synthetic": {"n": 200}}, "strategy": "freeze:x"}}, "transfer.strategy", "freeze:K"),
    ({"transfer": {"strategy": "full"}}, "transfer.source", "missing"),
    ({"transfer": {"source": {"synthetic": {"n": 200}}, "pretrain": {"epochs": 0}}}, "transfer.pretrain", "≥ 1"),
    ({"axes": {"source_n": [-5], "n_params": [1e4]}}, "axes.source_n", "≥ 0"),
    ({"axes": {"source_n": [5], "n_params": [1e4], "subset": ["clustered"]}}, "axes.subset", "unknown subset"),
    ({"dataset": {"synthetic": {"n": 100, "gap": {"shift": 1}}}}, "dataset.synthetic.gap", "unknown gap key"),
])
def test_bad_transfer_and_coverage_specs_name_the_field(tmp_path, change, field, message):
    with pytest.raises(InputError, match=message) as err:
        load_spec(_transfer_spec(tmp_path, **change))
    assert f"field '{field}'" in str(err.value)


def test_transfer_points_come_with_their_baseline(tmp_path):
    spec = load_spec(_transfer_spec(tmp_path, axes={"source_n": [400, 100], "target_n": [30, 60], "n_params": [1e4],
                                                    "seeds": [0, 1]}))
    points = spec.points(80)
    assert sorted({(p.n_train, p.source_n) for p in points}) == [(30, 0), (30, 100), (30, 400), (60, 0), (60, 100),
                                                                 (60, 400)]
    assert len(points) == 12 and len({p.key for p in points}) == 12
    assert "-S0-" in points[0].key and spec.transfer["strategy"] == "full"


def test_exported_model_is_a_valid_init(synth_dir, tmp_path):
    from gnn.train import train

    r = train(TrainConfig(data=str(synth_dir), n_params=1e4, n_train=60, epochs=1, checkpoint_dir=str(tmp_path)))
    best = export_best(tmp_path / "checkpoint.pt", tmp_path / "best.pt")
    again = train(TrainConfig(data=str(synth_dir), n_params=1e4, n_train=60, epochs=1, init_from=str(best),
                              strategy="freeze:3"))
    model = load_model(best)
    assert model.n_params == r["n_params"] == again["n_params"]
    assert again["n_transferred_tensors"] == len(list(model.parameters()))
    unfrozen = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("pool.", "heads.")))
    assert again["n_trainable"] == unfrozen < r["n_params"]  # freeze:3 of 3 blocks: the pooling and heads train


def test_train_does_not_import_transfer():
    import subprocess
    import sys

    code = ("import sys, gnn.train; assert 'gnn.transfer' not in sys.modules; "
            "from gnn.transfer import parse_strategy, pretrain, pretrain_finetune, pretrain_key; "
            "from gnn.finetune import parse_strategy as p; assert parse_strategy is p")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_new_axes_keep_the_hash_of_specs_that_do_not_use_them(tmp_path):
    plain = {"experiment": "p", "dataset": {"synthetic": {"n": 100}}, "archs": ["cgc"],
             "axes": {"n_train": [30], "n_params": [1e4]}, "budget": {"epochs": 1}}
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(plain))
    before = load_spec(path).hash
    path.write_text(yaml.safe_dump({**plain, "axes": {**plain["axes"], "subset": ["random"]}}))
    assert load_spec(path).hash == before  # finished runs of existing sweeps are still recognised
    path.write_text(yaml.safe_dump({**plain, "axes": {**plain["axes"], "subset": ["random", "diverse"]}}))
    assert load_spec(path).hash != before
