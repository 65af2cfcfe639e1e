"""Where finished searches are kept, keyed by job and problem, so a retried task never duplicates a result.

`<store>/<job>/<problem>.json`, where a job is a relative path of safe names (a training round:
`rounds/0003/trees`; an online Solve names no job and is not kept). Written atomically and first-copy-wins, so a
retry that finds it returns it instead of searching again.
"""

from __future__ import annotations

import json
import os
import re
import uuid
import zlib
from pathlib import Path
from typing import Any

from services.common.errors import InvalidInput

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def result_key(name: str) -> str:
    """A problem's id as a result key: itself when it is one already ("curriculum-L3-0007"), else its safe
    characters and a checksum of the whole id, so distinct ids stay distinct ("test/algebra/1.json" →
    "test-algebra-1.json-5d2b1a3c")."""
    if _SAFE.match(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:110] or "problem"
    return f"{cleaned}-{zlib.crc32(name.encode()):08x}"


def _checked(name: str, what: str) -> str:
    if not _SAFE.match(name):
        raise InvalidInput(f"{what} {name!r} must be 1-128 letters, digits, '.', '_' or '-'")
    return name


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _job_dir(self, job: str) -> Path:
        parts = job.split("/")
        return self.root.joinpath(*(_checked(part, "job") for part in parts))

    def path(self, job: str, problem: str) -> Path:
        return self._job_dir(job) / f"{_checked(problem, 'problem id')}.json"

    def has(self, job: str, problem: str) -> bool:
        """Whether a result is stored, without reading it (a tree with its nodes can be hundreds of kilobytes)."""
        return self.path(job, problem).is_file()

    def get(self, job: str, problem: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = json.loads(self.path(job, problem).read_text())
            return result
        except FileNotFoundError:
            return None

    def put(self, job: str, problem: str, result: dict[str, Any]) -> dict[str, Any]:
        """Store `result` unless a copy is there already; returns the stored copy."""
        target = self.path(job, problem)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        temporary.write_text(json.dumps(result))
        try:
            # link() fails if the target exists: the first finished copy wins, atomically.
            os.link(temporary, target)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
        stored = self.get(job, problem)
        assert stored is not None
        return stored

    def job(self, job: str) -> dict[str, dict[str, Any]]:
        directory = self._job_dir(job)
        if not directory.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
