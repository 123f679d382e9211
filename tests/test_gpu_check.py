"""bench/gpu_check.py stays runnable until a GPU is available: its CPU smoke run checks the same precision code."""

import json
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_gpu_check_smoke_run_on_cpu(synth_dir):
    res = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--store", str(synth_dir), "--sizes", "1e4",
                          "--steps", "2"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["bench"] == "gpu_check" and out["precision"]["ok"] is True
    assert out["precision"]["edge_err_max_A"] <= 1e-5 < out["precision"]["naive_bf16_edge_err_max_A"]
    assert [r["precision"] for r in out["throughput"]] == ["fp32", "bf16"]
    assert all(r["samples_per_s"] > 0 for r in out["throughput"]) and isinstance(out["packing"], str)
    if not torch.cuda.is_available():
        res = subprocess.run([sys.executable, str(SCRIPT), "--store", str(synth_dir)], capture_output=True, text=True)
        assert res.returncode == 2 and res.stderr.strip() == "error: no CUDA device here (use --device cpu for a " \
                                                             "smoke run)"
