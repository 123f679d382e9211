"""Run a sweep from a script: ``python sweeps/run.py --spec SPEC`` — what ``ray submit CLUSTER.yaml sweeps/run.py
-- --spec …`` executes on a cluster head. It attaches to the running cluster (``--address auto``) by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file, from a checkout



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--address", default="auto")
    ap.add_argument("--tracking-uri")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    spec = Path(args.spec)
    if not spec.is_absolute() and not spec.exists():  # `ray submit` runs this from the home directory
        import sweeps

        in_checkout = Path(sweeps.__file__).resolve().parents[1] / spec
        spec = in_checkout if in_checkout.exists() else spec
    cmd = ["sweep", str(spec), "--address", args.address]
    cmd += ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    cmd += ["--resume"] * args.resume + ["--dry-run"] * args.dry_run
    return _sweep_command(cmd)


def _sweep_command(argv: list[str]) -> int:
    """``matscale sweep ARGV…`` without the rest of the command line (this file sits in the sweeps layer)."""
    from gnn.cli import run_command
    from sweeps.cli import register

    parser = argparse.ArgumentParser(prog="matscale")
    register(parser.add_subparsers(dest="command", required=True))
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
