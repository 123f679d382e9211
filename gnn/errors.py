"""User-facing errors: one line that names the file, the entry and the field.

Code raises :class:`InputError` for anything a user can fix (bad data, bad arguments); the CLI prints
``error: <message>`` and exits with status 2, without a traceback. Everything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input, formatted as ``FILE: entry 'ID': field 'NAME': what is wrong``."""

    def __init__(self, message: str, *, file: str | Path | None = None, entry: object = None,
                 field: str | None = None):
        parts = []
        if file is not None:
            parts.append(str(file))
        if entry is not None:
            parts.append(f"entry {entry!r}" if isinstance(entry, str) else f"entry {entry}")
        if field is not None:
            parts.append(f"field {field!r}")
        parts.append(" ".join(str(message).split()))  # always one line
        super().__init__(": ".join(parts))
        self.file, self.entry, self.field = file, entry, field
