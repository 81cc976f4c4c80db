"""Load a Hugging Face CTC checkpoint and read off everything the bundle needs.

The input is the model-folder contract shared with train/ (config.json, weights, vocab.json and
tokenizer files, preprocessor_config.json, text_normalization.json) or any compatible fine-tuned
checkpoint folder / hub name. Nothing here writes files.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edge_asr.text import TextNormalization

from .errors import SourceModelError, UnsupportedArchitectureError

log = logging.getLogger(__name__)

TEXT_NORMALIZATION_FILE = "text_normalization.json"
# model_type -> its CTC class. The wav2vec2 family shares a strided conv feature encoder (so
# frame_stride/receptive_field follow from conv_stride/conv_kernel); whisper-ctc (train.whisper_ctc)
# has a log-mel front-end inside the model and states its geometry in its config. All end in a
# linear CTC head `lm_head`.
SUPPORTED_MODEL_TYPES = {
    "wav2vec2": "Wav2Vec2ForCTC",
    "hubert": "HubertForCTC",
    "data2vec-audio": "Data2VecAudioForCTC",
    "whisper-ctc": "WhisperCtcForCTC",
}
WHISPER_CTC = "whisper-ctc"
DEFAULT_SAMPLE_RATE = 16000


@dataclass
class FeatureSettings:
    """What the feature extractor would do to raw samples before the model."""

    sample_rate: int = DEFAULT_SAMPLE_RATE
    do_normalize: bool = True
    return_attention_mask: bool = False


@dataclass
class SourceModel:
    """A loaded CTC checkpoint plus the facts the bundle metadata is made of."""

    name: str
    model: Any  # a transformers *ForCTC module in eval mode (typed loosely: torch is imported lazily)
    model_type: str
    features: FeatureSettings
    vocabulary: List[str]
    blank_id: int
    word_delimiter: Optional[str]
    special_ids: List[int]
    text_normalization: TextNormalization
    text_normalization_inferred: bool
    frame_stride: int
    receptive_field: int
    local_path: Optional[Path] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)


def conv_geometry(kernels: Sequence[int], strides: Sequence[int]) -> tuple:
    """(frame_stride, receptive_field) in samples of a stack of unpadded strided 1-D convolutions."""
    if len(kernels) != len(strides) or not kernels:
        raise SourceModelError(
            f"config: conv_kernel {list(kernels)} and conv_stride {list(strides)} do not match"
        )
    stride = math.prod(strides)
    field_size, jump = 1, 1
    for k, s in zip(kernels, strides):
        field_size += (k - 1) * jump
        jump *= s
    return stride, field_size


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceModelError(f"{path}: not readable JSON ({exc}); the model folder is corrupt") from None
    if not isinstance(data, dict):
        raise SourceModelError(f"{path}: expected a JSON object")
    return data


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise SourceModelError(f"{folder}: not a folder; pass a Hugging Face model folder or hub name")
    if not (folder / "config.json").is_file():
        raise SourceModelError(
            f"{folder}: not a Hugging Face model folder (config.json is missing). Pass the folder that "
            "train/ or `save_pretrained` wrote, holding config.json, model.safetensors and vocab.json."
        )
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("pytorch_model*.bin"))
    if not weights:
        raise SourceModelError(
            f"{folder}: no weights (model.safetensors or pytorch_model.bin) next to config.json"
        )


def _architecture(config: Any) -> str:
    model_type = getattr(config, "model_type", "")
    architectures = list(getattr(config, "architectures", None) or [])
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedArchitectureError(
            f"unsupported architecture: model_type {model_type!r} "
            f"({', '.join(architectures) or 'no class'}). "
            f"This exporter handles CTC models of type {', '.join(sorted(SUPPORTED_MODEL_TYPES))}."
        )
    non_ctc = [a for a in architectures if not a.endswith("ForCTC")]
    if architectures and non_ctc and not any(a.endswith("ForCTC") for a in architectures):
        raise UnsupportedArchitectureError(
            f"unsupported architecture: {', '.join(architectures)} is not a CTC model (no *ForCTC head). "
            "Fine-tune it with a CTC head first (train/ does that), then convert the result."
        )
    return model_type


def _features(name: str) -> tuple:
    from transformers import AutoFeatureExtractor

    try:
        extractor = AutoFeatureExtractor.from_pretrained(name)
    except (OSError, ValueError) as exc:
        msg = (
            f"{name}: no usable preprocessor_config.json ({str(exc).splitlines()[0]}); assuming wav2vec2 "
            "defaults (16 kHz, do_normalize=true)"
        )
        return FeatureSettings(), msg
    return (
        FeatureSettings(
            sample_rate=int(getattr(extractor, "sampling_rate", DEFAULT_SAMPLE_RATE)),
            do_normalize=bool(getattr(extractor, "do_normalize", True)),
            return_attention_mask=bool(getattr(extractor, "return_attention_mask", False)),
        ),
        None,
    )


def _tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # transformers raises many unrelated types for a missing/broken vocabulary
        raise SourceModelError(
            f"{name}: missing or unreadable vocabulary ({_first_line(exc)}). "
            "A CTC model folder needs vocab.json and tokenizer_config.json (the CTC tokenizer's files)."
        ) from None
    if tokenizer is None or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise SourceModelError(f"{name}: missing vocabulary (no tokenizer files such as vocab.json)")
    return tokenizer


def vocabulary_from_tokenizer(tokenizer: Any, vocab_size: int, warnings: List[str]) -> tuple:
    """(tokens ordered by id, blank id, word delimiter, special ids) for the model's output width."""
    tokens: List[str] = []
    for i in range(vocab_size):
        token = tokenizer.convert_ids_to_tokens(i)
        if token is None or token == "":
            # Some checkpoints pad lm_head past the tokenizer; such columns never decode to text.
            token = f"<unused:{i}>"
            warnings.append(f"output column {i} has no token in the vocabulary; kept as {token}")
        tokens.append(str(token))
    if len(set(tokens)) != len(tokens):
        raise SourceModelError("the vocabulary maps two ids to the same token; vocab.json is corrupt")
    pad_id = tokenizer.pad_token_id
    if pad_id is None or not 0 <= pad_id < vocab_size:
        raise SourceModelError(
            f"the tokenizer's pad token (the CTC blank) is {pad_id!r}, not an output column of the model "
            f"(0..{vocab_size - 1}); vocab.json does not belong to this model"
        )
    delimiter = getattr(tokenizer, "word_delimiter_token", None)
    if delimiter not in tokens:
        delimiter = None
        if " " not in tokens:
            warnings.append(
                "the vocabulary has no word delimiter ('|' or ' '): transcripts will have no spaces"
            )
    delimiter_id = tokens.index(delimiter) if delimiter is not None else -1
    special = {int(i) for i in tokenizer.all_special_ids if 0 <= int(i) < vocab_size and i != delimiter_id}
    special |= {i for i, t in enumerate(tokens) if t.startswith("<unused:")}
    special.add(int(pad_id))
    return tokens, int(pad_id), delimiter, sorted(special)


