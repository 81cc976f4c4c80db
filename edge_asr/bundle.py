"""The model bundle: the one contract between the desktop side (which writes it) and the device.

A bundle is a folder::

    bundle.json        metadata below (JSON, never pickle)
    model.onnx         float32 graph: input float32 [batch, samples] -> output float32 [batch, frames, vocab]
    model.int8.onnx    optional dynamically quantized twin of model.onnx
    front_end*.onnx    format 2, optional: the same model split in two graphs (see `SplitGraphs`)
    encoder*.onnx
    decoder_*.onnx     format 3, optional: Whisper's text decoder for joint CTC/attention decoding
    decoder_tokens.json                      (see `DecoderSettings`), with its byte-level token table
    lm.npz             optional character n-gram language model for beam search (see edge_asr.lm)
    words.npz          optional word n-gram language model that scores finished words in that search
    ...                any other file (report.md, samples) listed in "files" with its sha256

The graph may take a second input ``input_lengths`` (int64 [batch]) so that normalization baked into
the graph ignores padding; the device always runs one utterance at a time and feeds its full length.

Bump FORMAT_VERSION whenever a reader of the old version would misread a new bundle. A bundle is
written with the lowest version that describes it, so that a bundle without split graphs still loads
in an edge-asr that reads version 1 only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import limits
from .atomic import PathLike, write_text_atomic
from .errors import BundleError
from .limits import brief
from .text import TextNormalization

log = logging.getLogger(__name__)
# Version 2 adds "split" (`SplitGraphs`): a front-end and an encoder graph beside the single graph.
# A version-1 reader would not know the field, and one that ignored it would still be right, but a
# bundle whose front-end graph is missing must be refused by name, so the version says it is there.
# Version 3 adds "decoder" (`DecoderSettings`): a version-2 reader would ignore it and decode with CTC
# alone, which still works, but it would refuse the unknown field; the version says why.
# Version 4 adds the decoder's `per_layer_cross`: its step graph reads one cross-attention key and value
# input per layer; a version-3 reader would feed the stacked inputs the graph no longer has.
FORMAT_VERSION = 4
SPLIT_FORMAT_VERSION = 2  # the first version with SplitGraphs
DECODER_FORMAT_VERSION = 3  # the first version with DecoderSettings
PER_LAYER_CROSS_FORMAT_VERSION = 4  # the first version with DecoderSettings.per_layer_cross
READABLE_VERSIONS = (1, 2, 3, 4)
METADATA_FILE = "bundle.json"
SUPPORTED_SAMPLE_RATES = range(8000, 48001)
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "models" / "default"
LM_KIND = "char-ngram"
LM_FILE = "lm.npz"  # the names `quantize lm` gives a bundle's language models
WORDS_FILE = "words.npz"
# bundle.json is a few kilobytes (5 KB for the default model; a 32k-token vocabulary ~0.5 MB): past
# this it is not a bundle's metadata, and reading a 100 MB one whole only wastes a Pi's memory.
MAX_METADATA_BYTES = 4 << 20
# The deepest real structure is source.training.stages[i]: 4 levels. Deeper nesting only ever comes
# from a hostile file, and dataclasses.asdict / json.dumps (info --json) recurse through it.
MAX_NESTING = 32
SHA256_HEX = frozenset("0123456789abcdef")


def _section(data: Any, where: str, required: Dict[str, Any], optional: Dict[str, Any]) -> Dict[str, Any]:
    """The keys of a JSON object section, checked: present, of their type, and none unknown."""
    if not isinstance(data, dict):
        raise BundleError(f"{where} must be an object, got {brief(data)}")
    for key in required:
        if key not in data:
            raise BundleError(f"{where}.{key} is missing")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise BundleError(f"{where}: unknown field(s) {brief(', '.join(unknown))}; written by a newer tool?")
    for key, kind in {**required, **optional}.items():
        if key in data and data[key] is not None and kind is str and not isinstance(data[key], str):
            raise BundleError(f"{where}.{key} should be a string, got {brief(data[key])}")
    return data


@dataclass(frozen=True)
class WordModelSettings:
    """A word n-gram LM that scores finished words in the beam search (`beam.PrefixBeamDecoder`).

    Attributes:
        file: the LM's file in the bundle (`WORDS_FILE`).
        word_weight, unknown_word_penalty: see `beam.BeamOptions`; tuned for this model.
        order: the n-gram order (informative).
    """

    file: str
    word_weight: float
    unknown_word_penalty: float
    order: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> WordModelSettings:
        fields = {"word_weight": limits.WORD_WEIGHT, "unknown_word_penalty": limits.UNKNOWN_WORD_PENALTY}
        _section(data, where, {"file": str, **fields}, {"order": int})
        for key, allowed in fields.items():
            allowed.check(data[key], f"{where}.{key}", BundleError)
        return cls(data["file"], data["word_weight"], data["unknown_word_penalty"], data.get("order"))


@dataclass(frozen=True)
class LanguageModelSettings:
    """The bundle's beam-search language model(s) and the decoding settings tuned for this model.

    Attributes:
        file: the character n-gram LM's file in the bundle (`LM_FILE`).
        beam_size, lm_weight, insertion_bonus: see `beam.BeamOptions`.
        order: the character n-gram order (informative).
        kind: the LM's format; this reader knows `LM_KIND` only.
        words: the optional word LM beside it; a reader that ignores it still decodes correctly,
            with the character LM alone.
    """

    file: str
    beam_size: int
    lm_weight: float
    insertion_bonus: float
    order: Optional[int] = None
    kind: str = LM_KIND
    words: Optional[WordModelSettings] = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "language_model") -> LanguageModelSettings:
        if not isinstance(data, dict) or data.get("kind") != LM_KIND:
            raise BundleError(f'{where} must be an object with "kind": "{LM_KIND}"')
        fields = {
            "beam_size": limits.BEAM_SIZE,
            "lm_weight": limits.LM_WEIGHT,
            "insertion_bonus": limits.INSERTION_BONUS,
        }
        _section(data, where, {"file": str, "kind": str}, {**fields, "order": int, "words": dict})
        for key, allowed in fields.items():
            allowed.check(data.get(key), f"{where}.{key}", BundleError)
        order = data.get("order")
        if order is not None:
            limits.Range(1, 64, integer=True).check(order, f"{where}.order", BundleError)
        words = data.get("words")
        return cls(
            file=data["file"],
            beam_size=data["beam_size"],
            lm_weight=data["lm_weight"],
            insertion_bonus=data["insertion_bonus"],
            order=order,
            words=WordModelSettings.from_dict(words, f"{where}.words") if words is not None else None,
        )

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (keys in the order bundle.json has always had; no null fields)."""
        data: Dict[str, Any] = {"file": self.file, "kind": self.kind}
        if self.order is not None:
            data["order"] = self.order
        data.update(beam_size=self.beam_size, lm_weight=self.lm_weight, insertion_bonus=self.insertion_bonus)
        if self.words is not None:
            words = self.words
            data["words"] = {"file": words.file}
            if words.order is not None:
                data["words"]["order"] = words.order
            data["words"].update(
                word_weight=words.word_weight, unknown_word_penalty=words.unknown_word_penalty
            )
        return data


