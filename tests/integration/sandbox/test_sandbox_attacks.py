"""The attack battery: hostile programs against one real server process.

Each program must be contained (the expected status, no process left behind, nothing of the host touched) and
the very next ordinary request must succeed on the same server, from the same zygote.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

OK = sandbox_pb2.EXECUTE_STATUS_OK
ERROR = sandbox_pb2.EXECUTE_STATUS_ERROR
TIMEOUT = sandbox_pb2.EXECUTE_STATUS_TIMEOUT
MEMORY = sandbox_pb2.EXECUTE_STATUS_MEMORY_LIMIT
OUTPUT = sandbox_pb2.EXECUTE_STATUS_OUTPUT_LIMIT
KILLED = sandbox_pb2.EXECUTE_STATUS_KILLED

SECRET = "hunter2-do-not-leak"
WORKERS = 2
FIRST_UID = 60_000


@dataclass(frozen=True)
class Attack:
    name: str
    code: str
    statuses: frozenset[int]
    # Must appear in stdout (the program reports what it managed to do).
    stdout: str | None = None
    timeout_ms: int = 2000
    memory_mb: int = 256


def attack(name: str, code: str, *statuses: int, stdout: str | None = None, **limits: int) -> Attack:
    return Attack(name, code, frozenset(statuses), stdout, **limits)


ATTACKS = [
    # --- fork and thread floods
    attack(
        "fork bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        TIMEOUT,
        KILLED,
    ),
    attack(
        "forked sleepers outlive main",
        "import os, time\nfor _ in range(10):\n    if os.fork() == 0:\n        time.sleep(600)\nprint('parent done')",
        OK,
        stdout="parent done",
    ),
    attack(
        "thread flood",
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, "
        "args=(600,), daemon=True).start()",
        ERROR,
        MEMORY,
    ),
    attack(
        "background shell process",
        "import subprocess\nsubprocess.Popen(['sleep', '600'])\nprint('spawned')",
        OK,
        stdout="spawned",
    ),
    attack(
        "escape the process group",
        "import os, time\nif os.fork() == 0:\n    try:\n        os.setsid()\n"
        "    except OSError as e:\n        print('setsid', e.errno, flush=True)\n    time.sleep(600)\n"
        "time.sleep(0.2)",
        OK,
        stdout="setsid 1",
    ),
    # --- memory bombs
    attack("one huge allocation", "block = bytearray(8 * 1024 ** 3)", MEMORY),
    attack("growing list", "hog = []\nwhile True:\n    hog.append(' ' * 10 ** 6)", MEMORY),
    attack("numpy giant array", "import numpy as np\nnp.ones((60000, 60000))", MEMORY),
    attack("anonymous mmap", "import mmap\nmmap.mmap(-1, 16 * 1024 ** 3)", ERROR, MEMORY),
    attack(
        "memory in every child",
        "import os\nfor _ in range(6):\n    if os.fork() == 0:\n"
        "        hog = bytearray(512 * 1024 ** 2)\n        os._exit(0)\nwhile True:\n    try:\n"
        "        os.wait()\n    except ChildProcessError:\n        break\nprint('children capped')",
        OK,
        stdout="children capped",
    ),
    # hash() of a deeply nested tuple recurses in C, with no recursion check: the C stack overflows
    attack("C stack overflow", "t = ()\nfor _ in range(10 ** 6):\n    t = (t,)\nhash(t)", KILLED),
    # --- infinite loops
    attack("busy loop", "while True:\n    pass", TIMEOUT),
    attack("long sleep", "import time\ntime.sleep(600)", TIMEOUT),
    attack(
        "ignore every catchable signal",
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, "
        "signal.SIGXCPU, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass",
        TIMEOUT,
    ),
    # --- crashes
    attack("segfault through ctypes", "import ctypes\nctypes.string_at(0)", KILLED),
    attack("abort", "import os\nos.abort()", KILLED),
    # --- killing its parent, its group, everyone
    attack(
        "kill the zygote",
        "import os\ntry:\n    os.kill(os.getppid(), 9)\nexcept OSError as e:\n    print('refused', e.errno)",
        OK,
        stdout="refused 1",
    ),
    attack(
        "kill every visible process",
        "import os\nhits = 0\nfor pid in os.listdir('/proc'):\n"
        "    if pid.isdigit() and int(pid) != os.getpid():\n        try:\n            os.kill(int(pid), 9)\n"
        "            hits += 1\n        except OSError:\n            pass\nprint('killed', hits)",
        OK,
        stdout="killed 0",
    ),
    attack("kill -1", "import os\nos.kill(-1, 9)", ERROR),
    attack("kill its own process group", "import os, time\nos.fork()\nos.kill(0, 9)\ntime.sleep(5)", KILLED),
    # --- file descriptors
    attack("close every descriptor", "import os\nos.closerange(0, 4096)\nprint('gone')", OK, ERROR),
    attack(
        "write to inherited descriptors",
        # fd 4 is the process's own exit-code pipe (see services/sandbox/child.py); anything else, such as the
        # zygote's control socket or another program's pipes, must not be there at all.
        "import os\nopen_fds = []\nfor fd in [3, *range(5, 4096)]:\n"
        "    try:\n        os.write(fd, b'junk')\n        open_fds.append(fd)\n    except OSError:\n        pass\n"
        "print('writable', open_fds)",
        OK,
        stdout="writable []",
    ),
    attack(
        "misreport its own exit code",
        "import os\nos.write(4, bytes([0]))\nos.write(4, b'junk' * 1000)\nimport time\ntime.sleep(600)",
        OK,
        ERROR,
    ),
    # --- giant outputs
    attack("giant stdout", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", OUTPUT),
    attack("giant stderr", "import sys\nwhile True:\n    sys.stderr.write('e' * 65536)", OUTPUT),
    attack("one write of 100 MB", "import sys\nsys.stdout.write('y' * (100 * 1024 ** 2))", OUTPUT, MEMORY),
    attack(
        "output from an orphan",
        "import os, sys\nif os.fork() == 0:\n    while True:\n        sys.stdout.write('z' * 4096)\nprint('main done')",
        OK,
        OUTPUT,
    ),
    # --- filling the disk
    attack(
        "fill the working directory",
        "chunk = b'x' * 2 ** 20\nwith open('fill', 'wb') as f:\n    while True:\n        f.write(chunk)",
        ERROR,
    ),
    attack(
        "many files",
        "import os\nfor i in range(10 ** 6):\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'x' * 65536)",
        ERROR,
    ),
    attack(
        "write outside the sandbox",
        "import os\nfor path in ('/var/tmp/x', '/dev/shm/x', '/etc/x', "
        "'/root/x', '/work/x'):\n    try:\n        open(path, 'w').write('x')\n        print('wrote', path)\n"
        "    except OSError:\n        pass\nprint('done')",
        OK,
        stdout="done",
    ),
    # --- network, privileges, other processes
    attack("open a socket", "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)", ERROR),
    attack(
        "read the server's secrets",
        f"import os\nfound = [k for k, v in os.environ.items() if '{SECRET}' in v]\n"
        "for pid in os.listdir('/proc'):\n    try:\n        data = open(f'/proc/{pid}/environ', 'rb').read()\n"
        f"        found += [pid] if b'{SECRET}' in data else []\n    except OSError:\n        pass\n"
        "print('found', found)",
        OK,
        stdout="found []",
    ),
    attack(
        "ptrace the zygote",
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print('ptrace', libc.ptrace(16, os.getppid(), 0, 0), ctypes.get_errno())",
        OK,
        stdout="ptrace -1 1",
    ),
    attack(
        "new namespaces",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000 | 0x40000000), ctypes.get_errno())",
        OK,
        stdout="unshare -1 1",
    ),
    attack(
        "mount",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())",
        OK,
        stdout="mount -1 1",
    ),
    attack("become root", "import os\nos.setuid(0)", ERROR),
    attack(
        "System V shared memory",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print('shmget', libc.shmget(0, 1 << 30, 0o1000 | 0o600), ctypes.get_errno())",
        OK,
        stdout="shmget -1 1",
    ),
]


@pytest.fixture(scope="module")
def server(module_server_factory: Any) -> Any:
    # The secret is in the server's environment: no program may find it.
    return module_server_factory({"THINKMESH_SANDBOX_TEST_SECRET": SECRET})


@pytest.fixture(scope="module")
def stub(server: Any) -> Iterator[sandbox_pb2_grpc.SandboxServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield sandbox_pb2_grpc.SandboxServiceStub(channel)


def _execute(stub: sandbox_pb2_grpc.SandboxServiceStub, code: str, **limits: int) -> sandbox_pb2.ExecuteResponse:
    return stub.Execute(sandbox_pb2.ExecuteRequest(code=code, **limits), timeout=60, wait_for_ready=True)


def _zygote_pid(stub: sandbox_pb2_grpc.SandboxServiceStub) -> int:
    reply = _execute(stub, "import os\nprint(os.getppid())")
    assert reply.status == OK, reply
    return int(reply.stdout)


def _program_processes() -> list[str]:
    """Processes of the sandbox uids that are not idle prepared processes (those lead their own session)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as status:
                uid = int(next(line for line in status if line.startswith("Uid:")).split()[1])
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, StopIteration):
            continue
        state, session = fields[0], int(fields[3])
        if FIRST_UID <= uid < FIRST_UID + WORKERS and state != "Z" and session != int(pid):
            found.append(pid)
    return found


