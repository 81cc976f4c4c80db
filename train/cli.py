"""`python -m train`: parse_args / run / main (tests call `run` in-process)."""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from .config import ConfigError, TrainConfig, config_from_args

log = logging.getLogger("train")


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Flags (+ the --config file) -> a validated TrainConfig; exits with a message on bad options."""
    try:
        return config_from_args(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _setup_logging(level: str) -> None:
    import os

    rank = int(os.environ.get("RANK", "0"))
    # Under torchrun only rank 0 talks, unless something goes wrong on another rank.
    effective = level.upper() if rank == 0 else "WARNING"
    logging.basicConfig(
        level=getattr(logging, effective, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        if rank == 0
        else f"[rank {rank}] %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # transformers logs its own progress through tqdm; its INFO chatter adds nothing for a user.
    logging.getLogger("transformers").setLevel(logging.WARNING)


def run(config: TrainConfig) -> int:
    """Train; print where the model went. Returns the exit status."""
    from .data import DataError
    from .model import ModelError
    from .pipeline import run_training
    from .trainer import TrainError
    from .vocab import VocabularyError

    try:
        result = run_training(config)
    except (ConfigError, DataError, ModelError, VocabularyError, TrainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        print(
            f"model: {result.model_dir}\n"
            f"validation CER {result.cer:.4f}, WER {result.wer:.4f} after {result.steps} steps"
            + (" (stopped early)" if result.stopped_early else "")
        )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    config = parse_args(argv)
    _setup_logging(config.log_level)
    return run(config)