@dataclass(frozen=True)
class SplitGraphs:
    """Format 2: the model as two graphs run one after the other, so that a runner can keep the
    front-end features of audio it has already seen and run the front-end on new samples only
    (`windows.FeatureCache`). They compute what the single graph in `BundleMetadata.models` does
    (`python -m quantize` checks that at export); the single graph stays for tools and old readers.

    Attributes:
        front_end: variant ("fp32", "int8") -> graph file: float32 samples [batch, samples] ->
            features [batch, frames, feature_dim]. It never normalizes: with `do_normalize` the device
            normalizes the samples first. Two variants may name the same file (the int8 recipe
            quantizes MatMuls, and the conv front-end has none).
        encoder: variant -> graph file: features [batch, frames, feature_dim] -> log-probabilities
            [batch, frames, vocab] (log-softmax in the graph).
        feature_dim: the width of the features.
        frames_local: the features of frame f depend only on that frame's receptive field (samples
            f * frame_stride .. + receptive_field), as measured at export: true for a conv encoder
            with per-frame layer norm, false for group norm (statistics over the whole input).
    """

    front_end: Dict[str, str]
    encoder: Dict[str, str]
    feature_dim: int
    frames_local: bool

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SplitGraphs:
        required = {"front_end": dict, "encoder": dict, "feature_dim": int, "frames_local": bool}
        _section(data, where, required, {})
        for key in ("front_end", "encoder"):
            files = data[key]
            if not files or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
                raise BundleError(f"{where}.{key} must map variant names to file names, got {brief(files)}")
        if type(data["frames_local"]) is not bool:
            raise BundleError(
                f"{where}.frames_local should be true or false, got {brief(data['frames_local'])}"
            )
        limits.Range(1, 1 << 16, integer=True).check(data["feature_dim"], f"{where}.feature_dim", BundleError)
        return cls(dict(data["front_end"]), dict(data["encoder"]), data["feature_dim"], data["frames_local"])

    def files(self) -> List[str]:
        """Every graph file named, each once."""
        return sorted(set(self.front_end.values()) | set(self.encoder.values()))


