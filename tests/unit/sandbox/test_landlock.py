"""The Landlock layer's rules, and the interpreter's paths a program must be able to read."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from services.sandbox import landlock, runtime

V1_FS = (1 << 13) - 1  # EXECUTE … MAKE_SYM


@pytest.mark.parametrize(
    ("abi", "fs", "net", "scoped"),
    [
        (1, V1_FS, 0, 0),
        (2, V1_FS | landlock.REFER, 0, 0),
        (3, V1_FS | landlock.REFER | landlock.TRUNCATE, 0, 0),
        (4, V1_FS | landlock.REFER | landlock.TRUNCATE, 3, 0),
        (5, V1_FS | landlock.REFER | landlock.TRUNCATE | landlock.IOCTL_DEV, 3, 0),
        (6, (1 << 16) - 1, 3, 3),
        (7, (1 << 16) - 1, 3, 3),
    ],
)
def test_each_abi_version_handles_every_right_it_knows(abi: int, fs: int, net: int, scoped: int) -> None:
    assert landlock.handled(abi) == (fs, net, scoped)


def test_a_rule_grants_only_handled_rights_and_on_a_file_only_file_rights(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    directory = os.open(tmp_path, os.O_PATH)
    file = os.open(tmp_path / "file", os.O_PATH)
    try:
        v1 = landlock.handled(1)[0]
        assert landlock.rights_for(directory, landlock.WORK, v1) == landlock.WORK & v1  # no REFER, no TRUNCATE
        assert landlock.rights_for(file, landlock.READ, v1) == landlock.EXECUTE | landlock.READ_FILE  # no READ_DIR
        assert landlock.rights_for(file, landlock.WORK, landlock.handled(7)[0]) == landlock.FILE_RIGHTS
    finally:
        os.close(directory)
        os.close(file)


def test_the_paths_keep_only_the_outermost() -> None:
    paths = ["/usr/lib/python3", "/usr", "/opt/app/lib", "/opt/app", "/opt/application", "/usr"]
    assert runtime.outermost(paths) == ["/opt/app", "/opt/application", "/usr"]


def test_the_runtime_paths_hold_the_standard_library_and_site_packages() -> None:
    paths = runtime.runtime_paths()
    for needed in (os.path.dirname(os.__file__), os.path.dirname(os.path.dirname(pytest.__file__))):
        assert any(os.path.realpath(needed).startswith(path) for path in paths), needed
    assert paths == runtime.outermost(paths)


def _stat(modes: dict[str, tuple[int, int]]) -> Callable[[str], os.stat_result]:
    def stat_path(path: str) -> os.stat_result:
        mode, owner = modes.get(path, (0o755, 0))
        return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, owner, owner, 0, 0, 0, 0))

    return stat_path


def test_the_outermost_directory_a_uid_cannot_enter_is_found() -> None:
    modes = {"/root": (0o700, 0), "/root/.pyenv/private": (0o700, 0), "/home/ann": (0o750, 60000)}
    stat_path = _stat(modes)
    assert runtime.blocked_ancestor("/root/.pyenv/versions/3.11/lib", [60000], stat_path) == "/root"
    assert runtime.blocked_ancestor("/usr/lib/python3.11", [60000], stat_path) is None
    # The path itself is not an ancestor: a closed directory of its own is the probe's to find.
    assert runtime.blocked_ancestor("/root", [60000], stat_path) is None
    # Its owner may enter, the next slot's uid may not.
    assert runtime.blocked_ancestor("/home/ann/lib", [60000], stat_path) is None
    assert runtime.blocked_ancestor("/home/ann/lib", [60000, 60001], stat_path) == "/home/ann"


def _abi() -> int:
    try:
        return landlock.abi_version()
    except OSError as exc:
        pytest.skip(landlock.why_unavailable(exc))


def _in_child(rules: landlock.Rules, workdir: Path, code: str) -> dict[str, str]:
    """Restrict a forked child to the rules plus `workdir`, run `code` there (which fills `found`)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            ruleset = rules.ruleset()
            landlock.add_path(ruleset, str(workdir), landlock.WORK, rules.handled_fs)
            landlock.restrict_self(ruleset)
            found: dict[str, str] = {}
            exec(code, {"found": found, "os": os})
            os.write(write_end, json.dumps(found).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as results:
        text = results.read()
    os.waitpid(pid, 0)
    return dict(json.loads(text))


def _try(path: str, how: str) -> str:
    return (
        f"try:\n    {how}\n    found[{path!r}] = 'ok'\n"
        f"except OSError as exc:\n    found[{path!r}] = __import__('errno').errorcode[exc.errno]\n"
    )


def test_a_restricted_process_opens_only_what_its_rules_grant(tmp_path: Path) -> None:
    rules = landlock.Rules(_abi())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "public.txt").write_text("anyone may read this")
    (outside / "public.txt").chmod(0o644)
    work = tmp_path / "work"
    work.mkdir()
    try:
        rules.allow([os.path.realpath(sys.base_prefix), "/nonexistent"], landlock.READ)  # a missing path is skipped
        rules.allow(["/dev/null"], landlock.DEVICE)
        assert rules.paths == [os.path.realpath(sys.base_prefix), "/dev/null"]
        public = str(outside / "public.txt")
        found = _in_child(
            rules,
            work,
            _try(os.__file__, f"open({os.__file__!r}).read()")
            + _try(public, f"open({public!r}).read()")
            + _try("/etc", "os.listdir('/etc')")
            + _try("/dev/null", "open('/dev/null', 'w').write('x')")
            + _try(str(work), f"open({str(work / 'new')!r}, 'w').write('x')")
            + _try(str(outside), f"open({str(outside / 'new')!r}, 'w').write('x')"),
        )
    finally:
        rules.close()
    assert found == {
        os.__file__: "ok",
        public: errno.errorcode[errno.EACCES],
        "/etc": errno.errorcode[errno.EACCES],
        "/dev/null": "ok",
        str(work): "ok",
        str(outside): errno.errorcode[errno.EACCES],
    }
    assert not (outside / "new").exists()


def test_no_landlock_is_reported_with_the_reason() -> None:
    assert "5.13" in landlock.why_unavailable(OSError(errno.ENOSYS, "no"))
    assert "lsm=" in landlock.why_unavailable(OSError(errno.EOPNOTSUPP, "off"))
    assert "seccomp" in landlock.why_unavailable(OSError(errno.EPERM, "filtered"))
