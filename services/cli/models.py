"""`thinkmesh models …`: what the model store holds, importing models into it, promoting and pruning versions."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from services.common.store import ModelStore

    return ModelStore(args.store)


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = []
    for kind in (args.kind,) if args.kind else ("policy", "ppm"):
        current = store.current_name(kind)
        for version in store.versions(kind):
            lineage = version.lineage
            rows.append(
                {
                    "kind": kind,
                    "version": version.version,
                    "current": version.version == current,
                    "created": datetime.datetime.fromtimestamp(version.created_at).isoformat(timespec="seconds"),
                    "round": lineage.round,
                    "source": lineage.source,
                    "base_model": lineage.base_model,
                    "data": lineage.data,
                    "prompt_format": version.prompt_format,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models in {store.root} (run `thinkmesh bootstrap` or `thinkmesh models import`)")
        return 0
    print(f"{'kind':<7}{'version':<9}{'cur':<5}{'round':<7}{'created':<21}{'source':<12}base / data")
    for row in rows:
        mark = "*" if row["current"] else ""
        print(
            f"{row['kind']:<7}{row['version']:<9}{mark:<5}{row['round']:<7}{row['created']:<21}"
            f"{row['source']:<12}{row['base_model']} / {row['data']}"
        )
    return 0


def _import(args: argparse.Namespace) -> int:
    from services.common.errors import InvalidInput
    from services.common.store import Lineage

    store = _store(args)
    if args.if_empty and (current := store.current_name(args.kind)) is not None:
        # A seeding Job runs again on every retry and upgrade: what a first run imported stays the round-0 model.
        print(f"the store already has a current {args.kind} ({current}): nothing imported")
        return 0
    source = Path(args.source)
    with tempfile.TemporaryDirectory(prefix="thinkmesh-import-") as scratch:
        if not source.exists():
            if args.source.count("/") != 1:
                print(f"thinkmesh: {args.source} is neither a directory nor a hub id (owner/name)", file=sys.stderr)
                return 2
            from huggingface_hub import snapshot_download

            source = Path(snapshot_download(args.source, local_dir=Path(scratch) / "hub"))
        if args.kind == "ppm" and not _has_value_head(source):
            # A causal LM given as a PPM: initialise the PPM from it (backbone kept, fresh value head).
            from transformers import AutoTokenizer

            from services.ppm.model import ProcessRewardModel

            converted = Path(scratch) / "ppm"
            ProcessRewardModel.from_pretrained(source).save_pretrained(converted)
            AutoTokenizer.from_pretrained(source).save_pretrained(converted)
            source = converted
        try:
            version = store.import_directory(
                args.kind,
                source,
                Lineage(base_model=args.source, source="import", data=args.note),
                make_current=not args.no_promote,
                prompt_format=args.prompt_format,
            )
        except InvalidInput as exc:
            print(f"thinkmesh: {exc}", file=sys.stderr)
            return 2
    current = "" if args.no_promote else " (current)"
    print(f"imported {args.source} as {args.kind} {version.version}{current}, {version.prompt_format} prompts")
    return 0


def _wait(args: argparse.Namespace) -> int:
    store = _store(args)
    kinds = args.kind or ["policy", "ppm"]
    started = time.monotonic()
    announced: float | None = None
    while missing := [kind for kind in kinds if store.current_name(kind) is None]:
        waited = time.monotonic() - started
        if args.timeout and waited >= args.timeout:
            print(f"thinkmesh: after {waited:.0f} s the store {store.root} still has no current {', '.join(missing)}")
            return 1
        if announced is None or waited - announced >= 60:  # at once, then a line a minute (`kubectl logs`)
            print(
                f"waiting for a current {', '.join(missing)} in {store.root} (seeded by the chart's seed Job, "
                "`thinkmesh bootstrap` or `thinkmesh models import`)",
                flush=True,
            )
            announced = waited
        time.sleep(args.interval)
    print(", ".join(f"{kind} {store.current_name(kind)}" for kind in kinds) + " current")
    return 0


def _has_value_head(directory: Path) -> bool:
    return (directory / "ppm.json").is_file()


def _promote(args: argparse.Namespace) -> int:
    from services.common.errors import ThinkmeshError

    try:
        version = _store(args).promote(args.kind, args.version)
    except ThinkmeshError as exc:
        print(f"thinkmesh: {exc}", file=sys.stderr)
        return 2
    print(f"{version.kind} {version.version} is now current")
    return 0


def _prune(args: argparse.Namespace) -> int:
    removed = _store(args).prune(args.kind, args.keep)
    print(f"removed {', '.join(removed) if removed else 'nothing'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    models = sub.add_parser("models", help="list, import, promote and prune model versions in the store")
    actions = models.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        parser.add_argument(
            "--store", default=None, help="store root (default: $THINKMESH_STORE or ./.thinkmesh/store)"
        )
        return parser

    listing = action("list", "versions, which is current, and where each came from")
    listing.add_argument("--kind", choices=("policy", "ppm"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)

    importing = action("import", "put a Hugging Face model (directory or hub id) into the store")
    importing.add_argument("source", help="a local model directory, or a hub id such as Qwen/Qwen2.5-Math-7B")
    importing.add_argument("--kind", choices=("policy", "ppm"), required=True)
    importing.add_argument("--note", default="", help="free text kept in the version's lineage")
    importing.add_argument("--no-promote", action="store_true", help="import without making it current")
    importing.add_argument(
        "--prompt-format",
        choices=("plain", "chat"),
        default=None,
        help="how the policy's prompt is rendered for this model, kept with it and with every version trained from "
        "it (default: chat when its tokenizer has a chat template, else plain)",
    )
    importing.add_argument(
        "--if-empty",
        action="store_true",
        help="import only when the store has no current version of this kind yet (a seeding Job, run again)",
    )
    importing.set_defaults(func=_import)

    waiting = action("wait", "wait until the store has a current version of each kind (a pod's init container)")
    waiting.add_argument("--kind", choices=("policy", "ppm"), action="append", help="repeatable; default: both")
    waiting.add_argument("--timeout", type=float, default=0, help="seconds, then exit 1; 0 = wait for ever")
    waiting.add_argument("--interval", type=float, default=2.0, help="seconds between looks at the store")
    waiting.set_defaults(func=_wait)

    promote = action("promote", "make a version current (services pick it up by themselves)")
    promote.add_argument("kind", choices=("policy", "ppm"))
    promote.add_argument("version")
    promote.set_defaults(func=_promote)

    prune = action("prune", "remove old versions (never the current one)")
    prune.add_argument("kind", choices=("policy", "ppm"))
    prune.add_argument("--keep", type=int, default=3)
    prune.set_defaults(func=_prune)