def _id_list(value: Any, where: str, size: int) -> List[int]:
    if not isinstance(value, list) or not all(type(i) is int and 0 <= i < size for i in value):
        raise BundleError(f"{where} must be a list of token ids below {size}, got {brief(value)}")
    return list(value)


@dataclass(frozen=True)
class DecoderSettings:
    """Format 3: Whisper's text decoder over the encoder's states, for joint CTC/attention decoding
    (`edge_asr.attention`). The bundle's CTC graph then has a second output, `encoder_states`
    [batch, frames, heads * head_dim]; a reader that ignores this section decodes with CTC alone.

    Attributes:
        cross: graph file: encoder_states [1, frames, d] -> cross_k, cross_v [layers, 1, heads, frames,
            head_dim] (run once per utterance).
        step: graph file: tokens [beams, n], self_k, self_v [layers, beams, heads, past, head_dim],
            cross_k, cross_v -> log_probs [beams, vocab] of the next token, self_k_out, self_v_out.
        per_layer_cross: format 4: the step graph reads the cross keys and values one input per layer,
            cross_k_0 ... cross_k_<layers - 1> and cross_v_0 ... ([1, heads, frames, head_dim] each),
            instead of the stacked cross_k and cross_v. Why: a stacked input is sliced into layers
            at every step, a copy of all of them per token (6-11% of joint decoding's time, more on
            longer windows); one input per layer is read where it lies. Same weights and results.
        tokens: JSON list of the byte-level BPE strings by id (GPT-2's bytes-to-unicode form).
        prompt: ids fed first (start of transcript, no timestamps).
        eot: the end-of-text id.
        suppress: ids never written; suppress_at_begin: ids not written first; every id from
            `special_from` on is special and never written.
        layers, heads, head_dim, max_positions: the decoder's geometry (cache shapes, longest prompt
            plus output).
        ctc_weight: weight of the CTC prefix score's change against the decoder's log-probability
            (picked on synthetic validation voices).
        beam_size: 1 for greedy joint decoding.
        max_tokens_per_second: the hard bound on tokens written per second of audio (plus
            `min_tokens`), so a decoder that wants to loop stops.
        min_tokens: tokens always allowed, however short the audio.
    """

    cross: str
    step: str
    tokens: str
    prompt: List[int]
    eot: int
    suppress: List[int]
    suppress_at_begin: List[int]
    special_from: int
    layers: int
    heads: int
    head_dim: int
    max_positions: int
    ctc_weight: float = 0.3
    beam_size: int = 1
    max_tokens_per_second: float = 8.0
    min_tokens: int = 8
    per_layer_cross: bool = False

    @classmethod
    def from_dict(cls, data: Any, where: str = "decoder") -> DecoderSettings:
        ints = {"eot": int, "special_from": int, "layers": int, "heads": int, "head_dim": int,
                "max_positions": int}  # fmt: skip
        lists = {"prompt": list, "suppress": list, "suppress_at_begin": list}
        optional = {"ctc_weight": float, "beam_size": int, "max_tokens_per_second": float, "min_tokens": int,
                    "per_layer_cross": bool}  # fmt: skip
        _section(data, where, {"cross": str, "step": str, "tokens": str, **ints, **lists}, optional)
        if not isinstance(data.get("per_layer_cross", False), bool):
            got = brief(data["per_layer_cross"])
            raise BundleError(f"{where}.per_layer_cross should be true or false, got {got}")
        for key in ints:
            limits.Range(1, 1 << 20, integer=True).check(data[key], f"{where}.{key}", BundleError)
        size = data["special_from"] + 4096  # specials follow; no id is that far past them
        values = {key: _id_list(data[key], f"{where}.{key}", size) for key in lists}
        if not values["prompt"]:
            raise BundleError(f"{where}.prompt must hold at least one id (the start of transcript)")
        checks = {
            "ctc_weight": limits.CTC_WEIGHT,
            "beam_size": limits.DECODER_BEAM_SIZE,
            "max_tokens_per_second": limits.MAX_TOKENS_PER_SECOND,
            "min_tokens": limits.MIN_TOKENS,
        }
        for key, allowed in checks.items():
            if key in data:
                allowed.check(data[key], f"{where}.{key}", BundleError)
        settings: Dict[str, Any] = {key: data[key] for key in optional if key in data}
        settings.update(values)
        settings.update({key: data[key] for key in ints})
        if len(values["prompt"]) >= data["max_positions"]:
            raise BundleError(f"{where}.prompt is longer than max_positions {data['max_positions']}")
        return cls(cross=data["cross"], step=data["step"], tokens=data["tokens"], **settings)

    @property
    def state_dim(self) -> int:
        """The width of the encoder states the decoder reads."""
        return self.heads * self.head_dim

    def files(self) -> List[str]:
        return [self.cross, self.step, self.tokens]

    def cross_inputs(self) -> List[str]:
        """The step graph's cross-attention input names (keys, then values)."""
        if not self.per_layer_cross:
            return ["cross_k", "cross_v"]
        return [f"cross_{kind}_{layer}" for kind in "kv" for layer in range(self.layers)]


