"""The model store: versions of each model kind in Hugging Face format, under one root directory.

    <root>/models/<kind>/<version>/        the model's files + manifest.json (lineage, prompt format)
    <root>/models/<kind>/CURRENT            the name of the current version (one line)
    <root>/rounds/<n>/                      search trees, training data and reports of round n

Publishing is atomic: files are written into a private staging directory, the manifest last, and the whole
directory is renamed into place; a rename either fully succeeds or fails, so no reader ever sees a half-written
version. The CURRENT pointer is replaced with os.replace, also atomic. Old versions stay until pruned; the
current one is never pruned. The root is local by default and a ReadWriteMany volume in a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from services.common.errors import InvalidInput, NotFound

ModelKindName = Literal["policy", "ppm"]
KINDS: tuple[ModelKindName, ...] = ("policy", "ppm")
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
DEFAULT_ROOT = Path(".thinkmesh/store")
# How the policy's prompt is rendered for a model (services/math/prompting.py): decided once, when the model
# enters the store, and kept in its manifest; every version trained from it inherits it.
PromptFormat = Literal["plain", "chat"]
PROMPT_FORMATS: tuple[PromptFormat, ...] = ("plain", "chat")


def default_root() -> Path:
    return Path(os.environ.get("THINKMESH_STORE", str(DEFAULT_ROOT)))


@dataclass(frozen=True)
class Lineage:
    """Where a version came from: the base model, the round that trained it, what it was trained on."""

    base_model: str = ""
    round: int = 0
    source: str = ""
    data: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


class SavesPretrained(Protocol):
    """A Hugging Face model or tokenizer (or anything saved the same way, like the PPM)."""

    def save_pretrained(self, directory: Any, /) -> Any: ...


@dataclass(frozen=True)
class ModelVersion:
    kind: ModelKindName
    version: str
    path: Path
    created_at: float
    lineage: Lineage
    prompt_format: PromptFormat = "plain"

    @property
    def number(self) -> int:
        return int(self.version.removeprefix("v"))


def has_chat_template(directory: Path) -> bool:
    """Whether the tokenizer saved in `directory` carries a chat template (read from its files, no tokenizer)."""
    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(isinstance(config, dict) and config.get("chat_template"))


def prompt_format_of(directory: Path) -> PromptFormat:
    """A model directory's prompt format: its manifest's, or for a directory outside the store (no manifest),
    "chat" when its tokenizer has a chat template."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    return _prompt_format(manifest if isinstance(manifest, dict) else {}, directory)


def _prompt_format(manifest: dict[str, Any], directory: Path) -> PromptFormat:
    """The manifest's prompt format, else what the directory's tokenizer implies."""
    recorded = manifest.get("prompt_format")
    if recorded is not None:
        return check_prompt_format(recorded)
    return "chat" if has_chat_template(directory) else "plain"


def check_prompt_format(name: str) -> PromptFormat:
    if name not in PROMPT_FORMATS:
        raise InvalidInput(f"unknown prompt format {name!r}: expected one of {', '.join(PROMPT_FORMATS)}")
    return name


