"""The training run's options: one dataclass, readable from YAML/JSON and settable by flags.

Every field of `TrainConfig` is also a command-line flag (`data_seed` -> `--data-seed`), generated from
the dataclass so a new option cannot be forgotten on one side. Precedence: defaults < config file <
flags. Relative paths in a config file are relative to that file; on the command line, to the
current folder. The resolved config (absolute paths) is saved with the run and can be fed back with
`--config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge_asr.text import TextNormalization

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# Fields holding filesystem paths: resolved against the config file's folder.
_PATH_FIELDS = ("data", "validation_data", "output_dir", "vocab", "noise_dir")


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
        [], "training data: LJSpeech folders / metadata.csv files or CSV manifests (path,text)"
    )
    validation_data: List[str] = _opt(
        [], "validation data in the same formats; when empty, a seeded split of --data is used"
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
    vocab: Optional[str] = _opt(None, "use this vocab.json instead of building one from the training text")
    min_char_count: int = _opt(
        1, "characters seen fewer times than this in training text are left out of the vocabulary"
    )
    # --- model ---
    model: str = _opt("facebook/wav2vec2-base", "pretrained checkpoint: hub name or local folder")
    init_from_config: Optional[str] = _opt(
        None,
        "train from scratch: a config.json path or a preset (tiny, small, base); --model is then ignored",
    )
    model_overrides: Dict[str, Any] = _opt(
        {}, "config attributes to override, e.g. mask_time_prob=0.05 or conv_stride=[5,4,4] (flag: KEY=VALUE)"
    )
    freeze_feature_encoder: Optional[bool] = _opt(
        None, "freeze the conv feature encoder (default: yes for a pretrained model, no from scratch)"
    )
    gradient_checkpointing: bool = _opt(False, "trade compute for memory on long utterances")
    # --- training ---
    output_dir: str = _opt("runs/wav2vec2-ctc", "the run folder (checkpoints, logs, splits, final model)")
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
    # --- augmentation (training split only) ---
    augment: bool = _opt(True, "augment training audio")
    speed_p: float = _opt(
        0.0, "probability of speed perturbation (tempo, pitch and formants together: a new 'speaker')"
    )
    speed_rate: Tuple[float, float] = _opt((0.9, 1.1), "speed perturbation range (>1 is faster)")
    noise_p: float = _opt(0.3, "probability of added noise")
    noise_snr_db: Tuple[float, float] = _opt((10.0, 40.0), "noise SNR range in dB")
    noise_dir: Optional[str] = _opt(None, "folder of background-noise recordings (default: coloured noise)")
    pitch_p: float = _opt(0.2, "probability of a pitch shift")
    pitch_semitones: Tuple[float, float] = _opt((-2.0, 2.0), "pitch shift range in semitones")
    stretch_p: float = _opt(0.2, "probability of a time stretch")
    stretch_rate: Tuple[float, float] = _opt((0.9, 1.1), "time stretch rate range (>1 is faster)")
    eq_p: float = _opt(0.0, "probability of a random seven-band EQ (a new microphone or engine)")
    eq_gain_db: float = _opt(8.0, "EQ band gains are drawn from +-this many dB")
    lowpass_p: float = _opt(0.0, "probability of a low-pass filter (band-limited engines and phones)")
    lowpass_hz: Tuple[float, float] = _opt((3000.0, 7500.0), "low-pass cutoff range in Hz")
    gain_p: float = _opt(0.3, "probability of a gain change")
    gain_db: Tuple[float, float] = _opt((-6.0, 6.0), "gain range in dB")
    reverb_p: float = _opt(0.1, "probability of synthetic room reverb")
    reverb_rt60: Tuple[float, float] = _opt((0.15, 0.6), "reverb decay time range in seconds")
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
        for name in ("speed_p", "noise_p", "pitch_p", "stretch_p", "eq_p", "lowpass_p", "gain_p", "reverb_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} is a probability (0..1), got {getattr(self, name)}")
        for name in (
            "speed_rate",
            "noise_snr_db",
            "pitch_semitones",
            "stretch_rate",
            "lowpass_hz",
            "gain_db",
            "reverb_rt60",
        ):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"{name}: the range ({low}, {high}) is reversed; give LOW HIGH")
        if self.speed_rate[0] <= 0 or self.stretch_rate[0] <= 0 or self.reverb_rt60[0] <= 0:
            raise ConfigError("speed_rate, stretch_rate and reverb_rt60 must be positive")
        if not (self.lowpass_hz[0] > 0 and self.lowpass_hz[1] < 8000):
            raise ConfigError(f"lowpass_hz must lie within 0..8000 Hz (16 kHz audio), got {self.lowpass_hz}")
        if self.eq_gain_db < 0:
            raise ConfigError(f"eq_gain_db cannot be negative, got {self.eq_gain_db}")

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(
        cls, data: Dict[str, Any], base_dir: Optional[Path] = None, where: str = "config"
    ) -> TrainConfig:
        """Build a config from a mapping (keys may use - or _); unknown keys are an error."""
        hints = typing.get_type_hints(cls)
        values: Dict[str, Any] = {}
        for raw_key, value in data.items():
            key = str(raw_key).replace("-", "_")
            if key not in hints:
                close = difflib.get_close_matches(key, list(hints), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{where}: unknown option {raw_key!r}{hint}")
            values[key] = _coerce(key, hints[key], value, where)
        if base_dir is not None:
            _resolve_paths(values, base_dir)
        try:
            config = cls(**values)
        except TypeError as exc:  # pragma: no cover - every field has a default
            raise ConfigError(f"{where}: {exc}") from None
        return config


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


def _resolve_paths(values: Dict[str, Any], base_dir: Path) -> None:
    def resolve(p: str) -> str:
        return str(p) if Path(p).is_absolute() else str((base_dir / p).resolve())

    for key in _PATH_FIELDS:
        if key in values and values[key] is not None:
            values[key] = (
                [resolve(p) for p in values[key]] if isinstance(values[key], list) else resolve(values[key])
            )
    # A model or init config is a path only if it exists there; otherwise a hub name or preset.
    for key in ("model", "init_from_config"):
        value = values.get(key)
        if value and not Path(value).is_absolute() and (base_dir / value).exists():
            values[key] = str((base_dir / value).resolve())


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


# ----------------------------------------------------------------------------------------------
# command line


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        if typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        default = getattr(defaults, f.name)
        shown = f" (default: {default!r})" if default not in (None, [], {}) else ""
        kwargs: Dict[str, Any] = {"help": f.metadata.get("help", "") + shown}
        origin = typing.get_origin(hint)
        if f.name == "model_overrides":
            parser.add_argument(
                "--model-override", dest=f.name, action=_KeyValue, metavar="KEY=VALUE", **kwargs
            )
            continue
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (list, List):
            kwargs.update(nargs="+", type=typing.get_args(hint)[0], metavar="PATH")
        elif origin in (tuple, Tuple):
            kwargs.update(nargs=2, type=typing.get_args(hint)[0], metavar=("LOW", "HIGH"))
        else:
            kwargs["type"] = hint
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(_flag(f.name), dest=f.name, **kwargs)
    return parser


def config_from_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Parse flags (and the --config file they name) into a validated TrainConfig."""
    namespace = vars(build_parser().parse_args(argv))
    config_path = namespace.pop("config", None)
    merged: Dict[str, Any] = {}
    if config_path is not None:
        path = Path(config_path).resolve()
        merged = TrainConfig.from_dict(
            load_config_file(path), base_dir=path.parent, where=str(path)
        ).to_dict()
    flags = TrainConfig.from_dict(namespace, base_dir=Path.cwd(), where="command line")
    overrides = {k: getattr(flags, k) for k in namespace}
    if "model_overrides" in overrides and "model_overrides" in merged:
        overrides["model_overrides"] = {**merged["model_overrides"], **overrides["model_overrides"]}
    merged.update(overrides)
    config = TrainConfig.from_dict(merged, where=str(config_path or "command line"))
    config.validate()
    return config