@dataclass
class BundleMetadata:
    """Everything the device must know to turn samples into text with the bundled graph.

    Attributes:
        vocabulary: token strings; index i is the graph's output column i.
        blank_id: index of the CTC blank token.
        word_delimiter: token that separates words (wav2vec2's "|"), or None for a vocabulary that
            spells spaces as " " itself.
        sample_rate: the rate the graph expects, in Hz.
        frame_stride: input samples per output frame (320 for wav2vec2 at 16 kHz: 20 ms).
        receptive_field: samples that make the first frame (400 for wav2vec2); shorter input
            yields no frame.
        do_normalize: the model expects zero-mean, unit-variance input per utterance.
        normalization_in_graph: the graph already does that normalization itself.
        log_softmax_in_graph: the graph outputs log-probabilities rather than raw logits.
        text_normalization: how labels were normalized in training; apply it to references.
        models: variant name ("fp32", "int8") -> file name in the bundle.
        files: file name -> sha256 hex digest, for every file of the bundle but bundle.json.
        special_ids: tokens that never produce text (pad, unk, <s>...); the blank is always one.
        int8_recommended: false when quantization cost more accuracy than its guard allowed.
        name: a short human name for the model.
        source: where the model came from (base checkpoint, training run, tool versions).
        language_model: the optional beam-search LM(s) and their tuned settings
            (`LanguageModelSettings`).
        extra: free-form facts (e.g. the int8 report's headline figures).
        split: format 2: the same model as a front-end and an encoder graph (`SplitGraphs`), with the
            same variants as `models`; None in a version-1 bundle or one exported as a single graph.
        decoder: format 3: Whisper's text decoder for joint CTC/attention decoding
            (`DecoderSettings`); None decodes with CTC alone.
    """

    vocabulary: List[str]
    blank_id: int
    word_delimiter: Optional[str]
    sample_rate: int
    frame_stride: int
    receptive_field: int
    do_normalize: bool
    normalization_in_graph: bool
    log_softmax_in_graph: bool
    models: Dict[str, str]
    text_normalization: TextNormalization = field(default_factory=TextNormalization)
    files: Dict[str, str] = field(default_factory=dict)
    special_ids: List[int] = field(default_factory=list)
    int8_recommended: bool = True
    name: str = ""
    source: Dict[str, Any] = field(default_factory=dict)
    language_model: Optional[LanguageModelSettings] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    split: Optional[SplitGraphs] = None
    decoder: Optional[DecoderSettings] = None
    format_version: int = FORMAT_VERSION

    @property
    def frame_seconds(self) -> float:
        return self.frame_stride / self.sample_rate

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def to_json(self) -> str:
        data = asdict(self)
        data["text_normalization"] = self.text_normalization.to_dict()
        data["language_model"] = self.language_model.to_dict() if self.language_model else None
        if self.split is None:
            del data["split"]  # a version-1 bundle.json stays exactly what version 1 wrote
        if self.decoder is None:
            del data["decoder"]
        elif not self.decoder.per_layer_cross:
            del data["decoder"]["per_layer_cross"]  # a version-3 bundle.json stays what version 3 wrote
        ordered = {"format_version": data.pop("format_version"), **data}
        return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "bundle.json") -> BundleMetadata:
        if not isinstance(data, dict):
            raise BundleError(f"{where}: expected a JSON object at the top level")
        _check_nesting(data, where)
        version = data.get("format_version")
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise BundleError(
                f"{where}: unknown bundle format version {brief(version)}; this edge-asr reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. Upgrade edge-asr, or re-export the model "
                "with this version's `python -m quantize`."
            )
        required = {
            "vocabulary": list,
            "blank_id": int,
            "sample_rate": int,
            "frame_stride": int,
            "receptive_field": int,
            "do_normalize": bool,
            "normalization_in_graph": bool,
            "log_softmax_in_graph": bool,
            "models": dict,
        }
        for key, kind in required.items():
            if key not in data:
                raise BundleError(f"{where}: required field {key!r} is missing")
            value = data[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise BundleError(f"{where}: field {key!r} should be {kind.__name__}, got {brief(value)}")
        optional = {
            "files": dict,
            "special_ids": list,
            "int8_recommended": bool,
            "name": str,
            "source": dict,
            "extra": dict,
        }
        for key, kind in optional.items():
            if key in data and not isinstance(data[key], kind):
                raise BundleError(f"{where}: field {key!r} should be {kind.__name__}, got {brief(data[key])}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(
                f"{where}: unknown field(s) {brief(', '.join(unknown))}; was it written by a newer tool?"
            )
        values = dict(data)
        normalization = data.get("text_normalization", {})
        if not isinstance(normalization, dict):
            raise BundleError(f"{where}: text_normalization should be an object, got {brief(normalization)}")
        try:
            values["text_normalization"] = TextNormalization.from_dict(normalization)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where}: bad text_normalization: {exc}") from None
        if data.get("language_model") is not None:
            values["language_model"] = LanguageModelSettings.from_dict(
                data["language_model"], f"{where}: language_model"
            )
        if data.get("split") is not None:
            if version < SPLIT_FORMAT_VERSION:
                raise BundleError(
                    f"{where}: 'split' needs format_version {SPLIT_FORMAT_VERSION}, the file says {version}"
                )
            values["split"] = SplitGraphs.from_dict(data["split"], f"{where}: split")
        if data.get("decoder") is not None:
            if version < DECODER_FORMAT_VERSION:
                raise BundleError(
                    f"{where}: 'decoder' needs format_version {DECODER_FORMAT_VERSION}, "
                    f"the file says {version}"
                )
            values["decoder"] = DecoderSettings.from_dict(data["decoder"], f"{where}: decoder")
            if values["decoder"].per_layer_cross and version < PER_LAYER_CROSS_FORMAT_VERSION:
                raise BundleError(
                    f"{where}: 'decoder.per_layer_cross' needs format_version "
                    f"{PER_LAYER_CROSS_FORMAT_VERSION}, the file says {version}"
                )
        meta = cls(**values)
        meta.validate(where)
        return meta

    def validate(self, where: str = "bundle.json") -> None:
        vocab = self.vocabulary
        if not vocab or not all(isinstance(t, str) for t in vocab):
            raise BundleError(f"{where}: vocabulary must be a non-empty list of strings")
        if len(set(vocab)) != len(vocab):
            raise BundleError(f"{where}: vocabulary has duplicate tokens")
        if not 0 <= self.blank_id < len(vocab):
            raise BundleError(
                f"{where}: blank_id {self.blank_id} is outside the vocabulary (size {len(vocab)})"
            )
        if self.word_delimiter is not None and not isinstance(self.word_delimiter, str):
            raise BundleError(
                f"{where}: word_delimiter should be a string or null, got {brief(self.word_delimiter)}"
            )
        if self.word_delimiter is not None and self.word_delimiter not in vocab:
            raise BundleError(f"{where}: word_delimiter {self.word_delimiter!r} is not in the vocabulary")
        if not all(type(i) is int for i in self.special_ids):
            raise BundleError(
                f"{where}: special_ids must be a list of whole numbers, got {brief(self.special_ids)}"
            )
        bad_special = [i for i in self.special_ids if not 0 <= i < len(vocab)]
        if bad_special:
            raise BundleError(f"{where}: special_ids {brief(bad_special)} are outside the vocabulary")
        if self.sample_rate not in SUPPORTED_SAMPLE_RATES:
            raise BundleError(f"{where}: sample_rate {self.sample_rate} is outside 8000..48000 Hz")
        # A frame longer than a second, or a first frame needing more than 10 s of audio, is no speech
        # model: frame_stride 10**12 decoded every file to nothing, and 10**30 overflowed numpy.
        limits.Range(1, self.sample_rate, integer=True).check(
            self.frame_stride, f"{where}: frame_stride", BundleError
        )
        limits.Range(1, 10 * self.sample_rate, integer=True).check(
            self.receptive_field, f"{where}: receptive_field", BundleError
        )
        if not self.models or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.models.items()
        ):
            raise BundleError(
                f"{where}: 'models' must map variant names to file names, got {brief(self.models)}"
            )
        for name, digest in self.files.items():
            if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts:
                raise BundleError(f"{where}: file entry {brief(name)} points outside the bundle")
            if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= SHA256_HEX:
                raise BundleError(
                    f"{where}: the sha256 of {name!r} must be 64 lowercase hex digits, got {brief(digest)}"
                )
        for variant, filename in self.models.items():
            if filename not in self.files:
                raise BundleError(f"{where}: model {variant!r} ({filename}) has no sha256 in 'files'")
        split = self.split
        if split is not None:
            for key, graphs in (("front_end", split.front_end), ("encoder", split.encoder)):
                if set(graphs) != set(self.models):
                    raise BundleError(
                        f"{where}: split.{key} has variants {', '.join(sorted(graphs))} where 'models' has "
                        f"{', '.join(sorted(self.models))}; each variant needs both of its graphs"
                    )
                for variant, filename in graphs.items():
                    if filename not in self.files:
                        raise BundleError(
                            f"{where}: split.{key} {variant!r} ({filename}) has no sha256 in 'files'"
                        )
        lm = self.language_model
        if lm is not None:
            named = [("language_model", lm.file)] + (
                [("language_model.words", lm.words.file)] if lm.words else []
            )
            for section, name in named:
                if name not in self.files:
                    raise BundleError(f"{where}: {section} file {name!r} has no sha256 in 'files'")
        if self.decoder is not None:
            for name in self.decoder.files():
                if name not in self.files:
                    raise BundleError(f"{where}: decoder file {name!r} has no sha256 in 'files'")


