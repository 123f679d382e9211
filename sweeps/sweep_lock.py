"""One driver per sweep: the parent run is a claim, kept alive by a heartbeat.

Two ``matscale sweep`` commands of the same spec on one experiment would train every trial twice. So the
parent run of a sweep invocation carries a claim — tags ``matscale.host``, ``matscale.pid``,
``matscale.claimed_at`` and ``matscale.heartbeat`` (epoch ms), the heartbeat refreshed every
:data:`HEARTBEAT_S` by a daemon thread of the driver. A driver that starts:

1. :func:`expire_stale` — a RUNNING parent of the same spec whose heartbeat is older than :data:`TTL_S`, or
   whose driver ran on this host under a pid that no longer exists, is marked KILLED with the reason in
   ``matscale.end_reason``, and so are its unfinished trial runs (a crash never blocks the next run);
2. :func:`check_free` refuses at once while another live driver holds the spec (before Ray starts);
3. :func:`claim` — writes its claim, waits :data:`SETTLE_S` so that a claim written at the same moment is
   visible, then looks for other live claims of the spec: the earliest ``(claimed_at, run id)`` wins, every
   later one gives its claim up and refuses in one line naming the running sweep (host, pid, since).

Only run tags and statuses are used, so it works the same on a SQLite store and on a tracking server.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time

from gnn.errors import InputError
from sweeps import record, tracking
from sweeps.record import CLAIMED_AT, HEARTBEAT, HOST, PID

HEARTBEAT_S = 10.0  #: how often a running driver refreshes its claim
TTL_S = 60.0  #: a claim not refreshed for this long belongs to a dead driver
SETTLE_S = 1.0  #: wait between writing a claim and reading the others (longer than one write)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_parents(c, exp_id: str, spec_hash: str) -> list:
    return tracking.search_all(c, [exp_id], record.runs_filter(record.KIND_SWEEP, spec_hash=spec_hash,
                                                                 status=record.RUNNING))


def stale_reason(run, now_ms: int | None = None) -> str | None:
    """Why a RUNNING parent's driver is gone, or None while it may still be alive."""
    tags = run.data.tags
    now_ms = _now_ms() if now_ms is None else now_ms
    host, pid = tags.get(HOST), tags.get(PID)
    if host == socket.gethostname() and pid and pid.isdigit() and not _alive(int(pid)):
        return f"driver pid {pid} on {host} is gone"
    beat = int(tags.get(HEARTBEAT) or run.info.start_time)
    if now_ms - beat > TTL_S * 1000:
        return f"no heartbeat from {host or 'its driver'} for {(now_ms - beat) / 1000:.0f} s"
    return None


def expire_stale(c, exp_id: str, spec_hash: str) -> list[str]:
    """Mark the parents of dead drivers of this spec KILLED (and their unfinished trials); their run ids."""
    expired = []
    for run in _live_parents(c, exp_id, spec_hash):
        reason = stale_reason(run)
        if reason is None:
            continue
        tracking.log_batch(c, run.info.run_id, tags={record.END_REASON: f"stale: {reason}"})
        record.mark_unfinished(c, exp_id, run.info.run_id, record.KILLED)
        c.set_terminated(run.info.run_id, record.KILLED)
        expired.append(run.info.run_id)
    return expired


def claim_tags() -> dict:
    """The tags that make a parent run a claim (given to ``create_run``, or set again on a resumed parent)."""
    now = _now_ms()
    return {HOST: socket.gethostname(), PID: str(os.getpid()), CLAIMED_AT: str(now),
            HEARTBEAT: str(now)}


def _running(run, file) -> InputError:
    tags = run.data.tags
    since = dt.datetime.fromtimestamp(int(tags[CLAIMED_AT]) / 1000).strftime("%Y-%m-%d %H:%M:%S")
    return InputError(f"this sweep is already running (host {tags.get(HOST)}, pid {tags.get(PID)}, "
                      f"since {since}, parent run {run.info.run_id}); wait for it to end, or stop it and run again",
                      file=file)


def _live_claims(c, exp_id: str, spec_hash: str, but: str | None = None) -> list:
    return [r for r in _live_parents(c, exp_id, spec_hash) if r.info.run_id != but and
            CLAIMED_AT in r.data.tags and stale_reason(r) is None]


def check_free(c, exp_id: str, spec_hash: str, *, file=None) -> None:
    """Refuse at once (before Ray starts) while another live driver holds this sweep."""
    live = _live_claims(c, exp_id, spec_hash)
    if live:
        raise _running(min(live, key=lambda r: int(r.data.tags[CLAIMED_AT])), file)


def claim(c, exp_id: str, spec_hash: str, parent_id: str, *, fresh: bool = True, file=None) -> None:
    """Hold the sweep for ``parent_id`` (RUNNING with :func:`claim_tags`) or refuse in one line. A losing
    ``fresh`` parent (created for this claim) is deleted; a resumed one goes back to KILLED."""
    time.sleep(SETTLE_S)
    mine = c.get_run(parent_id)
    rank = (int(mine.data.tags[CLAIMED_AT]), parent_id)
    earlier = [r for r in _live_claims(c, exp_id, spec_hash, but=parent_id)
               if (int(r.data.tags[CLAIMED_AT]), r.info.run_id) < rank]
    if earlier:
        if fresh:
            c.delete_run(parent_id)  # it never started anything: leave no trace in the experiment
        else:
            c.set_terminated(parent_id, record.KILLED)
        raise _running(min(earlier, key=lambda r: int(r.data.tags[CLAIMED_AT])), file)


class Heartbeat:
    """Refresh a parent's ``matscale.heartbeat`` every :data:`HEARTBEAT_S` while the sweep runs (a context)."""

    def __init__(self, c, parent_id: str):
        self.c, self.parent_id = c, parent_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="matscale-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.c.set_tag(self.parent_id, HEARTBEAT, str(_now_ms()))
            except Exception:  # noqa: BLE001 - a missed beat is retried; a long outage expires the claim
                pass

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