def infer_text_normalization(
    tokens: Sequence[str], special_ids: Sequence[int], delimiter: Optional[str]
) -> TextNormalization:
    """A normalization that maps references onto what this vocabulary can spell (for foreign checkpoints)."""
    skip = set(special_ids)
    chars = {t for i, t in enumerate(tokens) if i not in skip and len(t) == 1 and t != delimiter and t != " "}
    letters = {c.lower() for c in chars if c.isalnum()}
    punctuation = "".join(sorted(c for c in chars if not c.isalnum() and not c.isspace()))
    accented = any(c != c.encode("ascii", "ignore").decode() for c in letters)
    return TextNormalization(
        lowercase=True,
        keep_punctuation=punctuation,
        strip_accents=not accented,
        alphabet="".join(sorted(letters)),
    )


def looks_like_path(name: str) -> bool:
    """Whether `name` can only mean a local path: a hub name is "model" or "org/model", never
    absolute, never starting with "." or "~", never with more than one slash."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def load_source(name_or_path: str) -> SourceModel:
    """Load a CTC checkpoint (folder or hub name) in float32 eval mode and check it is exportable."""
    from transformers import AutoConfig, AutoModelForCTC

    # Registers the whisper-ctc family with AutoConfig/AutoModelForCTC (torch is loaded anyway here).
    import train.whisper_ctc  # noqa: F401

    warnings: List[str] = []
    folder = Path(name_or_path)
    local = folder.exists()
    if local:
        _check_folder(folder)
    elif looks_like_path(name_or_path):
        raise SourceModelError(
            f"{name_or_path}: no such folder. Pass the model folder that `python -m train` (its model/ "
            "folder) or `save_pretrained` wrote"
        )
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except Exception as exc:
        where = "folder" if local else "hub name (no network here? pass a local folder)"
        raise SourceModelError(
            f"{name_or_path}: cannot read the model config from this {where}: {exc}"
        ) from None
    model_type = _architecture(config)
    features, warning = _features(name_or_path)
    if warning:
        warnings.append(warning)
    tokenizer = _tokenizer(name_or_path)
    try:
        model, info = AutoModelForCTC.from_pretrained(
            name_or_path, output_loading_info=True, attn_implementation="eager", dtype="float32"
        )
    except Exception as exc:
        raise SourceModelError(
            f"{name_or_path}: cannot load the weights ({_first_line(exc)}); "
            "the checkpoint is corrupt or does not match config.json"
        ) from None
    missing = [k for k in info.get("missing_keys", []) if k.startswith("lm_head")]
    if missing:
        raise UnsupportedArchitectureError(
            f"{name_or_path}: the checkpoint has no trained CTC head ({', '.join(sorted(missing))} missing). "
            "It is a pre-trained encoder, not a speech recognizer: fine-tune it with CTC first."
        )
    model.eval()
    vocab_size = int(model.lm_head.out_features)
    tokens, blank_id, delimiter, special_ids = vocabulary_from_tokenizer(tokenizer, vocab_size, warnings)
    norm_path = folder / TEXT_NORMALIZATION_FILE if local else None
    if norm_path is not None and norm_path.is_file():
        try:
            normalization = TextNormalization.from_dict(_read_json(norm_path))
        except (TypeError, ValueError) as exc:
            raise SourceModelError(f"{norm_path}: not a text normalization ({exc})") from None
        inferred = False
    else:
        normalization = infer_text_normalization(tokens, special_ids, delimiter)
        inferred = True
        warnings.append(
            f"no {TEXT_NORMALIZATION_FILE}: text normalization inferred from the vocabulary ({normalization})"
        )
    if model_type == WHISPER_CTC:
        stride, receptive = int(config.frame_stride), int(config.receptive_field)
    else:
        stride, receptive = conv_geometry(list(config.conv_kernel), list(config.conv_stride))
    for message in warnings:
        log.warning(message)
    return SourceModel(
        name=str(name_or_path) if not local else folder.resolve().name,
        model=model,
        model_type=model_type,
        features=features,
        vocabulary=tokens,
        blank_id=blank_id,
        word_delimiter=delimiter,
        special_ids=special_ids,
        text_normalization=normalization,
        text_normalization_inferred=inferred,
        frame_stride=stride,
        receptive_field=receptive,
        local_path=folder.resolve() if local else None,
        warnings=warnings,
    )
