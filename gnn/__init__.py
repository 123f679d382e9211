"""gnn: one scaling-law trial — materials data, periodic graphs, sized GNNs and their training.

Entry points::

    from gnn import build_model, train, TrainConfig
    model = build_model("cgc", n_params=1e5, targets=["eps", "drude"], n_points=101)
    metrics = train(TrainConfig(data="data/demo", arch="transformer", n_params=3e5, fraction=0.5, epochs=20))
"""

from gnn.errors import InputError
from gnn.models import ARCHS, CrystalGNN, build_model, count_params
from gnn.store import Store
from gnn.train import DivergedError, TrainConfig, train

__all__ = ["ARCHS", "CrystalGNN", "DivergedError", "InputError", "Store", "TrainConfig", "build_model",
           "count_params", "train"]
