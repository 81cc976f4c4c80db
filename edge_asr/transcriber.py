"""EdgeTranscriber: the device-side API. Audio -> samples -> windows -> ONNX -> CTC -> Transcript."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple, Union

import numpy as np

from . import limits
from .attention import AttentionDecoder, JointDecoder, JointStats, finish_decoding, joint_plan, push_core
from .audio import AudioSource, open_audio, prepare_array, source_name
from .beam import BeamOptions, frame_decoder
from .bundle import ModelBundle, load_bundle
from .ctc import FrameDecoder, Vocabulary
from .errors import BundleError, EdgeASRError, InputError
from .grammar import DEFAULT_MIN_CONFIDENCE, CommandMatch, CompiledGrammar, Grammar, GrammarDecoder
from .hotwords import Hotwords
from .lm import CharNgramLM, WordNgramLM
from .model import CtcModel, SplitCtcModel, resolve_arena
from .phrases import Check, no_check
from .results import Transcript
from .stream import Stream, StreamOptions
from .vad import VoiceActivityDetector
from .windows import FeatureCache, SplitStages, WindowedRunner, WindowPlan, cache_is_exact, check_window

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, float], None]
"""Called with (seconds of audio done, total seconds or 0 when unknown)."""
DECODER_CHOICES = ("auto", "joint", "ctc")


@dataclass
class TranscribeOptions:
    """Decoding options.

    Attributes:
        blank_penalty: subtracted from the blank token's log-probability before the argmax; raise it
            (e.g. 0.5-2.0) when words are dropped, lower it below 0 when noise turns into letters.
        chunk_seconds: core length of one model window for long audio. Longer windows cost more
            memory (roughly quadratic in the transformer): with 1 s of context each side, a 10 s core
            makes 12 s windows, so a long file peaks near a 12 s clip (measured with wav2vec2-base
            int8: 10 s clip 347 MB, 1 and 10 min files 436 and 419 MB with 15 s windows).
        context_seconds: audio added on each side of a window's core and then discarded, so that every
            kept frame was computed with context on both sides.
        block_seconds: how much of a file is decoded and resampled at a time.
        use_lm: decode with the bundle's language model (beam search) when it has one; False, or a
            bundle without one, decodes greedily. `blank_penalty` applies to greedy decoding only.
        beam: the beam search's settings; None uses those tuned for the bundle's LM. To change some
            of them, start from the tuned ones: `tuned_beam_options(model, beam_size=4)`.
        hotwords: words or names to write where the audio allows them (`edge_asr.hotwords`), over
            the beam search with the LMs or over greedy decoding.
        use_word_lm: with `use_lm`, also score finished words with the bundle's word LM when it has
            one; False decodes with the character LM alone.
        decoder: "joint" (the bundle's text decoder steered by the CTC head: `edge_asr.attention`),
            "ctc" (CTC alone: greedy, or the beam search with the LMs), or "auto": joint when the
            bundle has a decoder and no hotwords are given (hotwords are a CTC-side feature), else
            ctc. Stream partials and grammars are always CTC.
        lowercase: with joint decoding, write the normalized form (lower case, no punctuation, numbers
            spelled) instead of the decoder's casing and punctuation.
        ctc_weight, decoder_beam: joint decoding's CTC weight and beam; None: the bundle's (picked on
            synthetic validation voices). Beam 1 is greedy: faster, less accurate (docs/benchmarks.md).
    """

    blank_penalty: float = 0.0
    chunk_seconds: float = 10.0
    context_seconds: float = 1.0
    block_seconds: float = 5.0
    use_lm: bool = True
    beam: Optional[BeamOptions] = None
    use_word_lm: bool = True
    hotwords: Optional[Hotwords] = None
    decoder: str = "auto"
    lowercase: bool = False
    ctc_weight: Optional[float] = None
    decoder_beam: Optional[int] = None

    def validate(self) -> None:
        """InputError naming the first option outside its range (`edge_asr.limits`)."""
        limits.check_fields(
            self,
            {
                "blank_penalty": limits.BLANK_PENALTY,
                "chunk_seconds": limits.CHUNK_SECONDS,
                "context_seconds": limits.CONTEXT_SECONDS,
                "block_seconds": limits.BLOCK_SECONDS,
            },
        )
        if self.ctc_weight is not None:
            limits.CTC_WEIGHT.check(self.ctc_weight, "ctc_weight")
        if self.decoder_beam is not None:
            limits.DECODER_BEAM_SIZE.check(self.decoder_beam, "decoder_beam")
        if self.decoder not in DECODER_CHOICES:
            raise InputError(f"decoder must be one of {', '.join(DECODER_CHOICES)}, got {self.decoder!r}")
        if self.beam is not None:  # None: the bundle's tuned settings, checked when it was read
            try:
                self.beam.validate()
            except ValueError as exc:
                raise InputError(str(exc)) from None


def tuned_beam_options(
    model: Union[str, os.PathLike[str], None] = None, **changes: Any
) -> Optional[BeamOptions]:
    """The beam settings tuned for `model`'s LM (None: the default model) with `changes` applied;
    changes that are None are ignored. None when nothing changes or the bundle has no LM (then
    `TranscribeOptions.beam` None keeps what the bundle says)."""
    given = {name: value for name, value in changes.items() if value is not None}
    if not given:
        return None
    settings = load_bundle(model, verify=False).metadata.language_model
    try:
        changed = replace(BeamOptions.from_settings(settings) if settings else BeamOptions(), **given)
        changed.validate()  # also without an LM: a bad value is an error, not silently unused
    except TypeError:
        raise InputError(f"unknown beam option(s): {', '.join(sorted(given))}") from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return changed if settings is not None else None


@dataclass
class FileResult:
    """One item of `transcribe_many`: a transcript, or the error that stopped this file."""

    source: str
    transcript: Optional[Transcript] = None
    error: Optional[EdgeASRError] = None

    @property
    def ok(self) -> bool:
        return self.error is None


class EdgeTranscriber:
    """Speech to text with a model bundle, on the CPU, without torch.

    Args:
        model: a bundle folder, or None for the default model shipped inside the package.
        quantized: use the int8 graph when the bundle has one (smaller and faster on ARM).
        threads: onnxruntime threads; None picks the physical cores, at most 4.
        options: decoding options (see `TranscribeOptions`).
        verify: check the model file's sha256 against bundle.json when loading.
        front_end_cache: keep the front-end features of audio already seen, so that overlapping
            windows (stream hops above all) run the front-end on new samples only; needs a bundle with
            split graphs (format 2). None: only where that gives exactly the same frames
            (`windows.cache_is_exact`); True also where it does not (per-utterance normalization, a
            group-norm front-end: measured in docs/streaming.md); False: never.
        arena: onnxruntime's CPU memory arena: "on", "off" or "auto" (`model.resolve_arena`: by the
            size of the graph, from the measurements in docs/benchmarks.md).
    """

    def __init__(
        self,
        model: Union[str, os.PathLike[str], None] = None,
        quantized: bool = True,
        threads: Optional[int] = None,
        options: Optional[TranscribeOptions] = None,
        verify: bool = True,
        front_end_cache: Optional[bool] = None,
        arena: str = "auto",
    ):
        if threads is not None:
            limits.THREADS.check(threads, "threads")
        self.options = options or TranscribeOptions()
        self.options.validate()
        self.bundle: ModelBundle = load_bundle(model, verify=False, quantized=quantized)
        self.metadata = self.bundle.metadata
        self.model_path = self.bundle.model_file(quantized)
        meta = self.metadata
        self.plan = WindowPlan.from_seconds(
            self.options.chunk_seconds,
            self.options.context_seconds,
            self.options.context_seconds,
            meta.sample_rate,
            meta.frame_stride,
            meta.receptive_field,
        )
        context = self.options.context_seconds
        check_window(
            self.plan, meta, "chunk_seconds (--chunk-seconds)", f"{context:g} s of context each side"
        )
        split = self.bundle.split_names(quantized)
        if front_end_cache and split is None:
            raise InputError(
                f"{self.bundle.path}: the front-end cache needs a bundle with split graphs (format 2, "
                "written by `python -m quantize convert` for wav2vec2-family models); this one has a "
                "single graph"
            )
        exact = cache_is_exact(meta)
        self.front_end_cache = exact if front_end_cache is None else front_end_cache
        if self.front_end_cache and not exact:
            log.info("front-end cache on where it is not exact (see docs/streaming.md)")
        self.model: Union[CtcModel, SplitCtcModel]
        runs_split = self.front_end_cache and split is not None
        graphs = [self.bundle.path / name for name in split] if runs_split and split else [self.model_path]
        if verify:  # the graphs that run, and only those (see load_bundle)
            self.bundle.verify([graph.name for graph in graphs])
        if runs_split:
            front, encoder = graphs
            self.model = SplitCtcModel(front, encoder, meta, threads, resolve_arena(arena, graphs))
            self.model_path = encoder
        else:
            self.model = CtcModel(self.model_path, meta, threads, resolve_arena(arena, graphs))
        self.vocabulary = Vocabulary(meta.vocabulary, meta.blank_id, meta.word_delimiter, meta.special_ids)
        self.lm: Optional[CharNgramLM] = None
        self.word_lm: Optional[WordNgramLM] = None
        self.beam_options: Optional[BeamOptions] = None
        hotwords = self.options.hotwords
        self.hotwords = hotwords.compile(self.vocabulary, meta.text_normalization) if hotwords else None
        self.attention: Optional[AttentionDecoder] = self._load_attention(verify, threads, arena)
        if self.attention is not None:  # its windows: see attention.JOINT_WINDOW
            self.plan = joint_plan(meta.sample_rate, meta.frame_stride, meta.receptive_field)
        else:  # joint decoding does not use the n-gram LMs: not loaded (3 MB and their load time)
            self._load_lm(verify)
        self.joint_stats = JointStats()  # what joint decoding did over this transcriber's files

    def _load_attention(self, verify: bool, threads: Optional[int], arena: str) -> Optional[AttentionDecoder]:
        """The bundle's text decoder when the options ask for joint decoding (see `TranscribeOptions`)."""
        settings, choice = self.metadata.decoder, self.options.decoder
        if choice == "ctc" or (choice == "auto" and (settings is None or self.hotwords is not None)):
            return None
        if settings is None:
            raise InputError(
                f"{self.bundle.path}: this bundle has no text decoder for --decoder joint (bundle.json has "
                "no 'decoder' section); use --decoder ctc, or a bundle converted with `--decoder`"
            )
        if self.hotwords is not None:
            raise InputError("hotwords work with CTC decoding only: use --decoder ctc (or auto) with them")
        if not isinstance(self.model, CtcModel) or not self.model.has_states:
            raise BundleError(
                f"{self.model_path}: the graph has no encoder_states output for the text decoder; "
                "re-export the bundle with `python -m quantize convert --decoder`, or use --decoder ctc"
            )
        graphs = [self.bundle.path / name for name in (settings.cross, settings.step)]
        if verify:
            self.bundle.verify(settings.files())
        started = time.perf_counter()
        decoder = AttentionDecoder(
            self.bundle.path, settings, self.model.threads, resolve_arena(arena, graphs)
        )
        log.debug("text decoder loaded in %.2f s", time.perf_counter() - started)
        return decoder

    @property
    def joint(self) -> bool:
        """Whether final text comes from joint CTC/attention decoding."""
        return self.attention is not None

    def _load_lm(self, verify: bool) -> None:
        """Load the bundle's LM(s) and their beam settings as the options ask (else decode greedily)."""
        settings = self.metadata.language_model
        lm_file = self.bundle.language_model_file
        if not self.options.use_lm or settings is None or lm_file is None:
            return
        beam = self.options.beam or BeamOptions.from_settings(settings)
        words = settings.words if self.options.use_word_lm else None
        if verify:
            self.bundle.verify([settings.file, words.file] if words is not None else [settings.file])
        started = time.perf_counter()
        self.lm = CharNgramLM.load(lm_file, self.metadata.vocabulary)
        words_file = self.bundle.word_model_file
        if words is not None and words_file is not None:
            self.word_lm = WordNgramLM.load(words_file)
        log.debug("language model(s) loaded in %.2f s", time.perf_counter() - started)
        self.beam_options = beam

    @property
    def sample_rate(self) -> int:
        return self.metadata.sample_rate

    def new_decoder(self, blank_penalty: Optional[float] = None, joint: bool = True) -> FrameDecoder:
        """A decoder for one file or utterance: joint CTC/attention decoding when this transcriber
        loaded a text decoder and `joint` (it reads `frame_rows`, not log-probs), else beam search with
        the bundle's LM(s) when loaded, else greedy with `blank_penalty` (None: the options' value)."""
        if self.attention is not None and joint:
            return JointDecoder(
                self.attention,
                self.vocabulary,
                self.metadata.text_normalization,
                self.metadata.frame_seconds,
                self.options.ctc_weight,
                self.options.decoder_beam,
                display=not self.options.lowercase,
            )
        penalty = self.options.blank_penalty if blank_penalty is None else blank_penalty
        return frame_decoder(
            self.vocabulary,
            self.lm,
            self.beam_options,
            self.word_lm,
            penalty,
            self.hotwords,
            frame_seconds=self.metadata.frame_seconds,
        )

    def transcribe(
        self,
        audio: Union[AudioSource, np.ndarray],
        sample_rate: Optional[int] = None,
        progress: Optional[ProgressFn] = None,
    ) -> Transcript:
        """Transcribe a file path ("-" for stdin), an open binary file, or a numpy array.

        Arrays need `sample_rate`; they may be integer or float PCM, mono or (frames, channels).
        Files are read in blocks, so memory does not grow with their length.
        """
        started = time.perf_counter()
        name, total, blocks = self._open(audio, sample_rate)
        runner = self.new_runner(rows=self.joint)
        decoder = self.new_decoder()
        for first, core in self._run(runner, blocks, total, progress):
            push_core(decoder, runner, first, core)
        text, chars, words = finish_decoding(decoder, self.vocabulary, self.metadata.frame_seconds)
        if isinstance(decoder, JointDecoder):
            self.joint_stats.add(decoder.stats)
        return Transcript(
            text=text,
            words=words,
            chars=chars,
            duration=runner.samples_received / self.sample_rate,
            processing_time=time.perf_counter() - started,
            source=name,
        )

    def recognize(
        self,
        audio: Union[AudioSource, np.ndarray],
        grammar: Union[Grammar, CompiledGrammar],
        sample_rate: Optional[int] = None,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        alternatives: int = 5,
    ) -> CommandMatch:
        """Which of `grammar`'s phrases the audio says, or no match (`edge_asr.grammar`).

        Compile a grammar used many times once (`compile_grammar`) to save its trie's build time.
        """
        decoder = GrammarDecoder(
            self.compile_grammar(grammar), self.metadata.frame_seconds, min_confidence, alternatives
        )
        for chunk in self.log_probs(audio, sample_rate):
            decoder.push(chunk)
        decoder.finish()
        assert decoder.match is not None
        return decoder.match

    def compile_grammar(
        self, grammar: Union[Grammar, CompiledGrammar], check: Check = no_check
    ) -> CompiledGrammar:
        """`grammar` as a trie over this model's vocabulary (a compiled one is returned as it is);
        `check` is called as the trie is built and may raise to abandon it (`phrases.Check`)."""
        if isinstance(grammar, CompiledGrammar):
            return grammar
        return grammar.compile(self.vocabulary, self.metadata.text_normalization, check)

    def log_probs(
        self, audio: Union[AudioSource, np.ndarray], sample_rate: Optional[int] = None
    ) -> Iterator[np.ndarray]:
        """The [frames, vocab] log-probabilities `transcribe` decodes, chunk by chunk (one window's
        core each), computed the same windowed way: for tuning decoders and measuring models."""
        _, total, blocks = self._open(audio, sample_rate)
        for _, core in self._run(self.new_runner(), blocks, total, None):
            yield core

    def split_stages(self) -> Optional[SplitStages]:
        """The model's two halves for a `FeatureCache`; None when this transcriber caches no features."""
        model = self.model
        if not isinstance(model, SplitCtcModel):
            return None
        return SplitStages(model.features, model.encode, model.normalizes)

    def new_runner(self, rows: bool = False) -> WindowedRunner:
        """A runner over the file window plan, with a feature cache when this transcriber keeps one.
        `rows`: it yields `frame_rows` (log-probs and encoder states) for joint decoding."""
        if rows:
            assert isinstance(self.model, CtcModel)
            return WindowedRunner(self.model.frame_rows, self.plan)
        stages = self.split_stages()
        cache = FeatureCache(stages, self.plan) if stages is not None else None
        return WindowedRunner(self.model.log_probs, self.plan, cache)

    def _open(
        self, audio: Union[AudioSource, np.ndarray], sample_rate: Optional[int]
    ) -> Tuple[str, float, Iterable[np.ndarray]]:
        """(name, duration in seconds or 0 when unknown, blocks of model-rate samples)."""
        if not isinstance(audio, np.ndarray):
            info, blocks = open_audio(audio, self.sample_rate, self.options.block_seconds)
            return info.name, info.duration, blocks
        if sample_rate is None:
            raise InputError("transcribe(array) needs sample_rate= (the array's rate in Hz)")
        samples = prepare_array(audio, sample_rate, self.sample_rate)
        step = max(1, int(self.options.block_seconds * self.sample_rate))
        return (
            "<array>",
            samples.size / self.sample_rate,
            (samples[i : i + step] for i in range(0, samples.size, step)),
        )

    def _run(
        self,
        runner: WindowedRunner,
        blocks: Iterable[np.ndarray],
        total: float,
        progress: Optional[ProgressFn],
    ) -> Iterator[Tuple[int, np.ndarray]]:
        """(first frame, core) of each window, as the runner yields them."""
        for block in blocks:
            yield from runner.push(block)
            if progress is not None:
                progress(runner.samples_received / self.sample_rate, total)
        yield from runner.finish()

    def transcribe_many(
        self, sources: Iterable[AudioSource], progress: Optional[ProgressFn] = None
    ) -> Iterator[FileResult]:
        """Transcribe inputs one after another, yielding each result as it finishes.

        A file that fails yields a FileResult with `error` set, and the rest go on.
        """
        if isinstance(sources, (str, os.PathLike)):  # iterating it would try each character
            raise InputError("transcribe_many() takes a list of sources; for one file use transcribe()")
        for source in sources:
            name = source_name(source)
            try:
                yield FileResult(name, transcript=self.transcribe(source, progress=progress))
            except EdgeASRError as exc:
                log.debug("failed: %s", exc)
                yield FileResult(name, error=exc)

    def stream(
        self,
        options: Optional[StreamOptions] = None,
        vad: Optional[VoiceActivityDetector] = None,
        grammar: Union[Grammar, CompiledGrammar, None] = None,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ) -> Stream:
        """A streaming recognizer on this model: `accept(samples, sample_rate)` -> partial/final events.

        Each stream has its own state (use one per audio source); they share this model's session.
        `options.blank_penalty` defaults to this transcriber's. Final events use the bundle's LM
        when this transcriber does, and joint decoding when it does (with `options.final_pass`;
        without it finals are the CTC head's greedy text). With a `grammar`, each final event's
        `command` is the utterance's `CommandMatch` and its text the recognized phrase ("" when none
        was). See `edge_asr.stream`.
        """
        if options is None:
            options = StreamOptions(blank_penalty=self.options.blank_penalty)
        # Joint finals read the encoder states of the final pass over the utterance; without that pass
        # (final_pass=False) the hop frames carry log-probs only, so finals are the CTC head's.
        joint_finals = self.joint and grammar is None and options.final_pass
        new_decoder: Callable[[], FrameDecoder] = partial(
            self.new_decoder, options.blank_penalty, joint_finals
        )
        final_frames = None
        if joint_finals:
            assert isinstance(self.model, CtcModel)
            final_frames = self.model.frame_rows  # partials stay CTC; finals read the encoder states too
        if grammar is not None:
            compiled = self.compile_grammar(grammar)
            limits.MIN_CONFIDENCE.check(min_confidence, "min_confidence")  # now, not at the first utterance
            new_decoder = partial(GrammarDecoder, compiled, self.metadata.frame_seconds, min_confidence)
        return Stream(
            self.model.log_probs,
            self.metadata,
            self.vocabulary,
            self.plan,
            options,
            vad,
            new_decoder,
            self.split_stages(),
            final_frames,
        )

    def __repr__(self) -> str:
        return f"EdgeTranscriber(model={str(self.bundle.path)!r}, file={Path(self.model_path).name!r})"
