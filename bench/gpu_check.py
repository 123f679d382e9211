"""The checks that need a GPU, in one script for the day one is available:

    python bench/gpu_check.py --store data/gpu-check            # on a CUDA machine; builds the store if missing
    python bench/gpu_check.py --device cpu --sizes 1e4 --steps 3 --store data/gpu-check   # a CPU smoke run

1. **Precision**: on one batch of 64 structures, edge lengths under bf16 autocast against fp32 (must agree within
   1e-5 Å; a naive bf16 periodic shift is shown for scale), and the model's predictions and loss in bf16 against
   fp32 (|Δ| in units of each target's σ; tolerance of gnn/precision.py: max 5 %, mean 0.5 %).
2. **Throughput**: samples/s and peak memory of training steps at ``--sizes`` parameters (default 1e5, 1e6, 1e7)
   in each precision (fp32, bf16), data kept on the device.
3. **Packing** (CUDA only): the demo grid's model sizes at the GPU shares ``resources: auto`` gives them on this
   GPU (:func:`sweeps.resources.trial_need`, :func:`sweeps.resources.share_of`): as many trials as fit one GPU run at once, each in its own process
   with its share; GPU utilisation and memory are sampled with ``nvidia-smi`` every 0.5 s. Reports trials per GPU,
   mean utilisation, each trial's peak memory against its share, and the combined samples/s against one trial
   alone.

Needs torch and torch-geometric only when the store exists (build it where pymatgen is installed, e.g.
``matscale data synth --n 3000 --points 101 --out data/gpu-check``, and copy it). Prints a table per check and a
final JSON line (``"bench": "gpu_check"``); exits 2 with one line when CUDA is asked for and absent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_SIZES = (5e3, 2e4, 8e4)  #: sweeps/specs/demo.yaml's n_params axis
TARGETS = ["eps", "drude"]

ONE_TRIAL = """
import json, sys
sys.path.insert(0, {root!r})
from gnn.train import TrainConfig, train
m = train(TrainConfig(data={data!r}, arch="cgc", n_params={n_params}, targets={targets!r}, epochs={epochs},
                      n_train={n_train}, batch_size=32, patience=None, device="cuda", device_share={share},
                      num_threads=1))
