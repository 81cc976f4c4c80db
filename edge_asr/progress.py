"""A one-line progress display on stderr. Written here rather than depending on tqdm so that the
device install stays numpy + onnxruntime + soundfile + soxr."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    """Shows "[i/n] name  42% (12.0/28.5 s)" on one rewritten line; silent when not a terminal."""

    def __init__(self, total_files: int, stream: Optional[TextIO] = None, enabled: Optional[bool] = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total_files = total_files
        self.index = 0
        self.name = ""
        self._last_draw = 0.0
        self._width = 0

    def start_file(self, name: str) -> None:
        self.index += 1
        self.name = name
        self.update(0.0, 0.0, force=True)

    def update(self, done: float, total: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        counter = f"[{self.index}/{self.total_files}] " if self.total_files > 1 else ""
        share = f" {100 * done / total:3.0f}% ({done:.1f}/{total:.1f} s)" if total > 0 else f" {done:.1f} s"
        line = f"{counter}{self.name}{share}"
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
