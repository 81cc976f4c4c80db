"""The errors quantize/ raises on purpose. Each message names what is wrong and what to do."""

from __future__ import annotations


class QuantizeError(Exception):
    """Base class: the CLI prints the message and exits with status 2; no bundle is written."""


class SourceModelError(QuantizeError):
    """The input is not a usable Hugging Face CTC model folder (missing files, no CTC head...)."""


class UnsupportedArchitectureError(SourceModelError):
    """The model is not a CTC architecture that this exporter knows how to export."""


class ExportError(QuantizeError):
    """torch.onnx.export or onnxruntime failed on the exported graph."""


class ParityError(ExportError):
    """The exported graph does not reproduce the PyTorch model closely enough."""


class QuantizationError(QuantizeError):
    """onnxruntime's dynamic quantization failed, or its output does not load."""


class ManifestError(QuantizeError):
    """The evaluation manifest is unreadable, empty, or names audio that does not exist."""


class GuardError(QuantizeError):
    """int8 cost more accuracy than --max-cer-increase allows (the bundle is still written)."""
