"""Loss and metrics, each defined once (units: ε is dimensionless, ω and ω_D in eV).

Loss (as in the paper): ``MAE(ε) + w_drude · MAE(ω_D) + Σ_s w_s · MAE(s)``, where MAE(ε) averages |Δ| over
Re and Im, all frequencies and all materials.

Metrics on a split:
    eps_mae, eps_re_mae, eps_im_mae       mean absolute errors of ε, Re ε, Im ε
    eps_re_r2, eps_im_r2                  1 − SS_res / SS_tot over all (material, ω)
    eps_sc                                similarity coefficient SC = 1 − ∫|ε̂ − ε| dω / ∫|ε| dω (complex modulus,
                                          trapezoid rule on omega_ev), averaged over materials
    drude_mae, drude_mape                 MAE (eV) and mean absolute percentage error (%, targets > 1e-6 eV)
    <scalar>_mae, <scalar>_r2             for every other scalar target
    loss                                  the training loss above
"""

from __future__ import annotations

import numpy as np
import torch

from gnn.store import SPECTRUM


def loss_fn(pred: dict[str, torch.Tensor], batch, weights: dict[str, float]) -> torch.Tensor:
    """The training loss of a batch (a scalar tensor)."""
    total = 0.0
    for name, p in pred.items():
        y = batch[f"y_{name}"]
        total = total + weights.get(name, 1.0) * (p - y).abs().mean()
    return total


def _r2(pred: np.ndarray, true: np.ndarray) -> float:
    ss_tot = ((true - true.mean()) ** 2).sum()
    return float(1.0 - ((pred - true) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def similarity_coefficient(pred: np.ndarray, true: np.ndarray, omega_ev: np.ndarray) -> np.ndarray:
    """SC per material for ``[n, 2, K]`` (Re, Im) spectra on ``omega_ev``."""
    diff = np.abs((pred[:, 0] - true[:, 0]) + 1j * (pred[:, 1] - true[:, 1]))
    norm = np.abs(true[:, 0] + 1j * true[:, 1])
    return 1.0 - np.trapezoid(diff, omega_ev, axis=1) / np.maximum(np.trapezoid(norm, omega_ev, axis=1), 1e-12)


def evaluate_arrays(pred: dict[str, np.ndarray], true: dict[str, np.ndarray], weights: dict[str, float],
                    omega_ev: np.ndarray | None) -> dict[str, float]:
    """All metrics of one split from stacked predictions and labels."""
    m: dict[str, float] = {}
    loss = 0.0
    for name, p in pred.items():
        t = true[name]
        mae = float(np.abs(p - t).mean())
        loss += weights.get(name, 1.0) * mae
        m[f"{name}_mae"] = mae
        if name == SPECTRUM:
            m[f"{name}_re_mae"] = float(np.abs(p[:, 0] - t[:, 0]).mean())
            m[f"{name}_im_mae"] = float(np.abs(p[:, 1] - t[:, 1]).mean())
            m[f"{name}_re_r2"], m[f"{name}_im_r2"] = _r2(p[:, 0], t[:, 0]), _r2(p[:, 1], t[:, 1])
            m[f"{name}_sc"] = float(similarity_coefficient(p, t, omega_ev).mean())
        else:
            m[f"{name}_r2"] = _r2(p, t)
            if name == "drude":
                ok = np.abs(t) > 1e-6
                m["drude_mape"] = float(100.0 * np.mean(np.abs(p[ok] - t[ok]) / np.abs(t[ok]))) if ok.any() \
                    else float("nan")
    m["loss"] = float(loss)
    return m
