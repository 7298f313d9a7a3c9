"""What a power cut leaves on disk, at every point of a real run's file operations.

``trace`` runs a command under strace and keeps the syscalls that change files under one folder
(creating, writing, truncating, fsyncing, renaming, removing files and folders), in the order
the kernel finished them. ``cuts`` applies them one by one to a model of the folder and, after
each, gives the states a power cut there could leave:

- ``all``: every operation up to the cut reached the disk, file contents included;
- ``synced``: names as the operations left them (a journal keeps metadata in order, so a cut
  leaves a prefix of the renames, creations and removals), each file's contents as its last
  fsync left them: what was written and not fsynced is lost (zero-length files after a crash,
  as ext4 with delayed allocation and XFS leave them);
- ``torn``: as ``synced``, but half of each file's unsynced bytes did reach the disk.

A syscall on the folder that the model does not know (writev, sendfile, a dup of a tracked
file...) is an error, so the model never silently drops a write.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SYSCALLS = (
    "openat,write,pwrite64,lseek,ftruncate,fsync,fdatasync,close,rename,renameat,renameat2,unlink,unlinkat,"
    "mkdir,mkdirat,rmdir,open,creat,writev,pwritev,pwritev2,sendfile,copy_file_range,truncate,fallocate,"
    "link,linkat,symlink,symlinkat,dup,dup2,dup3,fcntl,mmap"
)
VARIANTS = ("all", "synced", "torn")
_LINE = re.compile(r"(?P<call>\w+)\((?P<args>.*)\) += (?P<ret>-?\d+)")
_HEX = re.compile(r"(?:\\x[0-9a-f]{2})*")


class Unmodelled(Exception):
    """The run did something to the folder that the model cannot replay."""


def trace(command: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """``command`` under strace (every thread and child), its file syscalls written to ``log``:
    strings and paths in hex (``-xx``), whole (``-s``), each fd with its path (``-y``)."""
    return subprocess.run(
        ["strace", "-f", "--seccomp-bpf", "-qq", "-y", "-xx", "-s", str(1 << 24), "-o", str(log), "-e"]
        + [f"trace={SYSCALLS}", *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=300,
    )


def _bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


def _lines(log: Path) -> Iterator[tuple[str, list[str], int]]:
    """Each finished syscall as (name, arguments, return value); an unfinished call is joined
    to its resumption, and failed calls (a negative return) are left out."""
    pending: dict[str, str] = {}
    for raw in log.read_text().splitlines():
        pid, _, rest = raw.partition(" ")
        rest = rest.lstrip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest.removesuffix("<unfinished ...>")
            continue
        if rest.startswith("<... "):
            rest = pending.pop(pid) + rest.split(" resumed>", 1)[1]
        m = _LINE.match(rest)
        if m is None or int(m["ret"]) < 0:
            continue  # signals, exits, and calls that failed changed nothing
        if '"...' in m["args"]:
            raise Unmodelled(f"a string cut short in the trace (raise -s): {raw[:200]}")
        yield m["call"], m["args"].split(", "), int(m["ret"])


def _string(arg: str) -> bytes:
    assert arg.startswith('"') and arg.endswith('"') and _HEX.fullmatch(arg[1:-1]), arg[:80]
    return _bytes(arg[1:-1])


def _fd(arg: str) -> tuple[int, str, bool]:
    """An fd argument, ``5<path>``: its number, the path the kernel had for it, and whether that
    name was removed since."""
    m = re.fullmatch(r"(-?\d+|AT_FDCWD)<(.*?)>(\(deleted\))?", arg)
    assert m, arg[:80]
    return (-100 if m[1] == "AT_FDCWD" else int(m[1])), _bytes(m[2]).decode(), bool(m[3])


def _at(dirfd: str, path: str) -> str:
    name = _string(path).decode()
    return name if name.startswith("/") else f"{_fd(dirfd)[1]}/{name}"


@dataclass
class Inode:
    data: bytearray = field(default_factory=bytearray)
    synced: bytes = b""  # the contents at the last fsync: what a power cut keeps for certain
    folder: bool = False


@dataclass
class Open:
    inode: Inode
    append: bool
    pos: int = 0


class Model:
    """The files and folders under ``root`` as the traced operations leave them."""

    def __init__(self, root: Path, cwd: Path) -> None:
        self.root, self.cwd = str(root), str(cwd)  # a path outside an *at call is from the cwd
        self.names: dict[str, Inode] = {}  # path from the parent of root (run/last.pt) -> inode
        self.fds: dict[int, Open] = {}

    def rel(self, path: str) -> str | None:
        """``path`` relative to the parent of ``root`` (``run/last.pt``), None outside ``root``."""
        if path == self.root or path.startswith(self.root + "/"):
            return str(Path(path).relative_to(Path(self.root).parent))
        return None

    def apply(self, call: str, args: list[str], ret: int) -> bool:
        """Replay one syscall; True if it changed what a power cut could leave."""
        if call in ("openat", "open", "creat"):
            return self._open(call, args, ret)
        if call in ("mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2"):
            return self._name(call, args)
        if call == "mmap":
            return self._mmap(args)
        fd, path, deleted = _fd(args[0])
        rel = self.rel(path)
        if rel is None:
            return False
        if fd not in self.fds or (not deleted and self.names.get(rel) is not self.fds[fd].inode):
            raise Unmodelled(f"{call} on fd {fd} ({path}), which the model did not see opened")
        f, inode = self.fds[fd], self.fds[fd].inode
        if call in ("write", "pwrite64"):
            at = int(args[3]) if call == "pwrite64" else len(inode.data) if f.append else f.pos
            data = _string(args[1])[:ret]
            inode.data.extend(bytes(max(0, at - len(inode.data))))  # a hole reads as zeros
            inode.data[at : at + len(data)] = data
            f.pos = f.pos if call == "pwrite64" else at + len(data)
            return bool(data)
        if call == "ftruncate":
            size, before = int(args[1]), bytes(inode.data)
            inode.data.extend(bytes(max(0, size - len(inode.data))))
            del inode.data[size:]
            return inode.data != before
        if call in ("fsync", "fdatasync"):
            changed = inode.synced != inode.data
            inode.synced = bytes(inode.data)
            return changed
        if call == "lseek":
            f.pos = ret
        elif call in ("dup", "dup2", "dup3") or (call == "fcntl" and args[1].startswith("F_DUPFD")):
            self.fds[ret] = f  # one open file description: offset and flags shared
        elif call == "close":
            del self.fds[fd]
        elif call != "fcntl":  # other fcntls (flags, locks) change nothing on disk
            raise Unmodelled(f"{call} on {path}")
        return False

    def _open(self, call: str, args: list[str], ret: int) -> bool:
        path = _string(args[0]).decode() if call != "openat" else _at(args[0], args[1])
        flags = args[1] if call == "open" else "O_CREAT|O_WRONLY|O_TRUNC" if call == "creat" else args[2]
        rel = self.rel(os.path.join(self.cwd, path))
        if rel is None:
            return False
        changed = rel not in self.names
        inode = self.names.setdefault(rel, Inode())
        if "O_TRUNC" in flags and inode.data:
            inode.data.clear()
            changed = True
        self.fds[ret] = Open(inode, "O_APPEND" in flags)
        return changed

    def _name(self, call: str, args: list[str]) -> bool:
        at = call.endswith("at") or call == "renameat2"
        paths = [_at(args[i], args[i + 1]) for i in (0, 2)[: 2 if "rename" in call else 1]] if at else None
        paths = paths or [_string(a).decode() for a in args[: 2 if "rename" in call else 1]]
        rels = [self.rel(os.path.join(self.cwd, p)) for p in paths]
        if all(r is None for r in rels):
            return False
        if None in rels:
            raise Unmodelled(f"{call} across the folder's edge: {paths}")
        if call in ("mkdir", "mkdirat"):
            self.names[rels[0]] = Inode(folder=True)
        elif "rename" in call:
            self._rename(rels[0], rels[1])
        else:  # unlink, unlinkat (AT_REMOVEDIR or not), rmdir: the name goes, open fds keep the inode
            del self.names[rels[0]]
        return True

    def _rename(self, old: str, new: str) -> None:
        for name in [n for n in self.names if n == new or n.startswith(new + "/")]:
            del self.names[name]  # the target (an empty folder, or a file) is replaced
        for name in [n for n in self.names if n == old or n.startswith(old + "/")]:
            self.names[new + name[len(old) :]] = self.names.pop(name)

    def _mmap(self, args: list[str]) -> bool:
        shared_writable = "PROT_WRITE" in args[2] and "MAP_SHARED" in args[3]
        if shared_writable and "<" in args[4] and self.rel(_fd(args[4])[1]) is not None:
            raise Unmodelled(f"a shared writable mapping of {_fd(args[4])[1]}")
        return False

    def state(self, variant: str) -> dict[str, bytes | None]:
        """What a power cut now leaves: each path's contents (None for a folder)."""
        found: dict[str, bytes | None] = {}
        for name, inode in self.names.items():
            if inode.folder:
                found[name] = None
                continue
            data, synced = bytes(inode.data), inode.synced
            if variant == "all" or data == synced:
                found[name] = data
                continue
            kept = 0
            while kept < min(len(data), len(synced)) and data[kept] == synced[kept]:
                kept += 1
            found[name] = data[:kept] if variant == "synced" else data[: (kept + len(data)) // 2]
        return found


def cuts(log: Path, root: Path, cwd: Path) -> Iterator[tuple[int, str, dict[str, bytes | None]]]:
    """(cut point, variant, state) for a power cut before the first operation on ``root`` and
    after each one that changed it (``cwd``: the traced command's)."""
    model = Model(root, cwd)
    point = 0
    for variant in VARIANTS:
        yield point, variant, model.state(variant)
    for call, args, ret in _lines(log):
        if model.apply(call, args, ret):
            point += 1
            for variant in VARIANTS:
                yield point, variant, model.state(variant)


def lay_out(state: dict[str, bytes | None], parent: Path) -> None:
    """Make ``parent`` hold ``state`` and nothing else."""
    for old in parent.iterdir():
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    for name in sorted(state, key=lambda n: n.count("/")):  # each folder before what it holds
        content = state[name]
        if content is None:
            (parent / name).mkdir()
        else:
            (parent / name).write_bytes(content)
