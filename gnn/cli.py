"""The one-trial commands of ``matscale``: ``data import|synth|info`` and ``train`` (registered by
:mod:`analysis.cli`, the root command), and :func:`run_command`, how every command reports user errors.
"""

from __future__ import annotations

import argparse
import json
import sys

from gnn.errors import InputError
from gnn.defaults import DEFAULT_CUTOFF, DEFAULT_POINTS, OMEGA_MAX_EV


def _targets(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _cmd_import(args) -> None:
    from gnn.readers import import_store

    path = import_store(args.kind, args.src, args.out, targets=_targets(args.targets), points=args.points,
                        cutoff=args.cutoff, overwrite=args.overwrite, workers=args.workers,
                        min_distance_a=args.min_distance)
    _print_info(path, args.json)


def _cmd_synth(args) -> None:
    from gnn.synth import synth_store

    gap = {k: v for k, v in (("shift_ev", args.gap_shift_ev), ("broaden", args.gap_broaden),
                             ("drude_scale", args.gap_drude_scale)) if v is not None}
    path = synth_store(args.n, args.out, points=args.points, seed=args.seed, noise=args.noise, gap=gap or None,
                       cutoff=args.cutoff, overwrite=args.overwrite)
    _print_info(path, args.json)


def _print_info(path, as_json: bool) -> None:
    from gnn.store import Store

    info = Store(path).info()
    if as_json:
        print(json.dumps(info))
        return
    print(f"store      {info['path']}  ({info['kind']} from {info['source']})")
    print(f"structures {info['n_structures']}  ({info['n_formulas']} formulas, {info['elements']} elements, "
          f"{info['atoms_per_cell']['min']}–{info['atoms_per_cell']['max']} atoms per cell)")
    if info["omega_ev"]:
        g = info["omega_ev"]
        print(f"omega_ev   {g['points']} points on [{g['min']:g}, {g['max']:g}] eV")
    for name, t in info["targets"].items():
        shape = "×".join(map(str, t["shape"])) or "scalar"
        print(f"target     {name:<16} {shape:<10} min {t['min']:.4g}  mean {t['mean']:.4g}  max {t['max']:.4g}"
              f"{'  (' + t['unit'] + ')' if t.get('unit') not in (None, '1') else ''}")
    for g in info["graphs"]:
        print(f"graphs     {g['file']}  {g['bytes'] / 2**20:.1f} MiB")


def _cmd_info(args) -> None:
    _print_info(args.dir, args.json)


def _cmd_train(args) -> None:
    from gnn.train import TrainConfig, train

    config = TrainConfig(data=args.data, arch=args.arch, n_params=args.n_params, targets=_targets(args.targets),
                         fraction=args.fraction, n_train=args.n_train, seed=args.seed, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         patience=args.patience, cutoff=args.cutoff, device=args.device, precision=args.precision,
                         checkpoint_dir=args.checkpoint_dir, num_threads=args.threads,
                         loss_weights={"drude": args.drude_weight}, subset=args.subset, init_from=args.init_from,
                         strategy=args.strategy)

    def report(epoch, m, _ckpt):
        if not args.json:
            print(f"epoch {epoch:3d}  train {m['train_loss']:.4f}  val {m['val_loss']:.4f}  "
                  f"lr {m['lr']:.2e}  {m['epoch_time_s']:.1f}s", flush=True)

    metrics = train(config, callback=report)
    if args.json:
        print(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            print(f"{k:<22} {v:.6g}" if isinstance(v, float) else f"{k:<22} {v}")


def register(sub) -> None:
    """Add the gnn commands (``data``, ``train``) to the ``matscale`` parser."""
    data = sub.add_parser("data", help="import, synthesise and inspect data stores")
    dsub = data.add_subparsers(dest="data_cmd", required=True)

    p = dsub.add_parser("import", help="read users' data into a store (validates every entry, builds graphs)")
    p.add_argument("kind", choices=["optimetal", "petousis", "cif-folder", "extxyz"], help="format of SRC")
    p.add_argument("src", help="file or folder to read")
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--targets", help="comma-separated subset of targets (default: all)")
    p.add_argument("--points", type=int, help="optimetal: resample ε onto this many points")
    p.add_argument("--cutoff", type=float, default=DEFAULT_CUTOFF, help=f"graph cutoff in Å (default {DEFAULT_CUTOFF})")
    p.add_argument("--workers", type=int, help="processes for graph building (default: all cores)")
    p.add_argument("--min-distance", type=float, help="reject atoms closer than this, in Å (default 0.5; 0: no check)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--json", action="store_true", help="print the store summary as JSON")
    p.set_defaults(func=_cmd_import)

    p = dsub.add_parser("synth", help="built-in synthetic metals with ε(ω) and Drude labels")
    p.add_argument("--n", type=int, required=True, help="number of structures")
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--points", type=int, default=DEFAULT_POINTS,
                   help=f"frequency points on 0–{OMEGA_MAX_EV:g} eV (2001: the paper's grid)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the structures and labels")
    p.add_argument("--noise", type=float, default=0.05, help="label noise σ (loss floor ≈ 0.8σ per target)")
    p.add_argument("--gap-shift-ev", type=float, help='"experimental" gap: shift every oscillator energy (eV)')
    p.add_argument("--gap-broaden", type=float, help='"experimental" gap: multiply every oscillator width')
    p.add_argument("--gap-drude-scale", type=float, help='"experimental" gap: multiply the Drude frequency')
    p.add_argument("--cutoff", type=float, default=DEFAULT_CUTOFF, help="graph cutoff in Å")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--json", action="store_true", help="print the store summary as JSON")
    p.set_defaults(func=_cmd_synth)

    p = dsub.add_parser("info", help="summarise a store")
    p.add_argument("dir", help="store folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train one model and print its metrics")
    p.add_argument("--data", required=True, help="store folder")
    p.add_argument("--arch", default="cgc", help="cgc or transformer")
    p.add_argument("--n-params", type=float, default=1e5, help="target parameter count (±3%%)")
    p.add_argument("--targets", help="comma-separated targets (default: all in the store)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--fraction", type=float, help="nested training fraction in (0, 1]")
    size.add_argument("--n-train", type=int, help="absolute training set size")
    p.add_argument("--subset", default="random", help="coverage strategy of the training subset: random, "
                   "stratified[:system|:elements], exclude:contains:El, exclude:rich:El[:FRAC], exclude:system:NAME, diverse")
    p.add_argument("--init-from", help="fine-tune from this model file (a checkpoint.pt of --checkpoint-dir, or an "
                   "exported best model) of the same arch and width")
    p.add_argument("--strategy", default="full", help="with --init-from: full, heads or freeze:K")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and batch order (not the split)")
    p.add_argument("--epochs", type=int, default=50, help="epoch budget (default 50)")
    p.add_argument("--batch-size", type=int, default=32, help="structures per batch (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default 1e-2)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    p.add_argument("--drude-weight", type=float, default=1.0, help="w in MAE(ε) + w·MAE(ω_D)")
    p.add_argument("--cutoff", type=float, default=DEFAULT_CUTOFF, help="graph cutoff in Å")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:K")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="bf16 mixed precision (geometry and output layers in fp32) or fp32; auto: bf16 on CUDA, "
                        "fp32 elsewhere")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--checkpoint-dir", help="save a checkpoint every epoch here; resume from it if present")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON object")
    p.set_defaults(func=_cmd_train)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command (``args.func``): a user error (:class:`InputError`) is one line on
    stderr and status 2, Ctrl-C status 130; anything else is a bug and keeps its traceback."""
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
