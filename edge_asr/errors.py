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
