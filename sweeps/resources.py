"""What one trial asks Ray for: the spec's ``resources``, or with ``resources: auto`` one CPU and, where the cluster
has GPUs, a share of one GPU sized to the model.

A trial's GPU memory ≈ :data:`CONTEXT_GIB` (CUDA context, graph batch) + :data:`BYTES_PER_PARAM` × parameters
(fp32 weights, gradients and AdamW's two moments are 16 B per parameter; ×4 leaves room for activations). The share
is that over one GPU's memory, rounded *up* to eighths (small models pack 8 to a GPU), at most one GPU.
"""

from __future__ import annotations

import math

SHARE = 1 / 8  #: the smallest GPU share a trial gets
CONTEXT_GIB = 2.0
BYTES_PER_PARAM = 64
GPU_MEMORY_GIB = 80.0  #: one GPU's memory when Ray does not name the accelerator (cluster/*.yaml: 80 GiB cards)
#: memory (GiB) of the accelerator types Ray reports (``accelerator_type:NAME`` resources); the smaller variant
#: where a name covers two (A100: 40 or 80 GiB) so that a share never overfills a card
ACCELERATOR_GIB = {"H200": 141.0, "H100": 80.0, "A100-80G": 80.0, "A100-40G": 40.0, "A100": 40.0, "L40S": 48.0,
                   "L4": 24.0, "A10G": 24.0, "T4": 16.0, "V100": 16.0}


def gpu_memory_gib(cluster_resources: dict) -> float:
    """The memory of the smallest GPU type in Ray's ``cluster_resources()`` (:data:`GPU_MEMORY_GIB` if unnamed)."""
    named = [ACCELERATOR_GIB[k.split(":", 1)[1]] for k in cluster_resources
             if k.startswith("accelerator_type:") and k.split(":", 1)[1] in ACCELERATOR_GIB]
    return min(named, default=GPU_MEMORY_GIB)


def trial_resources(spec, *, gpus: float, n_params: float | None = None,
                    gpu_memory: float = GPU_MEMORY_GIB) -> dict:
    """``{"cpu": …, "gpu": …}`` of one trial of ``spec``.

    Args:
        gpus: GPUs in the cluster (0: CPU trials). n_params: the model's parameter count (default: the spec's
            largest, so that every trial of the sweep fits its share). gpu_memory: one GPU's memory in GiB.
    """
    if spec.resources != "auto":
        return {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}
    if not gpus:
        return {"cpu": 1, "gpu": 0}
    n = max(spec.n_params) if n_params is None else n_params
    need_gib = CONTEXT_GIB + BYTES_PER_PARAM * n / 2**30
    return {"cpu": 1, "gpu": min(1.0, SHARE * max(1, math.ceil(need_gib / gpu_memory / SHARE)))}


def slots(spec, resources: dict, *, cpus: float, gpus: float) -> int:
    """How many trials asking ``resources`` run at once on ``cpus`` and ``gpus`` (and ``spec.max_concurrent``)."""
    n = cpus / max(resources["cpu"], 1e-9)
    if resources["gpu"]:
        n = min(n, max(gpus, 1) / resources["gpu"])
    if spec.max_concurrent:
        n = min(n, spec.max_concurrent)
    return max(1, int(n))