@pytest.mark.parametrize("hostile", ATTACKS, ids=[a.name for a in ATTACKS])
def test_the_attack_is_contained_and_the_next_request_succeeds(
    hostile: Attack, server: Any, stub: sandbox_pb2_grpc.SandboxServiceStub
) -> None:
    zygote = _zygote_pid(stub)
    reply = _execute(stub, hostile.code, timeout_ms=hostile.timeout_ms, memory_mb=hostile.memory_mb)
    allowed = [sandbox_pb2.ExecuteStatus.Name(s) for s in hostile.statuses]
    assert reply.status in hostile.statuses, (
        f"{sandbox_pb2.ExecuteStatus.Name(reply.status)} not in {allowed}: {reply.stderr[-2000:]}"
    )
    if hostile.stdout is not None:
        assert hostile.stdout in reply.stdout, reply.stdout[-2000:]
    assert len(reply.stdout) <= 64 * 1024 and len(reply.stderr) <= 64 * 1024 + 200
    # Nothing the program started is still running (prepared processes for the next programs aside).
    deadline = time.monotonic() + 3
    while (left := _program_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes outlived the program: {left}"
    # The server, and the very same zygote, carry on.
    assert server.process.poll() is None
    assert _zygote_pid(stub) == zygote
    assert _execute(stub, "print(6 * 7)").stdout == "42\n"


def test_the_battery_is_big_enough() -> None:
    assert len(ATTACKS) >= 25
