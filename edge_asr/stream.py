"""Streaming recognition: feed audio as it arrives, get partial and final events.

    stream = EdgeTranscriber(model).stream()
    for block in blocks:                        # any size, any rate, int or float PCM
        for event in stream.accept(block, 48000):
            print(event.kind, event.text)
    for event in stream.flush():                # end of audio: finish the utterance in progress
        print(event.kind, event.text)

How it works, and why the cost per hop is bounded:

* A voice activity detector (`vad.EnergyVad` by default) classifies each model frame (20 ms). Nothing
  runs the model while nobody speaks; a short pre-roll before the detected onset joins the utterance.
* Within an utterance, a `windows.WindowedRunner` with a core of one hop (0.5 s) and fixed left and
  right context runs the model each hop on left + hop + right samples only, and keeps the centre
  (core) frames. Core frames had full context on both sides, so their CTC labels are final: they
  are committed and never computed again. The right-context frames of the same run are decoded as
  a tentative tail for the partial hypothesis, at no extra model cost. With a model split into a
  front-end and an encoder (bundle format 2), a `windows.FeatureCache` runs the front-end on each
  hop's new samples only (and the final pass the encoder alone, where that is exact).
* Endpointing, after sherpa-onnx's three rules: an utterance ends after `endpoint_silence` of trailing
  silence once something was decoded (rule 2), after `endpoint_silence_no_text` when nothing was
  (rule 1: a cough or a door, no final line), or when it reaches `max_utterance_seconds` (rule 3).
* The final pass (`StreamOptions.final_pass`, on by default): when an utterance ends, the model runs
  once more over the utterance's whole audio (pre-roll + speech, the samples its runner was given)
  with the file window plan (`Stream.final_plan`: 10 s cores with 1 s of context each side, as
  `TranscribeOptions` has them), and a fresh decoder from `new_decoder` (the one a file gets: greedy,
  a beam search with the bundle's language model, or a `grammar.GrammarDecoder`) decodes those
  frames with `ctc.decode` into the final event with word times. So a final is exactly what
  `transcribe()` gives for the utterance's audio: a Whisper encoder, which attends over its whole
  window, reads the 2.5 s hop windows worse than long ones, and the final pass gives the final line
  the file's accuracy for one more model run over the utterance, at most `max_utterance_seconds`
  long (`StreamStats.final_pass_seconds`).
* With `final_pass` False there is no extra run: the remaining frames run once
  (`WindowedRunner.finish`) and the committed core frames, which also fed the utterance's decoder as
  they arrived, are decoded into the final. Either way partials stay greedy, so they cost nothing
  extra, and a final may correct the spelling its partials showed.

Memory holds one window of samples plus one token id per frame of the current utterance, and with the
final pass the utterance's samples (bounded by the maximum utterance length: 0.6 MB per 10 s at
16 kHz), so a session of any length runs in flat memory.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from . import limits
from .attention import finish_decoding, push_core
from .audio import SampleGuard, _Resampler, clean_mono, sample_rate_hz
from .bundle import BundleMetadata
from .ctc import (
    FrameDecoder,
    GreedyDecoder,
    SilenceBreaks,
    SilenceEndsWords,
    Vocabulary,
    best_path,
    token_runs,
)
from .errors import InputError
from .grammar import CommandMatch, GrammarDecoder
from .results import Word
from .vad import EnergyVad, EnergyVadOptions, VoiceActivityDetector
from .windows import FeatureCache, LogProbFn, SplitStages, WindowedRunner, WindowPlan, cache_is_exact

PARTIAL, FINAL = "partial", "final"
VAD_FRAME_SECONDS = 0.02
_EMPTY = np.zeros(0, dtype=np.float32)


@dataclass
class StreamOptions:
    """Latency, cost and endpointing of a stream.

    Attributes:
        hop_seconds: new audio per model run; also how often the partial hypothesis can change.
        left_context_seconds: audio before each hop that the model sees again (accuracy vs cost: each
            run costs left + hop + right seconds of model time).
        right_context_seconds: audio after each hop the model waits for before committing the hop's
            frames (delays committed text, not the tentative tail or the final line).
        endpoint_silence: trailing silence that ends an utterance once text was decoded (rule 2).
        endpoint_silence_no_text: trailing silence that ends an utterance in which nothing was decoded
            (rule 1); it gives no final event.
        max_utterance_seconds: an utterance is cut at this length even while speech goes on (rule 3),
            which also bounds memory.
        preroll_seconds: audio before the detected onset that joins the utterance (onsets are quiet).
        min_speech_seconds: speech needed to start an utterance (ignores clicks).
        blank_penalty: see `TranscribeOptions.blank_penalty`.
        final_pass: decode each final from one more model run over the utterance's whole audio with
            the file window plan, so that it equals `transcribe()` of that audio (more accurate with
            the default Whisper model); costs one model run over the utterance after its end. False:
            finals from the committed hop frames, no extra run (the lowest final latency).
        vad: settings of the default energy detector (unused when `Stream` is given its own `vad`).
    """

    hop_seconds: float = 0.5
    left_context_seconds: float = 1.5
    right_context_seconds: float = 0.5
    endpoint_silence: float = 0.5
    endpoint_silence_no_text: float = 1.0
    max_utterance_seconds: float = 20.0
    preroll_seconds: float = 0.3
    min_speech_seconds: float = 0.06
    blank_penalty: float = 0.0
    final_pass: bool = True
    vad: EnergyVadOptions = field(default_factory=EnergyVadOptions)

    def validate(self) -> None:
        """InputError naming the first option outside its range (`edge_asr.limits`)."""
        ranges = {
            "hop_seconds": limits.HOP_SECONDS,
            "left_context_seconds": limits.STREAM_CONTEXT_SECONDS,
            "right_context_seconds": limits.STREAM_CONTEXT_SECONDS,
            "endpoint_silence": limits.ENDPOINT_SECONDS,
            "endpoint_silence_no_text": limits.ENDPOINT_SECONDS,
            "max_utterance_seconds": limits.MAX_UTTERANCE_SECONDS,
            "preroll_seconds": limits.PREROLL_SECONDS,
            "min_speech_seconds": limits.MIN_SPEECH_SECONDS,
            "blank_penalty": limits.BLANK_PENALTY,
        }
        limits.check_fields(self, ranges, "stream option ")
        self.vad.validate()
        if self.max_utterance_seconds < self.hop_seconds:
            raise InputError("stream option max_utterance_seconds must be at least hop_seconds")


@dataclass(frozen=True)
class StreamEvent:
    """A partial hypothesis (may still change) or the final text of an utterance.

    Attributes:
        text: the utterance's text so far (partial) or its final text.
        start: seconds from the start of the stream to the utterance's start (including pre-roll).
        end: for a partial, how far the audio has been decoded; for a final, the end of speech.
        is_final: True for the last event of an utterance.
        utterance: 0, 1, 2... numbering the utterances of the stream.
        words: the final's words with times in stream seconds (empty for partials).
        reason: why a final ended: "silence", "max-length" or "flush".
        command: with a grammar (`EdgeTranscriber.stream(grammar=...)`), the final's command match.
    """

    text: str
    start: float
    end: float
    is_final: bool
    utterance: int
    words: Tuple[Word, ...] = ()
    reason: str = ""
    command: Optional[CommandMatch] = None

    @property
    def kind(self) -> str:
        return FINAL if self.is_final else PARTIAL

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {
            "type": self.kind,
            "utterance": self.utterance,
            "text": self.text,
            "start": self.start,
            "end": self.end,
        }
        if self.is_final:
            data["words"] = [asdict(w) for w in self.words]
            data["reason"] = self.reason
        if self.command is not None:
            data["command"] = self.command.to_dict()
        return data


@dataclass
class StreamStats:
    """Counters of a stream's work, for benchmarks and summaries.

    The model counters cover every run, hops and final passes; `final_passes` counts the final passes
    (`StreamOptions.final_pass`) and `final_pass_seconds` is their share of `model_seconds`. With a
    front-end cache (`Stream(split=...)`), `model_samples` and `max_window_samples` count the samples
    the front-end ran on (a hop's new ones), and `model_calls` the encoder's runs.
    """

    audio_seconds: float = 0.0
    model_calls: int = 0
    model_samples: int = 0
    max_window_samples: int = 0
    model_seconds: float = 0.0
    utterances: int = 0
    partials: int = 0
    final_passes: int = 0
    final_pass_seconds: float = 0.0


class _TextBuilder:
    """The partial text of an utterance: frame labels collapsed (`ctc.token_runs`) as they arrive,
    with a long silence ending a word as in the final (`ctc.SilenceBreaks`)."""

    def __init__(self, vocab: Vocabulary, frame_seconds: float):
        self._vocab = vocab
        self._silent = vocab.silent_ids()
        self._breaks = SilenceBreaks.for_frames(vocab, frame_seconds)
        self._last_id = -1
        self._tokens: List[int] = []

    def _collapse(self, ids: np.ndarray) -> List[int]:
        return [int(t) for t in token_runs(ids, self._silent, self._last_id)[0]]

    def add(self, ids: np.ndarray) -> None:
        """Commit frame labels."""
        ids = self._breaks.mark_ids(ids)
        self._tokens.extend(self._collapse(ids))
        if ids.size:
            self._last_id = int(ids[-1])

    def preview(self, ids: np.ndarray) -> str:
        """The committed text followed by tentative frame labels, without committing them."""
        return self._vocab.spell(self._tokens + self._collapse(ids))


@dataclass
class _Utterance:
    index: int  # -1 until the utterance's first event
    start_frame: int  # global frame index of the first sample given to the runner
    runner: WindowedRunner
    text: _TextBuilder
    decoder: Optional[FrameDecoder]  # the final's decoder of committed core frames (no final pass)
    pending: List[np.ndarray] = field(default_factory=list)  # frames not yet pushed to the runner
    audio: List[np.ndarray] = field(default_factory=list)  # samples given to the runner (final pass)
    frames: int = 0
    trailing: int = 0  # consecutive non-speech frames at the end
    last_speech_frame: int = 0
    shown: str = ""  # the last partial text: committed text and the tentative tail

    @property
    def has_text(self) -> bool:
        return bool(self.shown)


class Stream:
    """Streaming recognizer over a CTC model; make one with `EdgeTranscriber.stream()`.

    Not thread-safe: feed it from one thread (the microphone code queues blocks for that reason).

    Args:
        log_probs: the model: float32 samples at the model rate -> [frames, vocab] log-probabilities.
        metadata: the bundle's metadata (rate, frame geometry, blank).
        vocabulary: the decoder's vocabulary.
        final_plan: the final pass's window plan: the transcriber's own, so that finals equal its
            `transcribe()` of the utterance's audio.
        options: latency, cost and endpointing settings.
        vad: a voice activity detector fed frames of `frame_length` samples (whole model frames,
            about 20 ms: `frame_seconds`).
        new_decoder: makes the decoder of each utterance's final text (None: greedy with
            `options.blank_penalty`); `EdgeTranscriber.stream` gives its own, the one files get.
        split: the model's two halves, to cache front-end features (`windows.FeatureCache`): each hop
            then runs the front-end on its new samples only, and the final pass the encoder alone
            (the utterance's features are kept); None runs `log_probs` on every window.
        final_frames: what the final pass runs instead of `log_probs` (None: `log_probs`): the
            model's `frame_rows` when `new_decoder` makes joint decoders, which read the encoder
            states too. Partials always read `log_probs`.
    """

    def __init__(
        self,
        log_probs: LogProbFn,
        metadata: BundleMetadata,
        vocabulary: Vocabulary,
        final_plan: WindowPlan,
        options: Optional[StreamOptions] = None,
        vad: Optional[VoiceActivityDetector] = None,
        new_decoder: Optional[Callable[[], FrameDecoder]] = None,
        split: Optional[SplitStages] = None,
        final_frames: Optional[LogProbFn] = None,
    ):
        self.options = options or StreamOptions()
        self.options.validate()
        blank_id, penalty = metadata.blank_id, self.options.blank_penalty
        self._new_decoder = new_decoder or (
            lambda: SilenceEndsWords(GreedyDecoder(blank_id, penalty), vocabulary, metadata.frame_seconds)
        )
        self.metadata = metadata
        self.vocabulary = vocabulary
        self.sample_rate = metadata.sample_rate
        # VAD frames: whole model frames (so utterances start on a model frame) of about 20 ms; a model
        # with 5 ms frames would give the energy detector frames shorter than a pitch period.
        per_frame = max(1, round(VAD_FRAME_SECONDS / metadata.frame_seconds))
        self.frame_length = metadata.frame_stride * per_frame
        self.frame_seconds = self.frame_length / metadata.sample_rate
        self.vad: VoiceActivityDetector = (
            vad if vad is not None else EnergyVad(self.frame_seconds, self.options.vad)
        )
        opts = self.options
        self.plan = WindowPlan.from_seconds(
            opts.hop_seconds,
            opts.left_context_seconds,
            opts.right_context_seconds,
            metadata.sample_rate,
            metadata.frame_stride,
            metadata.receptive_field,
        )
        self.final_plan = final_plan
        self.stats = StreamStats()
        self._log_probs = log_probs
        self._final_frames = final_frames
        # The final pass runs the encoder alone over the features the hops computed (same first
        # sample, same frame numbering) only where the cache is exact: then the final is still what
        # `transcribe()` gives for the utterance. An opt-in inexact cache (per-utterance normalization:
        # hop windows' statistics are not the utterance's) leaves the final pass uncached, so that
        # finals keep that property and only partials see the cache (docs/streaming.md).
        self._final_pass_reuses_features = (
            split is not None and self.options.final_pass and cache_is_exact(metadata)
        )
        self._split = (
            None
            if split is None
            else SplitStages(
                self._timed(split.features, True), self._timed(split.encode, False), split.normalize
            )
        )

        def frames(seconds: float) -> int:
            return max(1, round(seconds / self.frame_seconds))

        self._hop_frames = frames(opts.hop_seconds)
        self._min_speech_frames = frames(opts.min_speech_seconds)
        self._max_frames = frames(opts.max_utterance_seconds)
        self._rule2_frames = frames(opts.endpoint_silence)
        self._rule1_frames = frames(opts.endpoint_silence_no_text)
        preroll = round(opts.preroll_seconds / self.frame_seconds)
        self._preroll: Deque[np.ndarray] = deque(maxlen=preroll + self._min_speech_frames)
        self._onset = 0
        self._pending = _EMPTY  # model-rate samples short of a whole frame
        self._frames_seen = 0
        self._input_rate: Optional[int] = None
        self._resampler: Optional[_Resampler] = None
        # One guard for the stream's life: it warns once, however long the session runs.
        self._guard = SampleGuard("stream input")
        self._utterance: Optional[_Utterance] = None
        self._utterances_numbered = 0

    # -- public API -------------------------------------------------------------------------------

    @property
    def in_utterance(self) -> bool:
        """True while speech is being decoded (an utterance has started and not ended)."""
        return self._utterance is not None

    def accept(self, samples: np.ndarray, sample_rate: int) -> List[StreamEvent]:
        """Add audio (1-D mono, or (frames, channels); float or integer PCM) at `sample_rate`.

        Returns the events this audio completed, oldest first: partials whose text changed, and a final
        for each utterance that ended. A list rather than a generator, so that audio given to a stream
        is always processed even when the caller ignores the events.
        """
        return self._consume(self._to_model_rate(samples, sample_rate))

    def flush(self) -> List[StreamEvent]:
        """End of audio: decode what is buffered and finish the utterance in progress.

        The stream can take more audio afterwards (its times continue; the input rate may change).
        """
        events: List[StreamEvent] = []
        if self._resampler is not None:
            events.extend(self._consume(self._resampler(_EMPTY, last=True)))
        utt = self._utterance
        if utt is not None:
            if self._pending.size:
                utt.pending.append(self._pending)
            self._end(utt, "flush", events)
        if self._pending.size:
            self._frames_seen += 1  # the partial frame still takes its place on the timeline
        self._pending = _EMPTY
        self._onset = 0
        self._preroll.clear()
        self._input_rate, self._resampler = None, None
        return events

    # -- input -------------------------------------------------------------------------------------

    def _to_model_rate(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        array = np.asarray(samples)
        if array.size == 0:
            return _EMPTY
        rate = sample_rate_hz(sample_rate, "stream input")
        mono = clean_mono(array, self._guard)
        self._guard.report()
        if self._input_rate is None:
            self._input_rate = rate
            self._resampler = _Resampler(self._input_rate, self.sample_rate)
        elif rate != self._input_rate:
            raise InputError(
                f"stream input changed sample rate from {self._input_rate} to {rate} Hz; call "
                "flush() before feeding audio at another rate"
            )
        assert self._resampler is not None
        return self._resampler(np.ascontiguousarray(mono, dtype=np.float32))

    def _consume(self, samples: np.ndarray) -> List[StreamEvent]:
        events: List[StreamEvent] = []
        self.stats.audio_seconds += samples.size / self.sample_rate
        buffer = np.concatenate((self._pending, samples)) if self._pending.size else samples
        count = buffer.size // self.frame_length
        self._pending = buffer[count * self.frame_length :].copy()
        if count == 0:
            return events
        frames = buffer[: count * self.frame_length].reshape(count, self.frame_length)
        speech = self.vad(frames)
        hop = self._hop_frames
        for i in range(count):
            index = self._frames_seen
            self._frames_seen += 1
            utt = self._utterance
            if utt is None:
                self._preroll.append(frames[i])
                self._onset = self._onset + 1 if speech[i] else 0
                if self._onset >= self._min_speech_frames:
                    self._start(index - len(self._preroll) + 1)
                continue
            utt.pending.append(frames[i])
            utt.frames += 1
            if speech[i]:
                utt.trailing, utt.last_speech_frame = 0, index
            else:
                utt.trailing += 1
            if len(utt.pending) >= hop:
                self._push(utt, events)
            reason = self._endpoint(utt, events)
            if reason:
                self._end(utt, reason, events)
        if self._utterance is not None and self._utterance.pending:
            self._push(self._utterance, events)
        return events

    # -- utterances --------------------------------------------------------------------------------

    def _start(self, start_frame: int) -> None:
        cache = (
            FeatureCache(self._split, self.plan, keep_all=self._final_pass_reuses_features)
            if self._split is not None
            else None
        )
        utt = _Utterance(
            index=-1,
            start_frame=start_frame,
            runner=WindowedRunner(self._run_model, self.plan, cache),
            text=_TextBuilder(self.vocabulary, self.metadata.frame_seconds),
            pending=list(self._preroll),
            frames=len(self._preroll),
            last_speech_frame=start_frame + len(self._preroll) - 1,
            decoder=None if self.options.final_pass else self._new_decoder(),
        )
        self._preroll.clear()
        self._onset = 0
        self._utterance = utt

    def _run_model(self, window: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        output = self._log_probs(window)
        stats = self.stats
        stats.model_seconds += time.perf_counter() - started
        stats.model_calls += 1
        stats.model_samples += window.size
        stats.max_window_samples = max(stats.max_window_samples, window.size)
        return output

    def _timed(
        self, stage: Callable[[np.ndarray], np.ndarray], front_end: bool
    ) -> Callable[[np.ndarray], np.ndarray]:
        """`stage` counted in `stats` as `_run_model` counts a whole run: time for both halves;
        samples for the front-end (new samples only), a model call per encoder run."""

        def run(values: np.ndarray) -> np.ndarray:
            started = time.perf_counter()
            output = stage(values)
            stats = self.stats
            stats.model_seconds += time.perf_counter() - started
            if front_end:
                stats.model_samples += values.size
                stats.max_window_samples = max(stats.max_window_samples, values.size)
            else:
                stats.model_calls += 1
            return output

        return run

    def _commit(self, utt: _Utterance, cores: List[Tuple[int, np.ndarray]]) -> None:
        for _, core in cores:
            utt.text.add(best_path(core, self.metadata.blank_id, self.options.blank_penalty)[0])
            if utt.decoder is not None:
                utt.decoder.push(core)

    def _take_pending(self, utt: _Utterance) -> np.ndarray:
        """The utterance's frames not yet given to its runner, as one array (kept for a final pass)."""
        samples = np.concatenate(utt.pending) if len(utt.pending) > 1 else utt.pending[0]
        utt.pending.clear()
        if self.options.final_pass:
            utt.audio.append(samples)
        return samples

    def _push(self, utt: _Utterance, events: List[StreamEvent]) -> None:
        samples = self._take_pending(utt)
        cores = list(utt.runner.push(samples))
        if not cores:
            return
        self._commit(utt, cores)
        # The last run's frames after its core (its right context) are the tentative tail.
        first, core = cores[-1]
        window_first = max(0, first - self.plan.left_frames)
        assert utt.runner.last_window is not None
        tail = utt.runner.last_window[first - window_first + core.shape[0] :]
        tail_ids = (
            best_path(tail, self.metadata.blank_id, self.options.blank_penalty)[0] if tail.size else tail
        )
        text = utt.text.preview(np.asarray(tail_ids, dtype=np.int32))
        if text != utt.shown:
            utt.shown = text
            end = (utt.start_frame + utt.runner.samples_received / self.frame_length) * self.frame_seconds
            events.append(
                StreamEvent(text, self._seconds(utt.start_frame), round(end, 3), False, self._number(utt))
            )
            self.stats.partials += 1

    def _endpoint(self, utt: _Utterance, events: List[StreamEvent]) -> str:
        if utt.frames >= self._max_frames:
            return "max-length"
        if utt.trailing >= self._rule2_frames:
            if utt.pending:
                self._push(utt, events)  # bring the text up to date before asking whether there is any
            if utt.has_text:
                return "silence"
        if utt.trailing >= self._rule1_frames:
            return "silence"
        return ""

    def _final_pass(self, utt: _Utterance) -> FrameDecoder:
        """A fresh decoder fed the utterance's whole audio windowed as a file is (`final_plan`)."""
        model_seconds = self.stats.model_seconds
        audio = np.concatenate(utt.audio) if utt.audio else _EMPTY
        utt.audio.clear()
        cache = utt.runner.cache if self._final_pass_reuses_features else None
        run = self._run_model if self._final_frames is None else self._timed(self._final_frames, False)
        runner = WindowedRunner(run, self.final_plan, cache)
        decoder = self._new_decoder()
        for first, core in runner.push(audio):
            push_core(decoder, runner, first, core)
        for first, core in runner.finish():
            push_core(decoder, runner, first, core)
        self.stats.final_passes += 1
        self.stats.final_pass_seconds += self.stats.model_seconds - model_seconds
        return decoder

    def _end(self, utt: _Utterance, reason: str, events: List[StreamEvent]) -> None:
        self._utterance = None
        if utt.decoder is None:  # final pass: the hop runner's last frames are not needed
            if utt.pending:
                self._take_pending(utt)
            decoder = self._final_pass(utt)
        else:
            if utt.pending:
                self._commit(utt, list(utt.runner.push(self._take_pending(utt))))
            self._commit(utt, list(utt.runner.finish()))
            decoder = utt.decoder
        text, _, words = finish_decoding(decoder, self.vocabulary, self.metadata.frame_seconds)
        command = decoder.match if isinstance(decoder, GrammarDecoder) else None
        if not text and not utt.shown:
            return  # noise: nothing was shown, nothing to finish
        offset = utt.start_frame * self.frame_seconds
        shifted = tuple(
            replace(w, start=round(w.start + offset, 3), end=round(w.end + offset, 3)) for w in words
        )
        if command is not None and command.matched:  # in stream seconds, like the words
            command = replace(
                command, start=round(command.start + offset, 3), end=round(command.end + offset, 3)
            )
        end = self._seconds(utt.last_speech_frame + 1)
        events.append(
            StreamEvent(
                text, self._seconds(utt.start_frame), end, True, self._number(utt), shifted, reason, command
            )
        )
        if text:
            self.stats.utterances += 1

    def _number(self, utt: _Utterance) -> int:
        # Numbered at their first event, so that noise that never shows text leaves no gap.
        if utt.index < 0:
            utt.index = self._utterances_numbered
            self._utterances_numbered += 1
        return utt.index

    def _seconds(self, frame: int) -> float:
        return round(frame * self.frame_seconds, 3)