print(json.dumps(m))
"""


def precision_check(store: str, device) -> dict:
    """Edge lengths and predictions under bf16 autocast against fp32 on one batch of 64 structures."""
    import torch

    from gnn.layers import edge_vectors
    from gnn.loader import GraphData
    from gnn.metrics import loss_fn
    from gnn.models import build_model

    data = GraphData(store, 5.5, TARGETS)
    idx = list(range(min(64, len(data))))
    b = data.to(device).batch(idx)
    ac = dict(device_type=device.type, dtype=torch.bfloat16)
    ref = edge_vectors(b).norm(dim=-1)
    with torch.no_grad(), torch.autocast(**ac):
        got = edge_vectors(b).norm(dim=-1)
        src, dst = b.edge_index
        naive = (b.pos[dst] - b.pos[src] + torch.bmm(b.edge_shift.unsqueeze(1), b.cell[b.batch[src]]).squeeze(1))
    torch.manual_seed(0)
    model = build_model("cgc", 1e5, TARGETS, data.y["eps"].shape[-1])
    model.set_target_stats({t: data.y[t].float() for t in TARGETS})
    model.to(device).eval()
    with torch.no_grad():
        fp32 = model(b)
        with torch.autocast(**ac):
            bf16 = model(b)
    out = {"edges": int(ref.numel()), "edge_err_max_A": float((got - ref).abs().max()),
           "naive_bf16_edge_err_max_A": float((naive.float().norm(dim=-1) - ref).abs().max()),
           "loss_fp32": float(loss_fn(fp32, b, {})), "loss_bf16": float(loss_fn(bf16, b, {}))}
    for t in TARGETS:
        err = (bf16[t].float() - fp32[t]) .abs() / data.y[t].float().std()
        out[f"{t}_err_max_sigma"], out[f"{t}_err_mean_sigma"] = float(err.max()), float(err.mean())
    out["ok"] = (out["edge_err_max_A"] <= 1e-5 and all(out[f"{t}_err_max_sigma"] <= 0.05 and
                                                        out[f"{t}_err_mean_sigma"] <= 0.005 for t in TARGETS))
    return out


def throughput(store: str, device, sizes: list[float], steps: int) -> list[dict]:
    """Samples/s and peak memory of ``steps`` training steps per size and precision (in this process; the peak
    is reset at the start of every run)."""
    from gnn.train import TrainConfig, train

    rows = []
    for n in sizes:
        for precision in ("fp32", "bf16"):
            m = train(TrainConfig(data=store, arch="cgc", n_params=n, targets=TARGETS, epochs=1, max_steps=steps,
                                  n_train=steps * 32, batch_size=32, patience=None, device=str(device),
                                  precision=precision, data_on_device=device.type == "cuda", num_threads=1))
            rows.append({"n_params": m["n_params"], "precision": m["precision"], "samples_per_s": m["samples_per_s"],
                         "peak_memory_mb": m["peak_memory_mb"], "data_time_frac": m["data_time_frac"]})
    return rows


class GpuSampler:
    """``nvidia-smi`` utilisation (%) and memory used (MiB) of GPU 0, every ``period`` seconds in a thread."""

    def __init__(self, period: float = 0.5):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,"
                                  "nounits", "-i", "0"], capture_output=True, text=True).stdout.split(",")
            if len(out) == 2:
                self.samples.append((float(out[0]), float(out[1])))
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _run_trials(store: str, n_params: float, share: float, k: int, epochs: int, n_train: int) -> tuple[list, dict]:
    code = ONE_TRIAL.format(root=str(ROOT), data=store, n_params=n_params, targets=TARGETS, epochs=epochs,
                            n_train=n_train, share=share)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with GpuSampler() as sampler:
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for _ in range(k)]
        results = []
        for p in procs:
            out, err = p.communicate()
            results.append(json.loads(out.strip().splitlines()[-1]) if p.returncode == 0 else {"error": err[-300:]})
        wall = time.perf_counter() - t0
    busy = [u for u, _ in sampler.samples]
    return results, {"wall_s": wall, "gpu_util_mean": statistics.mean(busy) if busy else None,
                     "gpu_memory_max_mib": max((m for _, m in sampler.samples), default=None)}


def packing(store: str, epochs: int, n_train: int) -> list[dict]:
    """The demo grid's model sizes packed on one GPU at ``resources: auto``'s shares (see the module docstring)."""
    import torch

    from gnn.store import Store
    from sweeps.resources import share_of, structures, trial_need

    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    n_points = len(Store(store).omega_ev)
    counted = structures(store)
    rows = []
    for n in DEMO_SIZES:
        need = trial_need("cgc", n, targets=TARGETS, n_points=n_points, batch=32, data=counted)
        share = share_of(need.gib, total_gib)
        k = max(1, int(round(1 / share)))
        alone, _ = _run_trials(store, n, share, 1, epochs, n_train)
        packed, gpu = _run_trials(store, n, share, k, epochs, n_train)
        ok = [r for r in packed if "error" not in r]
        budget_mib = share * total_gib * 1024
        rows.append({"n_params": n, "estimated_gib": need.gib, "share": share, "trials_per_gpu": k, "finished": len(ok),
                     "errors": [r["error"] for r in packed if "error" in r],
                     "peak_memory_mb_max": max((r["peak_memory_mb"] for r in ok), default=None),
                     "share_memory_mb": budget_mib,
                     "fits": len(ok) == k and all(r["peak_memory_mb"] <= budget_mib for r in ok),
                     "samples_per_s_alone": alone[0].get("samples_per_s"),
                     "samples_per_s_packed": sum(r["samples_per_s"] for r in ok), **gpu})
    return rows


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(float(text)) if kind is int and "e" in text.lower() else kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value
    return parse


def _sizes(text: str) -> list[float]:
    sizes = [_positive(float)(x) for x in text.split(",") if x.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("give one or more parameter counts, e.g. 1e5,1e6")
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="data/gpu-check", help="a store with eps and drude (built if missing)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run")
    ap.add_argument("--sizes", type=_sizes, default=[1e5, 1e6, 1e7], help="parameter counts of the throughput check")
    ap.add_argument("--steps", type=_positive(int), default=30, help="training steps per throughput row")
    ap.add_argument("--pack-epochs", type=_positive(int), default=3, help="epochs of each packed demo trial")
    ap.add_argument("--pack-n-train", type=_positive(int), default=1000,
                    help="training structures of each packed demo trial")
    args = ap.parse_args(argv)
    import torch

    from gnn.errors import InputError

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device here (use --device cpu for a smoke run)", file=sys.stderr)
        return 2
    try:
        return _checks(args, torch)
    except (InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _checks(args, torch) -> int:
    from gnn.train import _device

    device = _device(args.device)
    store = Path(args.store)
    if not (store / "meta.json").exists():
        from gnn.synth import synth_store

        print(f"building a synthetic store of 3000 structures at {store} (once)", flush=True)
        synth_store(3000, store, progress=False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}", flush=True)

    prec = precision_check(str(store), device)
    print(f"precision: edge |Δd| max {prec['edge_err_max_A']:.2e} Å (naive bf16 {prec['naive_bf16_edge_err_max_A']:.3f}"
          f" Å); eps |Δ|/σ max {prec['eps_err_max_sigma']:.4f}, drude {prec['drude_err_max_sigma']:.4f}; "
          f"loss {prec['loss_fp32']:.4f} fp32 vs {prec['loss_bf16']:.4f} bf16: {'ok' if prec['ok'] else 'FAIL'}",
          flush=True)

    rows = throughput(str(store), device, args.sizes, args.steps)
    print(f"{'params':>10} {'prec':>5} {'samples/s':>10} {'peak MiB':>9} {'data':>6}")
    for r in rows:
        print(f"{r['n_params']:>10} {r['precision']:>5} {r['samples_per_s']:>10.0f} {r['peak_memory_mb']:>9.0f} "
              f"{100 * r['data_time_frac']:>5.1f}%", flush=True)

    packed: list[dict] | str = "needs CUDA and nvidia-smi"
    if device.type == "cuda":
        packed = packing(str(store), args.pack_epochs, args.pack_n_train)
        print(f"{'params':>8} {'share':>6} {'per GPU':>7} {'util %':>7} {'peak/share MiB':>16} {'x alone':>8}")
        for r in packed:
            gain = r["samples_per_s_packed"] / r["samples_per_s_alone"] if r["samples_per_s_alone"] else float("nan")
            print(f"{r['n_params']:>8.0e} {r['share']:>6.3f} {r['trials_per_gpu']:>7} {r['gpu_util_mean'] or 0:>7.0f} "
                  f"{r['peak_memory_mb_max'] or 0:>7.0f}/{r['share_memory_mb']:<8.0f} {gain:>8.2f}"
                  + ("" if r["fits"] else "  DOES NOT FIT"), flush=True)
    else:
        print(f"packing: skipped ({packed})")
    print(json.dumps({"bench": "gpu_check", "device": name, "precision": prec, "throughput": rows,
                      "packing": packed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
