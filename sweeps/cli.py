"""The sweep commands of ``matscale``: ``sweep``, ``cluster check`` and ``server`` (registered by
:mod:`analysis.cli`, the root command)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SPECS = Path(__file__).resolve().parent / "specs"


def _cmd_sweep(args) -> None:
    from sweeps.driver import run_sweep, summary_table
    from sweeps.spec import load_spec
    from sweeps.tracking import redact_uri

    overrides = {"tracking_uri": args.tracking_uri} if args.tracking_uri else {}
    spec = load_spec(args.spec, overrides)
    summary = run_sweep(spec, address=args.address, resume=args.resume, dry_run=args.dry_run,
                        progress=not args.json, verbose=args.verbose)
    if args.json:
        print(json.dumps(summary))
    elif not args.dry_run:
        print(summary_table(summary, per_trial=args.verbose))
        print(f"MLflow: experiment {spec.experiment!r} at {redact_uri(spec.tracking_uri)}, parent run "
              f"{summary['parent_run_id']}")
    exit_status(summary)


def exit_status(summary: dict) -> None:
    """Exit non-zero when the sweep was interrupted (130) or trials failed (1)."""
    if summary.get("status") == "KILLED":
        print("interrupted: run the same command with --resume to continue", file=sys.stderr)
        raise SystemExit(130)
    if summary.get("status") == "FAILED":
        n = summary.get("failed") or len(summary.get("errors", []))
        print(f"{n} trials failed; see the FAILED runs in MLflow (tag matscale.failure_reason)", file=sys.stderr)
        raise SystemExit(1)


def _cmd_cluster_check(args) -> None:
    from sweeps.cluster_check import check_files

    for path, notes in check_files(args.files, args.spec):
        print(f"{path}: ok — {'; '.join(notes)}")


def _cmd_ui(args) -> None:
    from sweeps.ui import open_ui

    open_ui(args.tracking_uri, args.experiment, args.port)


def _cmd_server(args) -> None:
    from sweeps.server import serve

    serve(host=args.host, port=args.port, backend_store_uri=args.backend_store_uri,
          artifacts_destination=args.artifacts_destination, auth=args.auth, public=args.public, workers=args.workers,
          no_auth=args.no_auth)


def register(sub) -> None:
    """Add the sweep commands to the ``matscale`` parser."""
    from sweeps.tracking import DEFAULT_URI

    p = sub.add_parser("sweep", help="run a scaling sweep (Ray Tune + Optuna per point, tracked in MLflow)")
    p.add_argument("spec", help="sweep spec YAML (see sweeps/specs/)")
    p.add_argument("-v", "--verbose", action="store_true", help="also Ray Tune's per-trial tables and worker logs, "
                   "and one summary line per trial")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "local"),
                   help="local (default), auto (attach to this machine's cluster) or ray://HOST:10001")
    p.add_argument("--tracking-uri", help="override the spec's MLflow tracking URI")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same spec")
    p.add_argument("--dry-run", action="store_true", help="print every planned trial and its cost; run nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("cluster", help="cluster configs (see cluster/)")
    csub = p.add_subparsers(dest="cluster_command", required=True)
    p = csub.add_parser("check", help="validate cluster-launcher YAMLs and KubeRay manifests offline")
    p.add_argument("files", nargs="+", help="cluster/*.yaml, cluster/kuberay/*.yaml")
    p.add_argument("--spec", help="also check that one trial of this sweep spec fits a worker type")
    p.set_defaults(func=_cmd_cluster_check)

    p = sub.add_parser("ui", help="open the MLflow UI on a study's runs (starts it on 127.0.0.1 for a local store)")
    p.add_argument("--experiment", help="open this experiment's runs (default: the list of experiments)")
    p.add_argument("--tracking-uri", help=f"the study's MLflow store (default: $MLFLOW_TRACKING_URI or {DEFAULT_URI})")
    p.add_argument("--port", type=int, help="port to serve on (default: a free one)")
    p.set_defaults(func=_cmd_ui)

    p = sub.add_parser("server", help="start the MLflow tracking server (127.0.0.1:5000 unless told otherwise)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind: 127.0.0.1 (default); any other (a "
                   "private IP, 0.0.0.0, or a name of one) needs --public")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--backend-store-uri", help=f"default: $MLFLOW_BACKEND_STORE_URI or {DEFAULT_URI}")
    p.add_argument("--artifacts-destination", help="default: mlartifacts/ beside a SQLite store (s3://…, gs://… on "
                   "clusters)")
    p.add_argument("--workers", type=int, default=2, help="server worker processes")
    p.add_argument("--auth", action="store_true", help="MLflow basic auth (users and passwords)")
    p.add_argument("--public", action="store_true", help="allow binding a non-loopback address (no TLS: put a "
                   "proxy in front); needs --auth or --no-auth")
    p.add_argument("--no-auth", action="store_true", help="with --public: accept anyone who reaches the server (an "
                   "authenticating proxy is in front); prints a warning")
    p.set_defaults(func=_cmd_server)
