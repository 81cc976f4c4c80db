"""Exact package versions of the environment a run was trained in (saved as versions.json)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any, Dict

KEY_PACKAGES = (
    "edge-asr",
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "audiomentations",
    "jiwer",
    "numpy",
    "soundfile",
    "soxr",
    "tensorboard",
    "pyyaml",
)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def package_versions() -> Dict[str, Any]:
    """Python, platform, accelerator and the version of every installed distribution."""
    info: Dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in KEY_PACKAGES},
    }
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA setup must not stop the run from recording what it has
        info["cuda_devices"] = []
    everything: Dict[str, str] = {}
    for dist in metadata.distributions():
        # The first Name header, as Message.get gives it (typeshed's PackageMetadata lacks get before 3.12).
        names = dist.metadata.get_all("Name")
        name = names[0] if names else None
        if name:
            everything[name] = dist.version
    info["all_packages"] = dict(sorted(everything.items(), key=lambda kv: kv[0].lower()))
    return info
