"""Command-line start-up benchmark: how long ``matscale … --help`` takes, against ``python -c pass``.

    python bench/cli_startup.py [--repeat 7] [--base REV]

Each command is a fresh process (``python -m analysis.cli …``, what the ``matscale`` script runs), timed wall-clock
and in CPU seconds (user + system of the child); the commands run interleaved, round after round, so a noisy
machine slows them alike. ``--base REV`` also times the same commands at another git revision (a temporary
worktree, its root command located the way that revision had it), interleaved with this checkout's. Reports
the median per command, its excess over ``python -c pass``, and the ratio to the base revision. Prints a table
and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [[], ["data", "import"], ["data", "synth"], ["train"], ["sweep"], ["cluster", "check"], ["server"],
            ["demo"], ["fit"], ["analyze"], ["refine"]]
TARGET_S = 1.0  #: every --help within this on the reference machine (2 cores)


def _time(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _root_module(tree: Path) -> str:
    """The module of the ``matscale`` script in a checkout (pyproject's [project.scripts])."""
    for line in (tree / "pyproject.toml").read_text().splitlines():
        if line.strip().startswith("matscale") and "=" in line:
            return line.split("=", 1)[1].strip().strip('"').split(":")[0]
    raise SystemExit(f"{tree}: no matscale script in pyproject.toml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="rounds (each runs every command once)")
    ap.add_argument("--base", help="also time this git revision (e.g. HEAD~5), interleaved")
    args = ap.parse_args()

    trees = {"this": ROOT}
    tmp = None
    if args.base:
        tmp = tempfile.TemporaryDirectory(prefix="matscale-bench-cli-")
        trees["base"] = Path(tmp.name) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(trees["base"]), args.base],
                       check=True, capture_output=True)
    try:
        cases = [("python -c pass", "this", [sys.executable, "-c", "pass"])]
        for label, tree in trees.items():
            module = _root_module(tree)
            cases += [(" ".join(["matscale", *c, "--help"]), label, [sys.executable, "-m", module, *c, "--help"])
                      for c in COMMANDS]
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {(n, t): [] for n, t, _ in cases}
        for _ in range(args.repeat):
            for name, tree, cmd in cases:
                env = {**os.environ, "PYTHONPATH": str(trees[tree]), "OMP_WAIT_POLICY": "PASSIVE"}
                samples[name, tree].append(_time(cmd, trees[tree], env))
    finally:
        if tmp is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["base"])],
                           capture_output=True)
            tmp.cleanup()

    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in samples.items()}
    python_s = med["python -c pass", "this"][0]
    rows = []
    print(f"{'command':<36} {'wall s':>7} {'cpu s':>7} {'- python':>9}" + (f" {'base s':>7} {'speed-up':>8}"
                                                                          if args.base else ""))
    for name, tree, _ in cases:
        if tree != "this":
            continue
        wall, cpu = med[name, tree]
        row = {"command": name, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "excess_s": round(wall - python_s, 3)}
        line = f"{name:<36} {wall:>7.3f} {cpu:>7.3f} {wall - python_s:>9.3f}"
        if args.base and (name, "base") in med:
            row["base_wall_s"] = round(med[name, "base"][0], 3)
            row["speedup"] = round(med[name, "base"][0] / wall, 2)
            line += f" {med[name, 'base'][0]:>7.3f} {row['speedup']:>7.1f}×"
        rows.append(row)
        print(line)
    helps = [r for r in rows if r["command"] != "python -c pass"]
    worst = max(helps, key=lambda r: r["wall_s"])
    print(f"slowest --help: {worst['command']} {worst['wall_s']:.3f} s (target ≤ {TARGET_S:.1f} s); "
          f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, {args.repeat} rounds")
    print(json.dumps({"bench": "cli_startup", "python_s": round(python_s, 3), "slowest_help_s": worst["wall_s"],
                      "target_s": TARGET_S, "within_target": worst["wall_s"] <= TARGET_S, "rows": rows,
                      "loadavg": round(os.getloadavg()[0], 2), "repeat": args.repeat}))


if __name__ == "__main__":
    main()
