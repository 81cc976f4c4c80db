"""Building a bundle beside its destination and moving it into place whole (torch-free, so `quantize
lm` and its tests run on a machine without the desktop extra)."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edge_asr.atomic import publish_folder
from edge_asr.errors import BundleError

from .errors import QuantizeError


@contextmanager
def staged_bundle(out: Path) -> Iterator[Path]:
    """A hidden folder beside `out` to build a bundle in, for `place_bundle` to rename into place.

    If the build fails, the folder is removed so nothing half-written is left, and a BundleError
    from edge_asr (a bundle that does not validate) becomes a QuantizeError with its message.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BundleError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise QuantizeError(str(exc)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def place_bundle(tmp: Path, out: Path, force: bool) -> None:
    """Move the finished bundle into place; an existing one is replaced only with `force`."""
    if out.exists() and not force:
        raise QuantizeError(f"{out}: already exists; pass --force to replace it")
    publish_folder(tmp, out)
