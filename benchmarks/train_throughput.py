"""Training throughput on this machine: wav2vec2-base steps and DataLoader items per second.

    nice python benchmarks/train_throughput.py [--steps 3] [--threads 2] [--skip-model] [--skip-loader]
    python benchmarks/train_throughput.py --config recipes/default-model-config.json --batch 12 --skip-loader

Model part: a random-init wav2vec2-base (transformers' default Wav2Vec2Config; `--config` takes a
preset name or config.json as `python -m train --init-from-config` does) doing full training
steps (forward, the trainer's true-length CTC loss, backward, AdamW) on a batch of 4 x 5 s, in fp32 and
under bf16 autocast, with the conv feature encoder frozen and trained. Loader part: train/'s
SpeechDataset + CTCCollator through a DataLoader over 5 s files stored at 22.05 kHz (so resampling is
included), with augmentation off, at the run defaults, and with every transform applied.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf

# train/ is a folder of the repository, not an installed package: run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def model_throughput(steps: int, batch: int, seconds: float, source: str = "base") -> List[Dict[str, object]]:
    import torch
    from transformers import Wav2Vec2ForCTC

    from train.model import load_model_config
    from train.trainer import ctc_loss, output_frames_tensor

    results: List[Dict[str, object]] = []
    samples = int(seconds * 16000)
    for frozen in (True, False):
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            config = load_model_config("", source, {}, vocab_size=32)
            model = Wav2Vec2ForCTC(config).train()
            if frozen:
                model.freeze_feature_encoder()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
            audio = torch.randn(batch, samples) * 0.1
            lengths = torch.full((batch,), samples, dtype=torch.long)
            labels = torch.randint(3, 32, (batch, int(seconds * 14)))
            frames = output_frames_tensor(config, lengths)
            bf16 = precision == "bf16"
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            times = []
            for step in range(steps + 1):  # the first step warms up allocators and kernels
                start = time.perf_counter()
                with autocast:
                    logits = model(audio).logits
                loss = ctc_loss(logits, labels, frames, 0)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step:
                    times.append(time.perf_counter() - start)
            per_step = float(np.median(times))
            row: Dict[str, object] = {
                "feature_encoder": "frozen" if frozen else "trained",
                "precision": precision,
                "s_per_step": round(per_step, 2),
                "samples_per_s": round(batch / per_step, 3),
                "audio_s_per_s": round(batch * seconds / per_step, 2),
            }
            print(f"  {row}", flush=True)
            results.append(row)
            del model, optimizer
    return results


def loader_throughput(files: int, seconds: float, batch: int, workers: List[int]) -> List[Dict[str, object]]:
    import torch

    from train import model as M
    from train import vocab as V
    from train.augment import AugmentOptions, make_impulse_responses
    from train.data import Utterance
    from train.dataset import CTCCollator, SpeechDataset

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        rows = []
        t = np.arange(int(seconds * 22050)) / 22050
        for i in range(files):
            wave = 0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t) + 0.02 * rng.standard_normal(t.size)
            path = folder / f"f{i}.wav"
            sf.write(str(path), wave.astype(np.float32), 22050)
            label = "a test sentence"
            rows.append(Utterance(str(path), label, f"bench:{i}", int(seconds * 16000), label))
        irs = make_impulse_responses(folder / "irs", (0.15, 0.6))
        vocabulary = V.build_vocabulary([r.label for r in rows])
        config = M.load_model_config("", "base", {})
        frames = lambda n: M.output_frames(config, n)  # noqa: E731
        settings = {
            "off": None,
            "defaults": AugmentOptions(impulse_dir=str(irs[0].parent)),
            "all p=1": AugmentOptions(
                noise_p=1, pitch_p=1, stretch_p=1, gain_p=1, reverb_p=1, impulse_dir=str(irs[0].parent)
            ),
        }
        for name, options in settings.items():
            for n_workers in workers:
                dataset = SpeechDataset(rows, V.encoder(vocabulary), frames, True, options)
                dataset[0]  # first use imports and builds the transforms: not part of the steady rate
                loader = torch.utils.data.DataLoader(
                    dataset, batch_size=batch, num_workers=n_workers, collate_fn=CTCCollator(False)
                )
                start = time.perf_counter()
                count = sum(len(b["input_lengths"]) for b in loader)
                elapsed = time.perf_counter() - start
                row = {
                    "augmentation": name,
                    "workers": n_workers,
                    "items_per_s": round(count / elapsed, 1),
                    "audio_s_per_s": round(count * seconds / elapsed, 1),
                }
                print(f"  {row}", flush=True)
                results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per setting")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--files", type=int, default=32, help="files for the loader part")
    parser.add_argument("--config", default="base", help="model: a preset (tiny, small, base) or config.json")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-loader", action="store_true")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_model:
        print(f"{args.config} training step, batch {args.batch} x {args.seconds:g} s:")
        model_throughput(args.steps, args.batch, args.seconds, args.config)
    if not args.skip_loader:
        print(f"DataLoader, {args.files} files of {args.seconds:g} s at 22.05 kHz, batch {args.batch}:")
        loader_throughput(args.files, args.seconds, args.batch, [0, 2])


if __name__ == "__main__":
    main()
