"""edge-asr: offline speech-to-text for Raspberry Pi-class devices (numpy + onnxruntime, no torch)."""

from .errors import AudioError, BundleError, EdgeASRError
from .results import Transcript, Word
from .transcriber import EdgeTranscriber, TranscribeOptions

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "BundleError",
    "EdgeASRError",
    "EdgeTranscriber",
    "TranscribeOptions",
    "Transcript",
    "Word",
    "__version__",
]
