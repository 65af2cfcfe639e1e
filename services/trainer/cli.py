"""`thinkmesh bootstrap` (and, with the trainer, `thinkmesh evolve`)."""

from __future__ import annotations

import argparse
import json


def _bootstrap(args: argparse.Namespace) -> int:
    import logging

    from services.common.logs import configure_logging
    from services.common.store import ModelStore
    from services.trainer.bootstrap import bootstrap as build
    from services.trainer.bootstrap import config_for

    configure_logging("text", "INFO")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    report = build(
        ModelStore(args.store),
        config_for(args.preset, args.seed, args.sft_steps),
        force=args.force,
        progress=not args.quiet,
    )
    if report["skipped"]:
        print(f"store already has policy {report['policy']} and ppm {report['ppm']}: nothing to do (--force rebuilds)")
    else:
        print(
            f"published policy {report['policy']} ({report['parameters'] / 1e6:.2f}M parameters) and ppm "
            f"{report['ppm']} in {report['seconds']}s; PPM held-out pair accuracy "
            f"{report['ppm_training']['heldout_pair_accuracy']:.3f}"
        )
    if args.json:
        print(json.dumps(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    boot = sub.add_parser("bootstrap", help="train the embedded tiny policy and PPM into the store (once)")
    boot.add_argument("--store", default=None, help="store root (default: $THINKMESH_STORE or ./.thinkmesh/store)")
    boot.add_argument("--preset", choices=("small", "micro"), default="small",
                      help="small: the embedded default; micro: seconds, for tests")
    boot.add_argument("--seed", type=int, default=0)
    boot.add_argument("--sft-steps", type=int, default=None, help="override the SFT optimizer steps")
    boot.add_argument("--force", action="store_true", help="rebuild even when the store has models")
    boot.add_argument("--quiet", action="store_true", help="no progress bars")
    boot.add_argument("--json", action="store_true", help="print the full report as JSON")
    boot.set_defaults(func=_bootstrap)
