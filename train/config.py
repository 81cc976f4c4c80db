"""The training run's options: one dataclass, read from YAML/JSON mappings, checked and saved.

`TrainConfig` holds every option of `python -m train`; the augmentation options are a section of it,
`TrainConfig.augment` (`train.augment.AugmentOptions`), written as an `augment:` mapping in a config
file. Relative paths in a config file are relative to that file. The resolved config (absolute paths)
is saved with the run and can be fed back with `--config`. The command-line flags, generated from these
dataclasses, are in `train.cli`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from edge_asr.text import TextNormalization

from .augment import AugmentOptions

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# A field's metadata "path": True for a filesystem path (resolved against the config file's folder),
# IF_EXISTS for a path or a name (hub model, preset): resolved only if it exists there.
IF_EXISTS = "if-exists"


class ConfigError(ValueError):
    """A config file or option is malformed; the message names the option and what to change."""


def _opt(default: Any, help: str, **extra: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """All options of a training run (see `python -m train --help`)."""

    # --- data ---
    data: List[str] = _opt(
        [], "training data: LJSpeech folders / metadata.csv files or CSV manifests (path,text)", path=True
    )
    validation_data: List[str] = _opt(
        [], "validation data in the same formats; when empty, a seeded split of --data is used", path=True
    )
    validation_fraction: float = _opt(0.1, "fraction of --data held out for validation when none is given")
    seed: int = _opt(42, "seed for the split, augmentation and initialisation")
    min_seconds: float = _opt(
        0.0, "drop utterances shorter than this (the receptive field is always enforced)"
    )
    max_seconds: float = _opt(20.0, "drop utterances longer than this (memory grows with the longest item)")
    # --- text ---
    lowercase: bool = _opt(True, "fold transcripts to lower case")
    keep_punctuation: str = _opt("'", "punctuation characters kept in labels (others become word breaks)")
    strip_accents: bool = _opt(True, "fold accented letters to their base letter")
    alphabet: str = _opt("", "if set, the only letters/digits kept in labels")
    vocab: Optional[str] = _opt(
        None, "use this vocab.json instead of building one from the training text", path=True
    )
    min_char_count: int = _opt(
        1, "characters seen fewer times than this in training text are left out of the vocabulary"
    )
    # --- model ---
    model: str = _opt(
        "facebook/wav2vec2-base", "pretrained checkpoint: hub name or local folder", path=IF_EXISTS
    )
    init_from_config: Optional[str] = _opt(
        None,
        "train from scratch: a config.json path or a preset (tiny, small, base); --model is then ignored",
        path=IF_EXISTS,
    )
    model_overrides: Dict[str, Any] = _opt(
        {}, "config attributes to override, e.g. mask_time_prob=0.05 or conv_stride=[5,4,4] (flag: KEY=VALUE)"
    )
    freeze_feature_encoder: Optional[bool] = _opt(
        None, "freeze the conv feature encoder (default: yes for a pretrained model, no from scratch)"
    )
    gradient_checkpointing: bool = _opt(False, "trade compute for memory on long utterances")
    # --- training ---
    output_dir: str = _opt(
        "runs/wav2vec2-ctc", "the run folder (checkpoints, logs, splits, final model)", path=True
    )
    resume: bool = _opt(False, "continue from the last checkpoint in --output-dir")
    epochs: float = _opt(30.0, "passes over the training split")
    max_steps: int = _opt(-1, "stop after this many optimizer steps (overrides --epochs when > 0)")
    batch_size: int = _opt(8, "utterances per device per step")
    eval_batch_size: Optional[int] = _opt(None, "validation batch size (default: --batch-size)")
    grad_accum: int = _opt(1, "gradient accumulation steps")
    learning_rate: float = _opt(1e-4, "peak AdamW learning rate")
    weight_decay: float = _opt(0.005, "AdamW weight decay")
    warmup: float = _opt(0.1, "linear warmup: a fraction of all steps if < 1, else a step count")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm")
    precision: str = _opt(
        "auto",
        "fp32, bf16 or fp16 (GPU only); auto = bf16/fp16 on GPU, bf16 on CPUs with native bf16 "
        "(AVX512-BF16/AMX), fp32 on other CPUs",
        choices=PRECISIONS,
    )
    device: str = _opt("auto", "auto, cpu or cuda", choices=DEVICES)
    eval_steps: int = _opt(500, "evaluate (and checkpoint) every N optimizer steps")
    logging_steps: int = _opt(50, "log train loss and learning rate every N steps")
    early_stopping_patience: int = _opt(
        5, "stop after N evaluations without a better validation CER (0: never)"
    )
    early_stopping_threshold: float = _opt(0.0, "a CER improvement smaller than this does not count")
    save_total_limit: int = _opt(2, "checkpoints kept (the best one is always kept)")
    num_workers: int = _opt(2, "DataLoader worker processes (0: load in the training process)")
    cpu_threads: int = _opt(0, "PyTorch CPU threads (0: PyTorch's default); 1 is fastest on a busy machine")
    group_by_length: bool = _opt(True, "batch utterances of similar length to cut padding")
    logged_examples: int = _opt(4, "decoded validation examples written to TensorBoard per evaluation")
    # --- augmentation (training split only; flags keep their flat names: --noise-p, --no-augment) ---
    augment: AugmentOptions = field(
        default_factory=AugmentOptions,
        metadata={"help": "training-split augmentation: a mapping of train.augment.AugmentOptions"},
    )
    # --- misc ---
    log_level: str = _opt("info", "debug, info, warning or error")

    def text_normalization(self) -> TextNormalization:
        return TextNormalization(
            lowercase=self.lowercase,
            keep_punctuation=self.keep_punctuation,
            strip_accents=self.strip_accents,
            alphabet=self.alphabet,
        )

    def validate(self) -> None:
        if not self.data and not self.resume:
            raise ConfigError(
                "no training data: pass --data PATH (LJSpeech folder or CSV manifest) or set `data:`"
            )
        if not 0.0 < self.validation_fraction < 1.0 and not self.validation_data:
            raise ConfigError(f"validation_fraction must be between 0 and 1, got {self.validation_fraction}")
        positive = ("batch_size", "grad_accum", "eval_steps", "logging_steps", "save_total_limit")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.max_seconds <= self.min_seconds:
            raise ConfigError(
                f"max_seconds ({self.max_seconds}) must exceed min_seconds ({self.min_seconds})"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.num_workers < 0 or self.early_stopping_patience < 0 or self.cpu_threads < 0:
            raise ConfigError("num_workers, cpu_threads and early_stopping_patience cannot be negative")
        _check_augment(self.augment)

    def to_dict(self) -> Dict[str, Any]:
        """Plain YAML/JSON values: sections as nested mappings, pairs as lists."""
        return _plain(self)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], base_dir: Optional[Path] = None, where: str = "config"
    ) -> TrainConfig:
        """Build a config from a mapping as a config file holds it (keys may use - or _, the
        augmentation options under `augment:`); unknown keys are an error."""
        values = read_options(data, where, base_dir)
        augment = AugmentOptions(**values.pop("augment", {}))
        return cls(**values, augment=augment)


def _check_augment(options: AugmentOptions) -> None:
    for name in ("speed_p", "noise_p", "pitch_p", "stretch_p", "eq_p", "lowpass_p", "gain_p", "reverb_p"):
        if not 0.0 <= getattr(options, name) <= 1.0:
            raise ConfigError(f"augment.{name} is a probability (0..1), got {getattr(options, name)}")
    for name in (
        "speed_rate",
        "noise_snr_db",
        "pitch_semitones",
        "stretch_rate",
        "lowpass_hz",
        "gain_db",
        "reverb_rt60",
    ):
        low, high = getattr(options, name)
        if low > high:
            raise ConfigError(f"augment.{name}: the range ({low}, {high}) is reversed; give LOW HIGH")
    if options.speed_rate[0] <= 0 or options.stretch_rate[0] <= 0 or options.reverb_rt60[0] <= 0:
        raise ConfigError("augment.speed_rate, augment.stretch_rate and augment.reverb_rt60 must be positive")
    if not (options.lowpass_hz[0] > 0 and options.lowpass_hz[1] < 8000):
        raise ConfigError(
            f"augment.lowpass_hz must lie within 0..8000 Hz (16 kHz audio), got {options.lowpass_hz}"
        )
    if options.eq_gain_db < 0:
        raise ConfigError(f"augment.eq_gain_db cannot be negative, got {options.eq_gain_db}")


def option_fields(cls: Any) -> List[dataclasses.Field]:
    """The fields of an options dataclass that config files and flags set (not run state)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("option", True)]


