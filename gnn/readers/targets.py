"""Choosing targets: what every reader does with the ``targets`` a user asked for."""

from __future__ import annotations

from gnn.errors import InputError


def select_targets(available: dict, wanted: list[str] | None, *, file, entry) -> dict:
    """Keep the ``wanted`` targets (all when ``None``); a missing one is an error naming the entry."""
    if wanted is None:
        return available
    missing = [t for t in wanted if t not in available]
    if missing:
        raise InputError(f"target not found (available: {', '.join(sorted(available)) or 'none'})",
                         file=file, entry=entry, field=missing[0])
    return {t: available[t] for t in wanted}
