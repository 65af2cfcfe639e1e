"""What a program must be able to read: the interpreter's files, wherever they live.

A program imports from the standard library and the installed packages at run time (whatever the zygote did not
import ahead), so they must stay readable under its uid and its Landlock rules. As root, each program runs as an
unprivileged uid, and an interpreter installed in a home directory (pyenv in /root, mode 0700) is out of that
uid's reach: every module not imported ahead then fails with ModuleNotFoundError. No mode is changed on the host;
instead, in the zygote's own mount namespace, each directory the programs' uids cannot enter is covered by an
empty read-only tmpfs through which only the interpreter's directories are bound back, at the same paths. What
still cannot be read (a directory of the interpreter's own with mode 0700) is found by the start-up probe, and the
uid layer is then refused (services/sandbox/zygote.py).
"""

from __future__ import annotations

import os
import stat
import sys
import sysconfig
from collections.abc import Callable, Iterable, Sequence

from services.sandbox import isolation


def runtime_paths() -> list[str]:
    """The interpreter's prefixes, its standard library and site-packages, every existing entry of sys.path and
    the location of every package imported so far (an editable install's packages need not be on sys.path):
    resolved, existing, and none beneath another."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]
    candidates += sysconfig.get_paths().values()
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if "." in name or spec is None:
            continue
        if spec.submodule_search_locations:
            candidates += spec.submodule_search_locations
        elif spec.has_location and spec.origin:
            candidates.append(os.path.dirname(spec.origin))
    # Never the whole tree, whatever sys.path holds (the zygote runs with PYTHONSAFEPATH, so not its working
    # directory either).
    resolved = (os.path.realpath(path) for path in candidates if path and os.path.exists(path))
    return outermost(path for path in resolved if path != "/")


def outermost(paths: Iterable[str]) -> list[str]:
    """The paths, sorted, without those beneath another one."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == top or path.startswith(top.rstrip("/") + "/") for top in kept):
            kept.append(path)
    return kept


def can_enter(mode: int, owner: int, group: int, uid: int) -> bool:
    """Whether `uid` (its gid equal to it, no supplementary groups: see isolation.drop_privileges) may search a
    directory with this mode and owner. POSIX ACLs are not read; the start-up probe checks the result."""
    if owner == uid:
        return bool(mode & stat.S_IXUSR)
    if group == uid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def blocked_ancestor(
    path: str, uids: Sequence[int], stat_path: Callable[[str], os.stat_result] = os.stat
) -> str | None:
    """The outermost directory above `path` that one of the uids cannot enter (None: all of them can)."""
    parts = path.strip("/").split("/")
    for depth in range(len(parts) - 1):
        ancestor = "/" + "/".join(parts[: depth + 1])
        info = stat_path(ancestor)
        if not all(can_enter(info.st_mode, info.st_uid, info.st_gid, uid) for uid in uids):
            return ancestor
    return None


def expose(paths: Sequence[str], uids: Sequence[int]) -> list[str]:
    """Make each path reachable for the uids in this mount namespace (root, in the zygote's own); returns the
    directories covered. Each one they cannot enter is covered by an empty tmpfs (mode 0755, then read-only) that
    holds only the paths beneath it, bound back at the same place; the rest of it (a home directory's other
    files) disappears from the namespace, for programs and the zygote alike."""
    beneath: dict[str, list[str]] = {}
    for path in paths:
        ancestor = blocked_ancestor(path, uids)
        if ancestor is not None:
            beneath.setdefault(ancestor, []).append(path)
    for ancestor, inside in beneath.items():
        # Held open across the cover, so that the paths can be bound back from what they were.
        held = [os.open(path, os.O_PATH | os.O_CLOEXEC) for path in inside]
        try:
            isolation.mount("tmpfs", ancestor, "tmpfs", isolation.PRIVATE_TMP_FLAGS, "size=64k,mode=0755")
            try:
                for path, fd in zip(inside, held, strict=True):
                    _mount_point(ancestor, path, is_dir=stat.S_ISDIR(os.fstat(fd).st_mode))
                    isolation.mount(f"/proc/self/fd/{fd}", path, None, isolation.MS_BIND | isolation.MS_REC)
                isolation.mount("none", ancestor, None, isolation.MS_REMOUNT | isolation.COVER_FLAGS)
            except OSError:
                isolation.detach(ancestor)  # half a cover would hide the interpreter from the zygote too
                raise
        finally:
            for fd in held:
                os.close(fd)
    return list(beneath)


def _mount_point(top: str, path: str, is_dir: bool) -> None:
    """The directories from `top` down to `path` in the fresh tmpfs, each 0755 whatever the umask."""
    current = top
    parts = os.path.relpath(path, top).split("/")
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        last = index == len(parts) - 1
        if last and not is_dir:
            os.close(os.open(current, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        elif not os.path.isdir(current):
            os.mkdir(current)
            os.chmod(current, 0o755)
