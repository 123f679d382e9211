"""Mixed precision on CPU (bf16 autocast), so that the GPU path's numerics are held without a GPU: the geometry
and the output layers stay fp32, predictions stay close to fp32, and precision is a choice of train, CLI and spec."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnn.errors import InputError
from gnn.train import TrainConfig, train

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def batch(synth_dir):
    from gnn.loader import GraphData

    data = GraphData(synth_dir, 5.5, ["eps", "drude"])
    return data, data.batch(list(range(64)))


def test_edge_lengths_stay_fp32_under_bf16_autocast(batch):
    from gnn.layers import RadialBasis, edge_vectors

    _, b = batch
    ref = edge_vectors(b).norm(dim=-1)
    with torch.autocast(**BF16):
        vec = edge_vectors(b)
        src, dst = b.edge_index  # what the shift gives when bf16 rounds it: the error this test guards against
        naive = b.pos[dst] - b.pos[src] + torch.bmm(b.edge_shift.unsqueeze(1), b.cell[b.batch[src]]).squeeze(1)
        rbf = RadialBasis(5.5, 32)(vec.norm(dim=-1))
    assert (naive.float().norm(dim=-1) - ref).abs().max() > 1e-3  # the batch has boundary-crossing edges that bite
    assert vec.dtype == torch.float32 and rbf.dtype == torch.float32
    assert (vec.norm(dim=-1) - ref).abs().max() <= 1e-5  # Å
    assert torch.allclose(rbf, RadialBasis(5.5, 32)(ref), atol=1e-6)


def test_output_layers_are_fp32_and_predictions_close_to_fp32(batch):
    from gnn.models import build_model

    data, b = batch
    torch.manual_seed(0)
    model = build_model("cgc", 1e4, ["eps", "drude"], 41)
    model.set_target_stats({t: data.y[t][:200].float() for t in ("eps", "drude")})
    model.eval()
    last = model.heads["eps"][-1]
    x = torch.randn(8, last.in_features)
    with torch.no_grad():
        fp32 = model(b)
        with torch.autocast(**BF16):
            out = last(x)
            bf16 = model(b)
    assert out.dtype == torch.float32 and torch.equal(out, last(x))  # the head's last Linear in fp32
    for t in ("eps", "drude"):  # the tolerance documented in gnn.precision
        sigma = data.y[t][:200].float().std()
        err = (bf16[t] - fp32[t]).abs() / sigma
        assert bf16[t].dtype == torch.float32 and err.max() <= 0.05 and err.mean() <= 0.005, t


def test_precision_is_a_choice_of_the_run(synth_dir):
    base = dict(data=str(synth_dir), arch="cgc", n_params=1e4, fraction=0.25, epochs=1, num_threads=1)
    assert train(TrainConfig(**base))["precision"] == "fp32"  # auto on a CPU
    m = train(TrainConfig(**base, precision="bf16"))
    assert m["precision"] == "bf16" and m["val_loss"] > 0
    with pytest.raises(InputError, match="field 'precision'"):
        train(TrainConfig(**base, precision="fp16"))


def test_cli_precision_and_device_errors(synth_dir):
    common = [sys.executable, "-m", "analysis.cli", "train", "--data", str(synth_dir), "--n-params", "1e4",
              "--fraction", "0.25", "--epochs", "1", "--threads", "1", "--json"]
    res = subprocess.run(common + ["--precision", "bf16"], capture_output=True, text=True)
    assert res.returncode == 0 and '"precision": "bf16"' in res.stdout
    for extra, field in ((["--precision", "half"], "--precision"), (["--device", "cuda"], "device"),
                         (["--device", "tpu7"], "device")):
        if extra[1] == "cuda" and torch.cuda.is_available():
            continue
        res = subprocess.run(common + extra, capture_output=True, text=True)
        last = res.stderr.strip().splitlines()[-1]  # argparse prints its usage first
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert "error:" in last and field in last, res.stderr


def test_spec_budget_precision(tmp_path):
    import yaml

    from sweeps.spec import load_spec

    raw = yaml.safe_load((Path(__file__).parents[1] / "sweeps/specs/demo.yaml").read_text())
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(raw))
    before = load_spec(plain)
    raw["budget"]["precision"] = "bf16"
    given = tmp_path / "bf16.yaml"
    given.write_text(yaml.safe_dump(raw))
    spec = load_spec(given)
    assert spec.budget["precision"] == "bf16" and "precision" not in before.budget
    assert spec.hash != before.hash  # results in another precision are another sweep
    raw["budget"]["precision"] = "fp8"
    given.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="budget.precision"):
        load_spec(given)


def test_fp32_output_layers_keep_the_weights_of_before():
    """Same seed, same weights with or without fp32 output layers: fp32 results on CPU are unchanged."""
    from gnn.layers import MLP

    torch.manual_seed(3)
    plain = MLP(8, 16, 4)
    torch.manual_seed(3)
    fp32 = MLP(8, 16, 4, fp32_out=True)
    assert plain.state_dict().keys() == fp32.state_dict().keys()
    assert all(torch.equal(plain.state_dict()[k], fp32.state_dict()[k]) for k in plain.state_dict())


def test_a_checkpoint_resumes_only_in_its_precision_and_says_what_differs(synth_dir, tmp_path):
    base = dict(data=str(synth_dir), arch="cgc", n_params=1e4, fraction=0.25, epochs=2, num_threads=1,
                checkpoint_dir=str(tmp_path))

    class Stop(Exception):
        pass

    def stop(epoch, metrics, ckpt):
        raise Stop()

    with pytest.raises(Stop):
        train(TrainConfig(**base, precision="bf16"), callback=stop)
    with pytest.raises(InputError, match="field 'precision': checkpoint was trained in bf16"):
        train(TrainConfig(**base, precision="fp32"))
    with pytest.raises(InputError, match=r"field 'lr': .*\(lr differ\)"):
        train(TrainConfig(**base, precision="bf16", lr=5e-3))
    assert train(TrainConfig(**base, precision="bf16"))["epochs"] == 2
