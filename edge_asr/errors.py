"""The exceptions edge-asr raises. Every message names the thing at fault and what to do about it.

Each error also has a `code`, a protocol-neutral name for the kind of failure that `edge-asr serve`
translates for its clients (an HTTP status and OpenAI error code, a Wyoming error event's code):
"bad_request", "bad_audio", "bad_grammar", "unsupported_language", "too_long" (audio past the
limit), "too_large" (an upload past the limit), "timeout", "busy", "shutdown", "incomplete" (the
client went away), and "bad_model", "device", "internal" (the server's own trouble). A class gives the
usual code; one raise may give another (`code=`), and `field` the request field at fault.
"""

from __future__ import annotations

from typing import Optional


class EdgeASRError(Exception):
    """Base class: catch this to handle every error edge-asr reports on purpose."""

    code = "internal"

    def __init__(self, message: str = "", *, code: Optional[str] = None, field: Optional[str] = None):
        super().__init__(message)
        if code is not None:
            self.code = code  # kept on the instance: pickling carries it with `field`
        self.field = field


class BundleError(EdgeASRError):
    """A model bundle is missing, incomplete, corrupt or of an unknown format."""

    code = "bad_model"


class AudioError(EdgeASRError):
    """An audio input could not be read, or holds no audio."""

    code = "bad_audio"


class InputError(EdgeASRError):
    """An argument or path given by the user does not make sense (no audio in a folder, bad option)."""

    code = "bad_request"


class DeviceError(EdgeASRError):
    """No usable audio input (`edge-asr listen` / `devices`, `edge_asr.mic`): sounddevice or the PortAudio
    library is missing, there is no input device or none matches --device, the device refused to open
    (sample rate, busy) or failed to close, or it stopped delivering audio (unplugged)."""

    code = "device"


class BenchError(EdgeASRError):
    """`edge-asr bench` could not finish: a configuration's child process died (most likely killed by
    the out-of-memory killer), or the --json report could not be written after measuring."""
