"""Folders that cooptim writes: who made them, who is writing them now.

- A marker file (`.cooptim`) names the kind of folder cooptim made (run, export). `--force`
  replaces only such a folder, and never one that holds the source of the command or a file that
  cooptim does not write there.
- An exclusive lock per folder (`.NAME.lock` beside it, `fcntl.flock`), held for the life of the
  process: a second writer gets an error naming the holder's pid. The kernel releases the lock of a
  process that dies, however it dies, so a stale lock is taken over safely.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from cooptim.errors import UserError

MARKER = ".cooptim"

# What cooptim itself writes in a folder of each kind (anything else is the user's: never deleted).
CONTENTS = {
    "run": {MARKER, "config.yaml", "metrics.jsonl", "checkpoints", "masks.npz", "report.json", "folding.json",
            "learned_folding.json", "emulation.json"},
    "export": {MARKER, "accelerator.json", "fpgaconvnet.json", "params.h", "weights", "testbench", "README.md",
               "reference"},
}


class FolderError(UserError, RuntimeError):
    """A folder cannot be used as asked (not cooptim's, locked by another process, not writable)."""


def mark(folder: Path, kind: str) -> None:
    (folder / MARKER).write_text(json.dumps({"kind": kind}) + "\n")


def kind_of(folder: Path) -> str | None:
    """The kind in a folder's marker, or None (no marker, or not readable as one)."""
    try:
        return json.loads((folder / MARKER).read_text())["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_replaceable(folder: Path, kind: str, *, protect: tuple[Path, ...] = ()) -> None:
    """Raises FolderError unless `folder` may be deleted by --force: absent, or a folder cooptim made
    as a `kind` (its marker), holding only what cooptim writes there and none of `protect`."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FolderError(f"{folder} is a file, not a {kind} folder; --force replaces only folders cooptim made")
    for source in protect:
        if _inside(source, folder):
            raise FolderError(f"--force would delete {folder}, which holds {source}, the source of this command")
    found = kind_of(folder)
    if found is None and kind == "run" and (folder / "config.yaml").is_file():
        found = "run"  # a run folder made before markers existed
    if found != kind:
        what = "has no cooptim marker" if found is None else f"is a cooptim {found} folder"
        raise FolderError(f"--force replaces only a {kind} folder that cooptim made; {folder} {what}: "
                          f"delete it yourself or choose another name")
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in CONTENTS[kind])
    if foreign:
        raise FolderError(f"--force would delete {folder}, which holds files cooptim does not write there "
                          f"({', '.join(foreign[:5])}); move them first")


def replace(folder: Path, kind: str, *, protect: tuple[Path, ...] = ()) -> None:
    """Deletes `folder` if --force may (see `check_replaceable`)."""
    check_replaceable(folder, kind, protect=protect)
    if folder.exists():
        shutil.rmtree(folder)


class Lock:
    """An exclusive lock on `folder` for this process (a context manager)."""

    def __init__(self, folder: Path, what: str = "folder"):
        self.path = folder.parent / f".{folder.name}.lock"
        self.folder, self.what = folder, what
        self.fd = None

    def acquire(self) -> "Lock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise FolderError(f"cannot write in {self.path.parent}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderError(f"{self.what} {self.folder} is in use by process {holder}; wait for it to finish "
                              f"or stop it") from None
        self.fd = fd
        self.record(os.getpid())
        return self

    def record(self, pid: int) -> None:
        """Names `pid` as the holder (a child that inherited the lock's descriptor and keeps the
        lock for as long as it runs, even if this process dies first)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(pid).encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