@dataclass
class ModelBundle:
    """A bundle folder whose metadata has been read and checked."""

    path: Path
    metadata: BundleMetadata

    def select_model(self, quantized: bool = True) -> str:
        """The ONNX file name to run: int8 when asked for and present, else fp32, else the only one."""
        models = self.metadata.models
        if quantized and "int8" in models:
            return models["int8"]
        return models.get("fp32", next(iter(models.values())))

    def model_file(self, quantized: bool = True) -> Path:
        """The path of `select_model`'s file; warns when fp32 was asked of a bundle without it."""
        if not quantized and "fp32" not in self.metadata.models:
            log.warning("%s has no fp32 graph; running %s", self.path, self.select_model(quantized))
        return self.path / self.select_model(quantized)

    def split_names(self, quantized: bool = True) -> Optional[Tuple[str, str]]:
        """(front-end, encoder) file names of the variant `select_model` picks; None without split
        graphs."""
        split = self.metadata.split
        if split is None:
            return None
        chosen = self.select_model(quantized)
        variant = next(v for v, name in self.metadata.models.items() if name == chosen)
        return split.front_end[variant], split.encoder[variant]

    @property
    def language_model_file(self) -> Optional[Path]:
        lm = self.metadata.language_model
        return self.path / lm.file if lm else None

    @property
    def word_model_file(self) -> Optional[Path]:
        lm = self.metadata.language_model
        return self.path / lm.words.file if lm and lm.words else None

    def verify(self, filenames: Optional[List[str]] = None) -> None:
        """Check the sha256 of the named files (default: all of them)."""
        for name in filenames if filenames is not None else list(self.metadata.files):
            expected = self.metadata.files[name]
            try:
                actual = sha256_file(self.path / name)
            except OSError as exc:
                raise BundleError(
                    f"{self.path / name}: cannot read ({exc.strerror}); check its permissions"
                ) from None
            if actual != expected:
                raise BundleError(
                    f"{self.path / name}: checksum mismatch (expected sha256 {expected[:12]}..., "
                    f"got {actual[:12]}...); the file is corrupt or was replaced. Copy the bundle again."
                )


