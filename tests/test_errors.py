"""Every error edge-asr reports on purpose is an EdgeASRError, exported from the package, and survives
the trip from a `bench` child process (pickling)."""

from __future__ import annotations

import inspect
import pickle

import pytest

import edge_asr
from edge_asr import errors


def _error_classes() -> list:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]


def test_every_error_is_exported_documented_and_an_edge_asr_error():
    classes = _error_classes()
    assert {c.__name__ for c in classes} >= {
        "EdgeASRError",
        "AudioError",
        "BenchError",
        "BundleError",
        "DeviceError",
        "InputError",
    }
    for cls in classes:
        assert issubclass(cls, errors.EdgeASRError)
        assert getattr(edge_asr, cls.__name__) is cls and cls.__name__ in edge_asr.__all__
        assert cls.__doc__ and len(cls.__doc__) > 30, f"{cls.__name__} should say when it is raised"
    assert edge_asr.__all__ == sorted(edge_asr.__all__)


def test_old_import_paths_name_the_same_classes():
    from edge_asr import bench, mic, sysinfo

    assert mic.DeviceError is errors.DeviceError
    assert bench.BenchError is errors.BenchError
    assert bench.peak_rss_kib is sysinfo.peak_rss_kib  # quantize/measure.py imports it from bench


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_errors_survive_pickling(cls):
    # A bench configuration runs in a child process: its error reaches the parent pickled.
    error = pickle.loads(pickle.dumps(cls("model.onnx: something is wrong")))
    assert type(error) is cls and str(error) == "model.onnx: something is wrong"


def test_every_error_has_a_protocol_neutral_code_that_survives_pickling():
    for cls in _error_classes():
        assert isinstance(cls.code, str) and cls.code
    assert errors.InputError("x").code == "bad_request" and errors.AudioError("x").code == "bad_audio"
    error = pickle.loads(
        pickle.dumps(errors.InputError("language 'de'", code="unsupported_language", field="language"))
    )
    assert (error.code, error.field, str(error)) == ("unsupported_language", "language", "language 'de'")
