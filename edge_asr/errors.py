"""The exceptions edge-asr raises. Every message names the thing at fault and what to do about it."""

from __future__ import annotations


class EdgeASRError(Exception):
    """Base class: catch this to handle every error edge-asr reports on purpose."""


class BundleError(EdgeASRError):
    """A model bundle is missing, incomplete, corrupt or of an unknown format."""


class AudioError(EdgeASRError):
    """An audio input could not be read, or holds no audio."""


class InputError(EdgeASRError):
    """An argument or path given by the user does not make sense (no audio in a folder, bad option)."""


class DeviceError(EdgeASRError):
    """No usable audio input (`edge-asr listen` / `devices`, `edge_asr.mic`): sounddevice or the PortAudio
    library is missing, there is no input device or none matches --device, the device refused to open
    (sample rate, busy) or failed to close, or it stopped delivering audio (unplugged)."""


class BenchError(EdgeASRError):
    """`edge-asr bench` could not finish: a configuration's child process died (most likely killed by
    the out-of-memory killer), or the --json report could not be written after measuring."""