def sha256_file(path: PathLike, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def default_bundle_path() -> Path:
    return DEFAULT_BUNDLE_DIR


def load_bundle(path: Optional[PathLike] = None, verify: bool = True, quantized: bool = True) -> ModelBundle:
    """Read and validate a bundle folder.

    Every listed file must exist. With `verify`, the checksum of the single graph that `quantized`
    selects is checked; `ModelBundle.verify()` checks every file. Hashing an unused fp32 twin (or the
    split graphs of a model that runs as one) at every start would double the start-up cost on a Pi
    for nothing: `EdgeTranscriber` loads with verify=False and checks the graphs it runs.
    """
    if path is None:
        folder = DEFAULT_BUNDLE_DIR
        if not (folder / METADATA_FILE).is_file():
            raise BundleError(
                "no default model is bundled with this installation of edge-asr. Pass a model bundle "
                "with --model DIR (Python: EdgeTranscriber(model=DIR)); `python -m quantize convert` "
                "writes one from a fine-tuned wav2vec2 checkpoint."
            )
    else:
        folder = Path(path)
    if not folder.exists():
        raise BundleError(f"{folder}: model bundle folder does not exist")
    if not folder.is_dir():
        raise BundleError(f"{folder}: a model bundle is a folder holding {METADATA_FILE} and ONNX files")
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        raise BundleError(f"{folder}: not a model bundle ({METADATA_FILE} is missing)")
    _check_inside(folder, METADATA_FILE)
    try:
        with open(meta_path, "rb") as handle:
            raw = handle.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{meta_path}: cannot read ({exc.strerror}); check its permissions") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise BundleError(
            f"{meta_path}: larger than {MAX_METADATA_BYTES >> 20} MiB; a bundle's metadata is a few "
            "kilobytes, so this is not a bundle.json that `python -m quantize` wrote"
        )

    def unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
        # json keeps the last of two equal keys without a word: an edited bundle.json with a second
        # "blank_id" decoded garbage while `info --verify` said OK.
        seen: Dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise BundleError(f"{meta_path}: key {key!r} appears twice in one object; keep one")
            seen[key] = value
        return seen

    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise BundleError(f"{meta_path}: JSON nested too deeply to be a bundle's metadata") from None
    metadata = BundleMetadata.from_dict(data, where=str(meta_path))
    for name in metadata.files:
        if not (folder / name).is_file():
            raise BundleError(f"{folder / name}: missing from the bundle (listed in {METADATA_FILE})")
        _check_inside(folder, name)
    bundle = ModelBundle(path=folder, metadata=metadata)
    if verify:
        bundle.verify([bundle.select_model(quantized)])
    return bundle


