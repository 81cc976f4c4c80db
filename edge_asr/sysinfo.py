"""What the machine is and what this process costs: board and /proc probing, and peak RSS.

Every probe gives None (or a fallback) instead of failing where a file or tool is missing, so the
same calls work on a Raspberry Pi, a Linux desktop and macOS. Nothing heavy is imported at module
level: quantize/ and benchmarks/ read peak RSS through this module while holding torch.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from typing import Any, Dict, Optional


def peak_rss_kib() -> float:
    """This process's peak resident set size so far, in KiB.

    VmHWM first: Linux carries ru_maxrss across exec, so a child started by a bigger process (one
    holding torch, say) would report its parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else float(peak)  # macOS reports bytes


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB."""
    return peak_rss_kib() * 1024 / 1e6


def machine_info() -> Dict[str, Any]:
    """Facts about this board that change benchmark figures (`edge-asr bench` puts them in its report)."""
    import numpy as np
    import onnxruntime as ort

    from . import __version__

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "board": board_name(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "memory_mb": memory_mb(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "edge_asr": __version__,
        # A busy or throttled board gives slow figures that say nothing about the model.
        "load_average_1m": load_average(),
        "throttled": throttled(),
    }


def board_name() -> Optional[str]:
    """The device tree's model: "Raspberry Pi 4 Model B Rev 1.4" on a Pi; None on most PCs."""
    return _read_text("/proc/device-tree/model")


def cpu_model() -> Optional[str]:
    """The CPU's name from /proc/cpuinfo (or what ARM kernels give instead of one)."""
    text = _read_text("/proc/cpuinfo") or ""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    # x86 says "model name"; ARM kernels often give only "CPU part" codes and "Model" (the board).
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    if "CPU part" in fields:
        return f"CPU implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return platform.processor() or None


def memory_mb() -> Optional[int]:
    """Total memory in MiB (MemTotal in /proc/meminfo); None where there is no /proc."""
    for line in (_read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def load_average() -> Optional[float]:
    """The 1-minute load average; None where the system does not keep one."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def throttled() -> Optional[str]:
    """`vcgencmd get_throttled` on a Raspberry Pi ("throttled=0x0" is good); None elsewhere."""
    import shutil
    import subprocess

    tool = shutil.which("vcgencmd")
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, "get_throttled"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace").strip("\x00\n ") or None
    except OSError:
        return None


def physical_cores() -> int:
    """Physical cores available to this process (SMT siblings counted once)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as handle:
                cores.add(handle.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))
