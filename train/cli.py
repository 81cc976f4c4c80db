"""`python -m train`: the flags, parse_args / run / main (tests call `run` in-process).

Every option of `TrainConfig` is also a flag (`data_seed` -> `--data-seed`), generated from the
dataclasses so a new option cannot be forgotten on one side. The `augment:` section's options keep
flat flags (`augment.noise_p` -> `--noise-p`, `augment.enabled` -> `--augment/--no-augment`).
Precedence: defaults < config file < flags. Relative paths on the command line are relative to the
current folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .config import ConfigError, TrainConfig, load_config_file, option_fields, read_options

log = logging.getLogger("train")

# Flags not spelt "--" + the option's name (a section's options are argparse dests "section.name").
_FLAG_NAMES = {"model_overrides": "--model-override", "augment.enabled": "--augment"}


class _KeyValue(argparse.Action):
    """`--model-override KEY=VALUE` (repeatable); VALUE is parsed as YAML (numbers, lists, bools)."""

    def __call__(self, parser, namespace, values, option_string=None):
        import yaml

        key, sep, raw = str(values).partition("=")
        if not sep or not key:
            parser.error(f"{option_string} expects KEY=VALUE, got {values!r}")
        current = dict(getattr(namespace, self.dest, None) or {})
        try:
            current[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            current[key.strip()] = raw
        setattr(namespace, self.dest, current)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Fine-tune a wav2vec2 CTC model (or train one from scratch) on labelled audio. "
        "Writes a Hugging Face model folder that `python -m quantize` turns into a device bundle.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", type=Path, help="YAML or JSON file of options (flags override it)")
    _add_flags(parser, TrainConfig(), prefix="")
    return parser


def _add_flags(parser: Any, defaults: Any, prefix: str) -> None:
    """One flag per option of the dataclass instance `defaults`; a section gets its own help group."""
    hints = typing.get_type_hints(type(defaults))
    for f in option_fields(type(defaults)):
        dest, hint, default = prefix + f.name, hints[f.name], getattr(defaults, f.name)
        if dataclasses.is_dataclass(hint):
            group = parser.add_argument_group(f"{f.name} (in a config file: the `{f.name}:` section)")
            _add_flags(group, default, prefix=f"{dest}.")
            continue
        if typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        shown = f" (default: {default!r})" if default not in (None, [], {}) else ""
        kwargs: Dict[str, Any] = {"help": f.metadata.get("help", "") + shown}
        flag = _FLAG_NAMES.get(dest, "--" + f.name.replace("_", "-"))
        origin = typing.get_origin(hint)
        if dest == "model_overrides":
            parser.add_argument(flag, dest=dest, action=_KeyValue, metavar="KEY=VALUE", **kwargs)
            continue
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (list, List):
            kwargs.update(nargs="+", type=typing.get_args(hint)[0], metavar="PATH")
        elif origin in (tuple, Tuple):
            kwargs.update(nargs=2, type=typing.get_args(hint)[0], metavar=("LOW", "HIGH"))
        elif "choices" in f.metadata:
            kwargs.update(type=hint, choices=f.metadata["choices"])
        else:
            kwargs.update(type=hint, metavar=f.name.upper())  # not argparse's "AUGMENT.NOISE_P"
        parser.add_argument(flag, dest=dest, **kwargs)


def config_from_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Parse flags (and the --config file they name) into a validated TrainConfig."""
    given = vars(build_parser().parse_args(argv))
    config_path = given.pop("config", None)
    from_file: Dict[str, Any] = {}
    if config_path is not None:
        path = Path(config_path).resolve()
        from_file = read_options(load_config_file(path), str(path), base_dir=path.parent)
    from_flags = read_options(_nest(given), "command line", base_dir=Path.cwd())
    config = TrainConfig.from_dict(_merge(from_file, from_flags), where=str(config_path or "command line"))
    config.validate()
    return config


def _nest(flags: Dict[str, Any]) -> Dict[str, Any]:
    """argparse's {"augment.noise_p": v} -> {"augment": {"noise_p": v}}, as a config file has it."""
    nested: Dict[str, Any] = {}
    for dest, value in flags.items():
        section, dot, name = dest.rpartition(".")
        if dot:
            nested.setdefault(section, {})[name] = value
        else:
            nested[dest] = value
    return nested


def _merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    """`top` over `base`; a mapping in both (the augment section, model_overrides) merges key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = base.get(key)
        merged[key] = {**below, **value} if isinstance(value, dict) and isinstance(below, dict) else value
    return merged


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
