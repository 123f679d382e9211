"""What one trial asks Ray for (sweeps.resources): the model size and the GPU's memory decide the share."""

from types import SimpleNamespace

from sweeps.resources import GPU_MEMORY_GIB, gpu_memory_gib, trial_resources


def _spec(resources="auto", n_params=(1e4, 1e6)):
    return SimpleNamespace(resources=resources, n_params=list(n_params))


def test_fixed_resources_are_the_specs():
    assert trial_resources(_spec({"cpu": 2, "gpu": 0.5}), gpus=8) == {"cpu": 2, "gpu": 0.5}


def test_auto_on_cpus_asks_no_gpu():
    assert trial_resources(_spec(), gpus=0) == {"cpu": 1, "gpu": 0}


def test_auto_share_follows_the_model_size_and_the_gpu():
    small = trial_resources(_spec(), gpus=1)["gpu"]
    assert small == 1 / 8  # 2 GiB + 64 MB on 80 GiB: the smallest share
    # 3e8 parameters need 2 + 64·3e8 B ≈ 19.9 GiB: a quarter of an 80 GiB card (rounded up), all of a 16 GiB one
    assert trial_resources(_spec(), gpus=1, n_params=3e8)["gpu"] == 0.25
    assert trial_resources(_spec(), gpus=1, n_params=3e8, gpu_memory=16)["gpu"] == 1.0
    # the default size is the spec's largest
    assert trial_resources(_spec(n_params=[3e8]), gpus=1) == trial_resources(_spec(), gpus=1, n_params=3e8)


def test_gpu_memory_from_rays_accelerator_type():
    assert gpu_memory_gib({"GPU": 4, "accelerator_type:T4": 1}) == 16
    assert gpu_memory_gib({"GPU": 4, "accelerator_type:H100": 1, "accelerator_type:L4": 1}) == 24  # the smallest
    assert gpu_memory_gib({"GPU": 4}) == GPU_MEMORY_GIB
