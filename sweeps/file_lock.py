"""An exclusive lock on a file beside what it protects, for work two processes must not do at once (creating
a SQLite store, building a data store). The kernel releases it when its holder dies, so a crash never leaves
it held."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path


@contextlib.contextmanager
def held(path: Path):
    """Hold ``path`` (created if needed) exclusively, waiting for another holder; where it cannot be created (a
    read-only folder, where nothing can be created either) go on without it."""
    try:
        f = open(path, "a")
    except OSError:
        yield
        return
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        f.close()
