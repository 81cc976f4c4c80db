"""Whisper's log-mel front-end inside an ONNX graph: a strided conv1d with a fixed DFT basis (what
train.whisper_ctc.LogMel exports) against ONNX's own STFT operator, in onnxruntime.

    python benchmarks/whisper_frontend.py [--seconds 10] [--threads 1 2]

Prints the time per run of each front-end graph alone (median of 20) and their largest difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stft_front_end(n_mels: int):
    """The same log-mel with torch.stft (exported as ONNX STFT, opset 17)."""
    import torch

    from train.whisper_ctc import HOP, N_FFT, mel_filters

    class StftLogMel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.window: torch.Tensor
            self.mel: torch.Tensor
            self.register_buffer("window", torch.hann_window(N_FFT))
            self.register_buffer("mel", torch.from_numpy(mel_filters(n_mels)))

        def forward(self, samples: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.pad(samples[:, None, :], (N_FFT // 2, N_FFT // 2))[:, 0]
            spec = torch.stft(x, N_FFT, HOP, window=self.window, center=False, return_complex=False)
            power = (spec[..., :-1, :] ** 2).sum(-1)
            log_spec = torch.clamp(torch.matmul(self.mel, power), min=1e-10).log10()
            floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
            return (torch.maximum(log_spec, floor) + 4.0) / 4.0

    return StftLogMel()


def export(module, path: Path) -> None:
    import torch

    example = torch.randn(1, 32000)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (example,), str(path), input_names=["samples"], output_names=["mel"],
            dynamic_axes={"samples": {1: "n"}, "mel": {2: "frames"}}, opset_version=17, dynamo=False,
        )  # fmt: skip


def time_graph(path: Path, audio: np.ndarray, threads: int, runs: int = 20) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = session.run(None, {"samples": audio})[0]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {"samples": audio})
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    from train.whisper_ctc import LogMel

    audio = (0.1 * np.random.default_rng(0).standard_normal((1, int(args.seconds * 16000)))).astype(
        np.float32
    )
    with tempfile.TemporaryDirectory() as tmp:
        conv, stft = Path(tmp) / "conv.onnx", Path(tmp) / "stft.onnx"
        export(LogMel(80), conv)
        export(stft_front_end(80), stft)
        for threads in args.threads:
            t_conv, a = time_graph(conv, audio, threads)
            t_stft, b = time_graph(stft, audio, threads)
            diff = float(np.abs(a - b).max())
            print(
                f"{args.seconds:.0f} s audio, {threads} thread(s): conv1d DFT {1000 * t_conv:.2f} ms, "
                f"ONNX STFT {1000 * t_stft:.2f} ms (x{t_stft / t_conv:.2f}); max |diff| {diff:.2e}"
            )


if __name__ == "__main__":
    main()
