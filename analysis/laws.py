"""Scaling laws: formulas with fixed parameter names, and how each is parametrised for fitting.

One-dimensional laws (x is D, the training-set size, or N, the parameter count):

    power        L = (x0 / x)^alpha
    floor        L = L_inf + (x0 / x)^alpha
    broken       L = (x_c / x)^alpha2 · (1 + x_c / x)^(alpha1 − alpha2)      slope alpha1 below x_c, alpha2 above
    broken_amp   L = A · (x_c / x)^alpha2 · (1 + x_c / x)^(alpha1 − alpha2)
    bnsl:K       L = a + b · x^(−c0) · Π_{i=1..K} (1 + (x / d_i)^(1 / f_i))^(−c_i · f_i)   (Caballero et al. 2022)

Joint laws (x = N, x2 = D):

    chinchilla     L = E + A / N^alpha + B / D^beta
    kaplan         L = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D
    kaplan_broken  L = [(N_c / N)^(alpha_N / alpha_D2) + (D_c / D) · (1 + D_c / D)^(alpha_D1 / alpha_D2 − 1)]^alpha_D2

Positivity by reparametrisation: scales (x0, x_c, A, b, d_i, f_i, B, N_c, D_c, and A of chinchilla) are
fitted as log10 values; exponents of power-type laws and the floors L_inf, a, E are bounded below by 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gnn.errors import InputError

LOG10 = np.log(10.0)


@dataclass(frozen=True)
class Param:
    """One parameter: its name, whether it is fitted as log10, bounds in the fitted space, start values."""

    name: str
    log: bool = False
    lower: float = -np.inf
    upper: float = np.inf
    starts: tuple = ()


@dataclass(frozen=True)
class Law:
    """A scaling law: ``predict(x, params)``; ``joint`` laws take ``x = (N, D)``."""

    name: str
    params: tuple[Param, ...]
    formula: str
    joint: bool = False
    kind: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def k(self) -> int:
        return len(self.params)

    def natural(self, theta: np.ndarray) -> dict[str, float]:
        """Fitted-space vector → named natural parameters."""
        return {p.name: float(10.0 ** t if p.log else t) for p, t in zip(self.params, theta)}


    def predict(self, x, values: dict[str, float]) -> np.ndarray:
        return _PREDICT[self.kind](x, values, self)

    def predict_theta(self, x, theta: np.ndarray) -> np.ndarray:
        return self.predict(x, self.natural(theta))


def _power(x, p, law):
    return (p["x0"] / x) ** p["alpha"]


def _floor(x, p, law):
    return p["L_inf"] + (p["x0"] / x) ** p["alpha"]


def _broken(x, p, law):
    r = p["x_c"] / x
    return p.get("A", 1.0) * r ** p["alpha2"] * (1.0 + r) ** (p["alpha1"] - p["alpha2"])


def _bnsl(x, p, law):
    y = p["b"] * x ** (-p["c0"])
    for i in range(1, law.extra["breaks"] + 1):
        f = p[f"f{i}"]
        y = y * (1.0 + (x / p[f"d{i}"]) ** (1.0 / f)) ** (-p[f"c{i}"] * f)
    return p["a"] + y


def _chinchilla(x, p, law):
    n, d = x
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def _kaplan(x, p, law):
    n, d = x
    return ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / d) ** p["alpha_D"]


def _kaplan_broken(x, p, law):
    n, d = x
    r = p["D_c"] / d
    inner = (p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D2"]) + r * (1.0 + r) ** (p["alpha_D1"] / p["alpha_D2"] - 1.0)
    return inner ** p["alpha_D2"]


_PREDICT = {"power": _power, "floor": _floor, "broken": _broken, "broken_amp": _broken, "bnsl": _bnsl,
            "chinchilla": _chinchilla, "kaplan": _kaplan, "kaplan_broken": _kaplan_broken}


def _scale(name: str, span: tuple[float, float]) -> Param:
    lo, hi = span
    return Param(name, log=True, lower=lo - 6, upper=hi + 6, starts=tuple(np.linspace(lo - 1, hi + 1, 7)))


def make_law(name: str, x_span: tuple[float, float], y_span: tuple[float, float],
             x2_span: tuple[float, float] | None = None) -> Law:
    """The law ``name`` with start grids and bounds adapted to the data's log10 ranges of x (and x2) and y."""
    y_lo = y_span[0]
    alphas = (0.05, 0.2, 0.5, 1.0)
    slopes = (-0.2, 0.1, 0.4, 0.8)
    if name == "power":
        return Law(name, (_scale("x0", x_span), Param("alpha", lower=0.0, upper=10.0, starts=alphas)),
                   "L = (x0/x)^alpha", kind="power")
    if name == "floor":
        return Law(name, (_scale("x0", x_span), Param("alpha", lower=0.0, upper=10.0, starts=alphas),
                          Param("L_inf", lower=0.0, starts=(0.0, 0.5 * 10**y_lo, 0.9 * 10**y_lo))),
                   "L = L_inf + (x0/x)^alpha", kind="floor")
    if name in ("broken", "broken_amp"):
        ps = (_scale("x_c", x_span), Param("alpha1", lower=-5.0, upper=5.0, starts=slopes),
              Param("alpha2", lower=-5.0, upper=5.0, starts=slopes))
        if name == "broken_amp":
            ps = ps + (Param("A", log=True, lower=-6.0, upper=6.0, starts=(0.0,)),)
        formula = "L = (x_c/x)^alpha2 (1 + x_c/x)^(alpha1 - alpha2)"
        return Law(name, ps, ("A " if name == "broken_amp" else "") + formula, kind="broken")
    if name.startswith("bnsl"):
        try:
            breaks = int(name.split(":", 1)[1]) if ":" in name else 1
        except ValueError:
            raise InputError(f"bnsl needs a number of breaks, like bnsl:1 (got {name!r})", field="law") from None
        if breaks < 1:
            raise InputError("bnsl needs at least one break", field="law")
        ps = [Param("a", lower=0.0, starts=(0.0, 0.5 * 10**y_lo)),
              Param("b", log=True, lower=-10.0, upper=20.0, starts=(y_span[1], y_span[1] + x_span[1] * 0.3)),
              Param("c0", lower=-2.0, upper=5.0, starts=(0.1, 0.3))]
        inner = np.linspace(x_span[0], x_span[1], breaks + 2)[1:-1]
        for i in range(1, breaks + 1):
            ps += [Param(f"c{i}", lower=-20.0, upper=20.0, starts=(-0.2, 0.3)),
                   Param(f"d{i}", log=True, lower=x_span[0] - 3, upper=x_span[1] + 3, starts=(inner[i - 1],)),
                   Param(f"f{i}", log=True, lower=-3.0, upper=1.5, starts=(-0.5, 0.0))]
        return Law(f"bnsl:{breaks}", tuple(ps), "y = a + b x^-c0 prod_i (1 + (x/d_i)^(1/f_i))^(-c_i f_i)",
                   kind="bnsl", extra={"breaks": breaks})
    if name in ("chinchilla", "kaplan", "kaplan_broken"):
        if x2_span is None:
            raise InputError(f"law {name!r} is joint in N and D: give --x2 (D)", field="law")
        n_span, d_span = x_span, x2_span
        if name == "chinchilla":
            return Law(name, (Param("E", lower=0.0, starts=(0.0, 0.5 * 10**y_lo)),
                              Param("A", log=True, lower=-10, upper=30, starts=(0.0, 2.0, 5.0)),
                              Param("alpha", lower=0.0, upper=5.0, starts=(0.1, 0.5)),
                              Param("B", log=True, lower=-10, upper=30, starts=(0.0, 2.0, 5.0)),
                              Param("beta", lower=0.0, upper=5.0, starts=(0.1, 0.5))),
                       "L = E + A/N^alpha + B/D^beta", joint=True, kind="chinchilla")
        nc, dc = _scale("N_c", n_span), _scale("D_c", d_span)
        if name == "kaplan":
            return Law(name, (nc, dc, Param("alpha_N", lower=1e-4, upper=5.0, starts=(0.1, 0.5)),
                              Param("alpha_D", lower=1e-4, upper=5.0, starts=(0.1, 0.5))),
                       "L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D", joint=True, kind="kaplan")
        return Law(name, (nc, dc, Param("alpha_N", lower=1e-4, upper=5.0, starts=(0.1, 0.5)),
                          Param("alpha_D1", lower=1e-4, upper=5.0, starts=(0.1, 0.3)),
                          Param("alpha_D2", lower=1e-4, upper=5.0, starts=(0.2, 0.5))),
                   "L = [(N_c/N)^(alpha_N/alpha_D2) + (D_c/D)(1 + D_c/D)^(alpha_D1/alpha_D2 - 1)]^alpha_D2",
                   joint=True, kind="kaplan_broken")
    raise InputError(f"unknown law {name!r}; choose auto, power, floor, broken, broken_amp, bnsl:K, chinchilla, "
                     "kaplan or kaplan_broken", field="law")


ONE_D = ("power", "floor", "broken", "broken_amp")
JOINT = ("chinchilla", "kaplan", "kaplan_broken")
