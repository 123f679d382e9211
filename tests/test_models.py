import pytest
import torch

from gnn.errors import InputError
from gnn.models import ARCHS, _count, build_model, plan


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("n_params", [1e4, 3e4, 1e5, 4e5, 1e6, 3e6, 1e7])
def test_parameter_count_within_three_percent(arch, n_params):
    config = plan(arch, n_params, ["eps", "drude"], n_points=101)
    assert abs(_count(config) - n_params) <= 0.03 * n_params


@pytest.mark.parametrize("arch", ARCHS)
def test_scalar_targets_and_large_requests_plan_without_allocating(arch):
    config = plan(arch, 1e8, ["n", "band_gap"])  # meta device: allocates nothing
    assert abs(_count(config) - 1e8) <= 3e6
    assert config.width > 1000


def test_build_model_reports_actual_count_and_named_outputs(synth_dir):
    from gnn.loader import GraphData

    model = build_model("transformer", 2e4, ["eps", "drude"], n_points=41)
    assert model.n_params == sum(p.numel() for p in model.parameters())
    assert abs(model.n_params - 2e4) <= 600
    out = model(GraphData(synth_dir, 5.5, ["eps", "drude"]).batch([0, 1, 2]))
    assert out["eps"].shape == (3, 2, 41) and out["drude"].shape == (3,)
    assert (out["drude"] >= 0).all() and torch.isfinite(out["eps"]).all()


def test_too_small_and_unknown_arch_are_clear_errors():
    with pytest.raises(InputError, match="n_params.*cannot be as small"):
        plan("cgc", 1e3, ["eps", "drude"], n_points=101)
    with pytest.raises(InputError, match="field 'n_params'"):
        plan("cgc", 5e4, ["eps", "drude"], n_points=2001)  # the 2001-point head alone is larger
    with pytest.raises(InputError, match="unknown arch 'gat'"):
        plan("gat", 1e5, ["n"])


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = build_model("cgc", 1e4, ["n"]).state_dict()
    torch.manual_seed(3)
    b = build_model("cgc", 1e4, ["n"]).state_dict()
    torch.manual_seed(4)
    c = build_model("cgc", 1e4, ["n"]).state_dict()
    assert a.keys() == b.keys() == c.keys() and len(a) > 10
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the weights are random: the seed is what fixes them
