"""The digest of what the lock is resolved from: pyproject's requirements and scripts/lock.sh itself.

`make lock` writes it to requirements/inputs.sha256; tests/unit/common/test_lock.py recomputes it, so a change to
a dependency (or to how the lock is made) without `make lock` fails `make test` on any machine, offline.

    python3 scripts/lock_inputs.py
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def digest() -> str:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    inputs = {
        "requires-python": project["requires-python"],
        "dependencies": project["dependencies"],
        "optional-dependencies": project["optional-dependencies"],
        "build-system": pyproject["build-system"]["requires"],
        "lock.sh": (REPO / "scripts" / "lock.sh").read_text(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    print(digest())