def check_kind(kind: str) -> ModelKindName:
    if kind not in KINDS:
        raise InvalidInput(f"unknown model kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def share_with_group(directory: Path) -> None:
    """Make every file under `directory` readable, and every folder searchable, by the store's group: the policy
    and PPM pods load what the trainer wrote under other uids of that group. safetensors writes its files 0600
    whatever the umask (a temporary file persisted in place), so nothing else would let them read the weights."""
    for path in (directory, *directory.rglob("*")):
        if path.is_symlink():
            continue
        wanted = stat.S_IRGRP | stat.S_IXGRP if path.is_dir() else stat.S_IRGRP
        mode = path.stat().st_mode
        if mode & wanted != wanted:
            path.chmod(stat.S_IMODE(mode) | wanted)


class ModelStore:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def _kind_dir(self, kind: ModelKindName) -> Path:
        return self.root / "models" / kind

    def round_dir(self, round_number: int) -> Path:
        path = self.root / "rounds" / f"{round_number:04d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- reading -------------------------------------------------------------------------------------

    def _load(self, kind: ModelKindName, directory: Path) -> ModelVersion | None:
        try:
            manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
        except (OSError, ValueError):
            return None  # not a published version (no manifest yet, or being pruned)
        return ModelVersion(
            kind=kind,
            version=directory.name,
            path=directory,
            created_at=float(manifest.get("created_at", 0.0)),
            lineage=Lineage(**manifest.get("lineage", {})),
            prompt_format=_prompt_format(manifest, directory),
        )

    def versions(self, kind: str) -> list[ModelVersion]:
        checked = check_kind(kind)
        directory = self._kind_dir(checked)
        if not directory.is_dir():
            return []
        versions = [
            loaded
            for child in directory.iterdir()
            if child.is_dir() and child.name.startswith("v") and child.name[1:].isdigit()
            if (loaded := self._load(checked, child)) is not None
        ]
        return sorted(versions, key=lambda v: v.number)

    def get(self, kind: str, version: str) -> ModelVersion:
        checked = check_kind(kind)
        if not version.startswith("v") or not version[1:].isdigit():
            raise InvalidInput(f"malformed version {version!r}: expected e.g. 'v3'")
        loaded = self._load(checked, self._kind_dir(checked) / version)
        if loaded is None:
            raise NotFound(f"no {kind} version {version} in {self.root}")
        return loaded

    def current(self, kind: str) -> ModelVersion | None:
        checked = check_kind(kind)
        try:
            name = (self._kind_dir(checked) / CURRENT).read_text().strip()
        except OSError:
            return None
        return self._load(checked, self._kind_dir(checked) / name)

    def resolve(self, kind: str, name: str) -> tuple[Path, str]:
        """A service's model setting → (directory, version name): a store version ("v3") or a directory path."""
        if "/" in name:
            path = Path(name)
            return path, path.name
        return self.get(kind, name).path, name

    def current_name(self, kind: str) -> str | None:
        """Cheap check for hot reload: the pointer's content, without reading the manifest."""
        try:
            return (self._kind_dir(check_kind(kind)) / CURRENT).read_text().strip() or None
        except OSError:
            return None

    # --- writing -------------------------------------------------------------------------------------

    def publish(
        self,
        kind: str,
        write: Callable[[Path], None],
        lineage: Lineage,
        *,
        make_current: bool = True,
        prompt_format: str | None = None,
    ) -> ModelVersion:
        """`write(directory)` puts the model's files there; the version appears only once complete. Its prompt
        format is `prompt_format` (a trained version: its base model's), else what its tokenizer implies."""
        checked = check_kind(kind)
        kind_dir = self._kind_dir(checked)
        kind_dir.mkdir(parents=True, exist_ok=True)
        staging = kind_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            write(staging)
            share_with_group(staging)
            chosen = check_prompt_format(prompt_format) if prompt_format else prompt_format_of(staging)
            manifest = {"created_at": time.time(), "lineage": asdict(lineage), "prompt_format": chosen}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
            published = self._rename_to_next_version(checked, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if make_current:
            self.promote(checked, published.version)
        return published

    def publish_pretrained(
        self,
        kind: str,
        model: SavesPretrained,
        tokenizer: SavesPretrained,
        lineage: Lineage,
        *,
        make_current: bool = True,
        prompt_format: str | None = None,
    ) -> ModelVersion:
        """Publish a model and its tokenizer as one Hugging Face directory."""

        def write(directory: Path) -> None:
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)

        return self.publish(kind, write, lineage, make_current=make_current, prompt_format=prompt_format)

    def _rename_to_next_version(self, kind: ModelKindName, staging: Path) -> ModelVersion:
        kind_dir = self._kind_dir(kind)
        number = max((v.number for v in self.versions(kind)), default=0) + 1
        while True:
            target = kind_dir / f"v{number}"
            try:
                # rename onto a missing or empty directory is atomic; a concurrent publisher that took this
                # number first makes it fail (the target is non-empty), and we try the next one.
                os.rename(staging, target)
            except OSError:
                if target.exists():
                    number += 1
                    continue
                raise
            loaded = self._load(kind, target)
            assert loaded is not None
            return loaded

    def import_directory(
        self,
        kind: str,
        source: Path,
        lineage: Lineage,
        *,
        make_current: bool = True,
        prompt_format: str | None = None,
        move: bool = False,
    ) -> ModelVersion:
        """Copy an existing Hugging Face model directory into the store as a new version (its prompt format:
        `prompt_format`, else "chat" when its tokenizer has a chat template). `move`: take its files instead of
        copying them (a trained model on the store's own volume: renames, no 15 GB copy); `source` is left empty."""
        if not (source / "config.json").is_file():
            raise InvalidInput(f"{source} is not a Hugging Face model directory (no config.json)")

        def copy(directory: Path) -> None:
            if move:
                for entry in source.iterdir():
                    if entry.name != MANIFEST:
                        shutil.move(entry, directory / entry.name)
                return
            shutil.copytree(source, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))

        return self.publish(kind, copy, lineage, make_current=make_current, prompt_format=prompt_format)

    def promote(self, kind: str, version: str) -> ModelVersion:
        target = self.get(kind, version)
        pointer = self._kind_dir(target.kind) / CURRENT
        temporary = pointer.with_name(f".{CURRENT}.{uuid.uuid4().hex}")
        temporary.write_text(version + "\n")
        os.replace(temporary, pointer)
        return target

    def prune(self, kind: str, keep: int) -> list[str]:
        """Remove all but the newest `keep` versions; the current version always stays."""
        if keep < 1:
            raise InvalidInput("keep at least one version")
        current = self.current_name(kind)
        versions = self.versions(kind)
        removed = []
        for version in versions[: max(0, len(versions) - keep)]:
            if version.version == current:
                continue
            # Rename first so that readers stop seeing it as a version, then delete at leisure.
            doomed = version.path.with_name(f".pruned-{version.version}-{uuid.uuid4().hex}")
            os.rename(version.path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(version.version)
        return removed
