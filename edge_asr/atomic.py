"""Atomic file writes: a reader (or a crash) never sees a half-written output."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file owner-only; give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return target


def replace_folder(staging: PathLike, target: PathLike) -> Path:
    """Swap a fully written `staging` folder into place of `target`: a reader sees the old folder or
    the new one, never a mix (the old one is removed only after the rename)."""
    new, dest = Path(staging), Path(target)
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    if old.exists():
        shutil.rmtree(old)
    return dest


def publish_folder(staging: PathLike, target: PathLike) -> Path:
    """Give a folder built in a private temporary place (mkdtemp: owner-only) the permissions a plain
    mkdir/open would, then swap it into place of `target` with `replace_folder`."""
    root = Path(staging)
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
    return replace_folder(root, target)
