"""The committed stubs are exactly what `make proto` generates from the .proto files, by the pinned generator."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PROTO_DIR = REPO / "protos" / "thinkmesh" / "v1"
# The generator's own version, stamped into every *_pb2_grpc.py.
STAMP = re.compile(r"^GRPC_GENERATED_VERSION = '([^']+)'$", re.MULTILINE)


def _content(path: Path) -> str:
    """A stub less the version stamps of the tools that wrote it: what the .proto files decide."""
    text = STAMP.sub("GRPC_GENERATED_VERSION = ...", path.read_text())
    text = re.sub(r"^# Protobuf Python Version: .*$", "# Protobuf Python Version: ...", text, flags=re.MULTILINE)
    return re.sub(r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)[^']*", r"\1 ...,", text)


def _dev_pin(name: str) -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["optional-dependencies"]["dev"] if re.match(rf"{name}\s*==", d)]
    assert len(pins) == 1, f"pyproject's dev extra must pin {name} exactly (==), so every machine writes the same stubs"
    return pins[0].split("==")[1].strip()


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
    drifted = [name for name in generated if _content(out / "thinkmesh" / "v1" / name) != _content(PROTO_DIR / name)]
    assert not drifted, f"stubs differ from the .proto files: run `make proto` ({drifted})"
    shutil.rmtree(out)


def test_stubs_come_from_the_pinned_generator_and_the_runtime_floor_admits_them() -> None:
    tools = _dev_pin("grpcio-tools")
    assert version("grpcio-tools") == tools, "the installed grpcio-tools is not the pinned one: install from the lock"
    stamps = {STAMP.search(p.read_text()).group(1) for p in PROTO_DIR.glob("*_pb2_grpc.py")}  # type: ignore[union-attr]
    assert stamps == {tools}, f"stubs written by grpcio-tools {stamps}, pinned {tools}: run `make proto`"
    # The stubs raise at import under a grpcio older than their generator: pyproject must not admit one.
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (floor,) = [d.split(">=")[1] for d in core if re.match(r"grpcio\s*>=", d)]
    assert tuple(map(int, floor.split("."))) >= tuple(map(int, tools.split("."))), (floor, tools)
    # Likewise the messages under a protobuf older than the protoc inside grpcio-tools.
    gencode = re.search(r"Protobuf Python Version: (\S+)", (PROTO_DIR / "common_pb2.py").read_text())
    (protobuf_floor,) = [d.split(">=")[1].split()[0] for d in core if re.match(r"protobuf\s*>=", d)]
    assert gencode and protobuf_floor == gencode.group(1), (protobuf_floor, gencode)


def test_every_enum_starts_with_unspecified() -> None:
    from thinkmesh.v1 import common_pb2, policy_pb2, sandbox_pb2, search_pb2, trainer_pb2

    for module in (common_pb2, policy_pb2, sandbox_pb2, search_pb2, trainer_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            assert enum.values[0].number == 0
            assert enum.values[0].name.endswith("_UNSPECIFIED"), enum.full_name
