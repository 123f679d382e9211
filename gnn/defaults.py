"""Default values shared across gnn and its command line, each defined once; importable without torch or numpy
(so ``--help`` texts can show them cheaply)."""

DEFAULT_CUTOFF = 5.5  #: Å; the graph cutoff a store's graphs are built for and models use unless told otherwise
OMEGA_MAX_EV = 20.0  #: the default frequency grid spans [0, OMEGA_MAX_EV] eV (:func:`gnn.synth.omega_grid`)
DEFAULT_POINTS = 101  #: points of the default frequency grid (2001 reproduces the paper's grid)
DEFAULT_SPLIT = (0.8, 0.1, 0.1)  #: train, validation and test shares of the entries (:func:`gnn.splits.grouped_split`)
DEFAULT_NUM_LAYERS = 3  #: interaction blocks of a model
PRECISIONS = ("auto", "fp32", "bf16")
#: on a GPU a run keeps the data on the device when they take at most this fraction of its share of the GPU's memory
RESIDENT_FRACTION = 0.25  #: a run's numeric precision (:mod:`gnn.precision`)
