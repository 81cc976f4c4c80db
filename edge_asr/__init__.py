"""edge-asr: offline speech-to-text for Raspberry Pi-class devices (numpy + onnxruntime, no torch)."""

from .errors import AudioError, BenchError, BundleError, DeviceError, EdgeASRError, InputError
from .grammar import CommandMatch, Grammar
from .hotwords import Hotwords
from .results import Transcript, Word
from .stream import StreamEvent, StreamOptions
from .transcriber import EdgeTranscriber, FileResult, TranscribeOptions

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "BenchError",
    "BundleError",
    "CommandMatch",
    "DeviceError",
    "EdgeASRError",
    "EdgeTranscriber",
    "FileResult",
    "Grammar",
    "Hotwords",
    "InputError",
    "StreamEvent",
    "StreamOptions",
    "TranscribeOptions",
    "Transcript",
    "Word",
    "__version__",
]
