"""What a program may read and see on the host: the interpreter's files and its own directory, not the rest.

A real server (root, as on this machine: a uid per slot) with an extra import path behind a directory of mode 0700,
as pyenv's interpreter in /root is: programs must import from it under their own uid, and read nothing else of the
host, whatever the modes. The directories are made under /run: /tmp and the other world-writable directories are
covered for programs, so nothing there could be read either way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.sandbox import landlock
from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

OK = sandbox_pb2.EXECUTE_STATUS_OK
FIRST_UID = 60_000


def _host_directory(mode: int) -> Path:
    if os.geteuid() != 0 or not os.access("/run", os.W_OK):
        pytest.skip("needs root (a uid per program) and a writable /run")
    directory = Path(tempfile.mkdtemp(prefix="thinkmesh-confinement-", dir="/run"))
    directory.chmod(mode)
    return directory


def _import_path(directory: Path) -> str:
    """The server's PYTHONPATH with `directory` first (the zygote's sys.path takes it over)."""
    return os.pathsep.join(path for path in (str(directory), os.environ.get("PYTHONPATH", "")) if path)


def _landlock_abi() -> int:
    try:
        return landlock.abi_version()
    except OSError as exc:
        pytest.skip(f"no Landlock here: {landlock.why_unavailable(exc)}")


@pytest.fixture(scope="module")
def host() -> Iterator[Path]:
    """/run/thinkmesh-confinement-…: a private/ (0700) holding lib/ (0755) with a module, and public.txt (0644)."""
    top = _host_directory(0o755)
    try:
        private = top / "private"
        (private / "lib").mkdir(parents=True)
        private.chmod(0o700)
        (private / "lib").chmod(0o755)
        (private / "lib" / "confined_extra.py").write_text("VALUE = 42\n")
        (top / "public.txt").write_text("anyone may read this\n")
        (top / "public.txt").chmod(0o644)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def server(module_server_factory: Any, host: Path) -> Any:
    return module_server_factory({"PYTHONPATH": _import_path(host / "private" / "lib")})


@pytest.fixture(scope="module")
def stub(server: Any) -> Iterator[sandbox_pb2_grpc.SandboxServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield sandbox_pb2_grpc.SandboxServiceStub(channel)


def _run(stub: sandbox_pb2_grpc.SandboxServiceStub, code: str) -> Any:
    reply = stub.Execute(sandbox_pb2.ExecuteRequest(code=code, timeout_ms=10_000), timeout=60, wait_for_ready=True)
    assert reply.status == OK, reply.stderr
    return json.loads(reply.stdout.splitlines()[-1])


def _layers(server: Any) -> dict[str, dict[str, Any]]:
    return {entry["layer"]: entry for entry in server.logs() if "layer" in entry}


def test_a_world_readable_host_file_is_refused(stub: sandbox_pb2_grpc.SandboxServiceStub, host: Path) -> None:
    _landlock_abi()
    code = (
        "import json, os\nfound = {}\n"
        f"for path in ('/etc/hostname', '/etc/passwd', {str(host / 'public.txt')!r}):\n"
        "    try:\n        open(path).read()\n        found[path] = 'read'\n"
        "    except OSError as exc:\n        found[path] = type(exc).__name__\n"
        f"for path in ('/etc', '/root', '/', {str(host)!r}):\n"
        "    try:\n        os.listdir(path)\n        found[path] = 'listed'\n"
        "    except OSError as exc:\n        found[path] = type(exc).__name__\n"
        "print(json.dumps(found))"
    )
    found = _run(stub, code)
    assert set(found.values()) == {"PermissionError"}, found


def test_it_writes_in_its_own_directory_only(stub: sandbox_pb2_grpc.SandboxServiceStub) -> None:
    _landlock_abi()
    code = (
        "import json, os\nos.makedirs('a/b')\nopen('a/b/x', 'w').write('x')\nos.rename('a/b/x', 'y')\n"
        "found = {'own': open('/tmp/y').read()}\n"
        "try:\n    open('/dev/null', 'w').write('x')\n    found['null'] = 'written'\n"
        "except OSError as exc:\n    found['null'] = type(exc).__name__\n"
        "print(json.dumps(found))"
    )
    assert _run(stub, code) == {"own": "x", "null": "written"}


def test_it_imports_the_standard_library_and_packages_the_zygote_did_not(
    stub: sandbox_pb2_grpc.SandboxServiceStub,
) -> None:
    # glob, csv and sqlite3 (and the system library sqlite3 loads) are not imported ahead by the zygote.
    code = (
        "import csv, glob, json, sqlite3, subprocess\nimport numpy, sympy\nimport confined_extra\nimport os\n"
        "got = {'uid': os.getuid(), 'extra': confined_extra.VALUE, 'glob': glob.glob('/tmp/*')}\n"
        "got['sql'] = sqlite3.connect(':memory:').execute('select 6*7').fetchone()[0]\n"
        "got['sympy'] = str(sympy.Rational(1, 3) + sympy.Rational(1, 6))\n"
        "got['numpy'] = int(numpy.arange(4).sum())\n"
        "got['echo'] = subprocess.run(['echo', 'hi'], capture_output=True).stdout.decode()\n"
        "print(json.dumps(got))"
    )
    got = _run(stub, code)
    # Under its own uid, although the package sits behind a directory of mode 0700 (and the interpreter itself in
    # /root here).
    assert FIRST_UID <= got["uid"] < FIRST_UID + 2
    assert got == {**got, "extra": 42, "sql": 42, "glob": [], "sympy": "1/2", "numpy": 6, "echo": "hi\n"}


def test_it_sees_no_other_process(stub: sandbox_pb2_grpc.SandboxServiceStub, server: Any) -> None:
    code = (
        "import json, os\nother = []\nfor name in os.listdir('/proc'):\n"
        "    if name.isdigit() and int(name) != os.getpid():\n        other.append(name)\n"
        "try:\n    open(f'/proc/{os.getppid()}/cmdline').read()\n    zygote = 'read'\n"
        "except OSError as exc:\n    zygote = type(exc).__name__\n"
        "print(json.dumps({'other': other, 'zygote': zygote, 'own': open('/proc/self/status').read()[:5]}))"
    )
    assert _run(stub, code) == {"other": [], "zygote": "FileNotFoundError", "own": "Name:"}
    assert _layers(server)["proc"]["active"]


def test_the_report_lists_what_programs_may_open(server: Any, host: Path) -> None:
    abi = _landlock_abi()
    layers = _layers(server)
    assert layers["landlock"]["active"], layers["landlock"]
    assert f"(ABI {abi})" in layers["landlock"]["msg"] and str(host / "private" / "lib") in layers["landlock"]["msg"]
    assert layers["uid"]["active"], layers["uid"]


def test_an_interpreter_directory_its_uid_cannot_read_turns_the_uid_layer_off(start_server: Any) -> None:
    # Not a directory above the path this time but the path itself: nothing can be bound back that the programs'
    # uid could read, so it refuses the uid layer (and says why) rather than fail every import.
    closed = _host_directory(0o700)
    try:
        (closed / "closed_extra.py").write_text("VALUE = 7\n")
        server = start_server({"PYTHONPATH": _import_path(closed)})
        server.wait_ready()
        uid = _layers(server)["uid"]
        assert not uid["active"]
        assert f"uid {FIRST_UID} cannot read the interpreter's {closed}" in uid["msg"]
        with grpc.insecure_channel(server.address) as channel:
            got = _run(
                sandbox_pb2_grpc.SandboxServiceStub(channel),
                "import closed_extra, json\nprint(json.dumps(closed_extra.VALUE))",
            )
        assert got == 7
    finally:
        shutil.rmtree(closed, ignore_errors=True)
