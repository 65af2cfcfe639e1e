"""JSON and JSON-lines files written atomically (a reader never sees half a file, a crash leaves the old one)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    _replace(path, json.dumps(data, indent=1))


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """One JSON value a line."""
    _replace(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[Any]:
    """The values of a JSON-lines file; blank lines are skipped."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_text(text)
    os.replace(temporary, path)
