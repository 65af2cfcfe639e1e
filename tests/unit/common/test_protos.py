"""The committed stubs are exactly what `make proto` generates from the .proto files."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PROTO_DIR = REPO / "protos" / "thinkmesh" / "v1"


def test_generated_stubs_match_the_protos(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "thinkmesh" / "v1").mkdir(parents=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    protos = sorted(str(p.relative_to(REPO / "protos")) for p in PROTO_DIR.glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *protos,
        ],
        cwd=REPO / "protos",
        env=env,
        check=True,
        capture_output=True,
    )
    generated = sorted(p.name for p in (out / "thinkmesh" / "v1").iterdir())
    committed = sorted(p.name for p in PROTO_DIR.iterdir() if "_pb2" in p.name)
    assert generated == committed, "stubs missing or extra: run `make proto`"
    drifted = [
        name for name in generated if not filecmp.cmp(out / "thinkmesh" / "v1" / name, PROTO_DIR / name, shallow=False)
    ]
    assert not drifted, f"stubs differ from the .proto files: run `make proto` ({drifted})"
    shutil.rmtree(out)


def test_every_enum_starts_with_unspecified() -> None:
    from thinkmesh.v1 import common_pb2, policy_pb2, sandbox_pb2, search_pb2, trainer_pb2

    for module in (common_pb2, policy_pb2, sandbox_pb2, search_pb2, trainer_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            assert enum.values[0].number == 0
            assert enum.values[0].name.endswith("_UNSPECIFIED"), enum.full_name