def read_options(
    data: Mapping[str, Any], where: str = "config", base_dir: Optional[Path] = None
) -> Dict[str, Any]:
    """The options in `data`, checked against TrainConfig: only the keys given, converted where harmless
    (int -> float, a list -> a pair), relative paths resolved against `base_dir` when given, and the
    `augment:` section as a nested mapping. What `TrainConfig.from_dict` builds from, and what the
    command line merges key by key over a config file."""
    _reject_moved_keys(data, where)
    return _read(TrainConfig, data, where, base_dir, prefix="")


def _read(
    cls: Any, data: Mapping[str, Any], where: str, base_dir: Optional[Path], prefix: str
) -> Dict[str, Any]:
    """`data`'s keys against `cls`'s option fields; a field that is itself an options dataclass (the
    `augment` section) is read one level down."""
    if not isinstance(data, Mapping):
        what = f"option {prefix.rstrip('.')!r}" if prefix else "the top level"
        raise ConfigError(f"{where}: {what} should be a mapping of option: value, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in option_fields(cls)}
    values: Dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown option {prefix + str(raw_key)!r}{hint}")
        if dataclasses.is_dataclass(hints[key]):
            values[key] = _read(hints[key], value, where, base_dir, prefix=f"{prefix}{key}.")
            continue
        value = _coerce(prefix + key, hints[key], value, where)
        kind = fields[key].metadata.get("path")
        if base_dir is not None and kind:
            value = _resolve_path(value, base_dir, only_if_exists=kind == IF_EXISTS)
        values[key] = value
    return values


def _reject_moved_keys(data: Mapping[str, Any], where: str) -> None:
    """Before issue 17 the augmentation options were top-level keys (`noise_p: 0.3`, `augment: true`);
    name the nested form to write instead of failing on each old key in turn."""
    section = {f.name for f in option_fields(AugmentOptions)} - {"enabled"}
    moved = {str(k).replace("-", "_"): v for k, v in data.items() if str(k).replace("-", "_") in section}
    switch = data.get("augment")
    if not moved and not isinstance(switch, bool):
        return
    if isinstance(switch, bool):
        moved = {"enabled": switch, **moved}
    lines = "".join(f"\n    {key}: {json.dumps(value)}" for key, value in moved.items())
    old = ", ".join(f"augment: {json.dumps(v)}" if k == "enabled" else k for k, v in moved.items())
    raise ConfigError(
        f"{where}: the augmentation options moved under `augment:` (here: {old}); write instead"
        f"\n  augment:{lines}\n(the flags --noise-p, --no-augment, ... are unchanged)"
    )


def _coerce(key: str, hint: Any, value: Any, where: str) -> Any:
    """Check a config value against the field's type, converting the harmless cases (int -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = ConfigError(f"{where}: option {key!r} should be {_type_name(hint)}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad
        return str(value)
    if origin in (list, List):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(key, args[0], v, where) for v in value]
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(key, a, v, where) for a, v in zip(args, value))
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    return value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (list, List):
        return "a list"
    if origin in (tuple, Tuple):
        return f"a pair of {_type_name(typing.get_args(hint)[0])} values"
    if origin in (dict, Dict):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _resolve_path(value: Any, base_dir: Path, only_if_exists: bool) -> Any:
    """A relative path (or each of a list) against `base_dir`. `only_if_exists`: a model or init config
    is a path only if it exists there; otherwise a hub name or preset, kept as given."""

    def resolve(p: str) -> str:
        if not p and only_if_exists:
            return p
        if Path(p).is_absolute() or (only_if_exists and not (base_dir / p).exists()):
            return str(p)
        return str((base_dir / p).resolve())

    if value is None:
        return None
    return [resolve(p) for p in value] if isinstance(value, list) else resolve(value)


def _plain(value: Any) -> Any:
    """Options as YAML/JSON values: dataclasses as mappings of their options, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in option_fields(type(value))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_config_file(path: Path) -> Dict[str, Any]:
    """Read a YAML or JSON config file into a mapping."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise different types; both mean "fix the file"
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({exc})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    return data


def save_config(config: TrainConfig, path: Path) -> None:
    import yaml

    from edge_asr.atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))
