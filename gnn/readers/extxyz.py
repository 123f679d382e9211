"""Extended-XYZ (or any ASE-readable) files: periodic frames with scalar targets in ``atoms.info``.

``src`` is a file or a folder of ``.xyz``/``.extxyz`` files; every frame is one entry, named by its ``info``
key ``id`` (or ``material_id``), else ``<file>:<frame>``. Targets are the numeric scalars of ``info`` plus those
ASE moves into the calculator (``energy``, ``free_energy``); without ``targets``, all numeric keys of the first
frame are taken. Frames must be periodic in all three directions.
"""

from __future__ import annotations

import numbers
from pathlib import Path

from gnn.errors import InputError
from gnn.readers.targets import select_targets
from gnn.store import Entry

ID_KEYS = ("id", "material_id", "mat_id")


def _scalars(atoms) -> dict[str, float]:
    out = {}
    found = dict(atoms.info)
    if atoms.calc is not None:
        found.update({k: v for k, v in atoms.calc.results.items() if k in ("energy", "free_energy")})
    for key, value in found.items():
        if key not in ID_KEYS and isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def read(src: Path, targets: list[str] | None = None):
    """Entries with the chosen scalar targets; no frequency grid."""
    from ase.io import read as ase_read
    from pymatgen.io.ase import AseAtomsAdaptor

    src = Path(src)
    files = sorted(p for p in src.iterdir() if p.suffix in (".xyz", ".extxyz")) if src.is_dir() else [src]
    if not files:
        raise InputError("no .xyz or .extxyz files in the folder", file=src)

    def entries():
        wanted = targets
        for path in files:
            try:
                frames = ase_read(path, index=":")
            except Exception as exc:  # ASE raises many types on malformed files
                raise InputError(f"unreadable ({type(exc).__name__}: {exc})", file=path) from None
            for k, atoms in enumerate(frames):
                entry_id = str(next((atoms.info[key] for key in ID_KEYS if key in atoms.info), f"{path.name}:{k}"))
                if not atoms.pbc.all() or atoms.cell.rank < 3:
                    raise InputError("frame is not periodic in 3-D (needs a cell and pbc=T T T)", file=path,
                                     entry=entry_id, field="pbc")
                values = _scalars(atoms)
                if wanted is None:
                    wanted = sorted(values)
                    if not wanted:
                        raise InputError("no numeric targets in info", file=path, entry=entry_id, field="info")
                yield Entry(entry_id, AseAtomsAdaptor.get_structure(atoms),
                            select_targets(values, wanted, file=path, entry=entry_id), str(path))

    return entries(), None