def _check_nesting(data: Any, where: str) -> None:
    """Refuse structures nested deeper than MAX_NESTING (iteratively: no recursion to exhaust)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise BundleError(
                f"{where}: nested deeper than {MAX_NESTING} levels; this is not a bundle's metadata"
            )
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _check_inside(folder: Path, name: str) -> None:
    """Refuse a file of the bundle whose real path is outside the bundle folder.

    validate() refuses ".." and absolute names, but a symbolic link (the file itself, or a folder on
    its way) leads anywhere: `info --verify` would read and hash a file outside, and a linked model
    would be loaded. Links within the bundle are fine; the folder itself may be reached by a link.
    """
    real = (folder / name).resolve()
    root = folder.resolve()
    if not real.is_relative_to(root):
        raise BundleError(
            f"{folder / name}: a symbolic link to {real}, outside the bundle; a bundle must hold its "
            "files (copy the file into the bundle folder instead of linking it)"
        )


def write_bundle(folder: PathLike, metadata: BundleMetadata) -> ModelBundle:
    """Fill in the checksums of every file in `folder` and write bundle.json atomically.

    The desktop side writes the ONNX files (and any report) first, then calls this. It is the only
    writer of bundle.json, so the format is described once.
    """
    root = Path(folder)
    metadata.files = {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != METADATA_FILE and not p.name.startswith(".")
    }
    metadata.format_version = (
        PER_LAYER_CROSS_FORMAT_VERSION
        if metadata.decoder is not None and metadata.decoder.per_layer_cross
        else DECODER_FORMAT_VERSION
        if metadata.decoder is not None
        else SPLIT_FORMAT_VERSION
        if metadata.split is not None
        else 1
    )
    metadata.validate(str(root / METADATA_FILE))
    write_text_atomic(root / METADATA_FILE, metadata.to_json())
    return ModelBundle(path=root, metadata=metadata)
