"""Atomic file writes: a reader (or a crash) never sees a half-written output."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

from .errors import InputError

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


def check_output_folder(path: PathLike, option: str) -> Path:
    """Create `path` if needed and prove a file can be created in it, before any work is done.

    Otherwise a folder that cannot take the outputs is found out only after each input has been
    transcribed (or a benchmark measured), once per input, as an errno naming a hidden temp file.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} {folder}: is a file, not a folder; give a folder for the outputs")
    problem = _cannot_write_in(folder)
    if problem:
        raise InputError(
            f"{option} {folder}: cannot write there ({problem}); choose another folder or fix its permissions"
        )
    return folder


def check_output_file(path: PathLike, option: str) -> Path:
    """`check_output_folder` for one file that `write_*_atomic` will write."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{option} {target}: is a folder; give a file name, e.g. {target / 'out.json'}")
    problem = _cannot_write_in(target.parent)
    if problem:
        raise InputError(
            f"{option} {target}: cannot write there ({target.parent}: {problem}); choose another path "
            "or fix its permissions"
        )
    return target


def _cannot_write_in(folder: Path) -> str:
    """Why a file cannot be created in `folder` (made if missing), or "" when it can."""
    if folder.exists() and not folder.is_dir():
        return "a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edge-asr-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


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
