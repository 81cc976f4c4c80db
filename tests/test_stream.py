"""Streaming recognition with the tone model: same text as offline, endpointing, bounded cost per hop."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soxr
from tone_model import SAMPLE_RATE, tone_audio, write_tone_bundle

from edge_asr import EdgeTranscriber
from edge_asr.errors import InputError
from edge_asr.stream import Stream, StreamEvent, StreamOptions
from edge_asr.transcriber import TranscribeOptions


@pytest.fixture(scope="module")
def transcriber(tmp_path_factory: pytest.TempPathFactory) -> EdgeTranscriber:
    return EdgeTranscriber(write_tone_bundle(tmp_path_factory.mktemp("tone") / "bundle"), threads=1)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def feed(stream, audio: np.ndarray, rate: int = SAMPLE_RATE, block: int = 1600, flush: bool = True):
    events: List[StreamEvent] = []
    for i in range(0, len(audio), block):
        events.extend(stream.accept(audio[i : i + block], rate))
    if flush:
        events.extend(stream.flush())
    return events


def finals(events: List[StreamEvent]) -> List[StreamEvent]:
    return [e for e in events if e.is_final]


@pytest.mark.parametrize("final_pass", [True, False], ids=["final-pass", "no-final-pass"])
@pytest.mark.parametrize("block", [160, 1600, 7777, 48000])
def test_streaming_a_file_gives_the_offline_text_and_word_times(transcriber, block, final_pass):
    audio = np.concatenate([tone_audio("ab cd ef fa"), silence(1.0)])
    offline = transcriber.transcribe(audio, sample_rate=SAMPLE_RATE)
    events = feed(transcriber.stream(StreamOptions(final_pass=final_pass)), audio, block=block)
    (final,) = finals(events)
    assert final.text == offline.text == "ab cd ef fa"
    assert [(w.text, w.start, w.end) for w in final.words] == [
        (w.text, w.start, w.end) for w in offline.words
    ]
    assert final.reason == "silence"


def test_int16_stereo_at_48k_is_resampled_to_the_same_text(transcriber):
    audio = np.concatenate([tone_audio("fed cab"), silence(1.0)])
    loud = soxr.resample(audio, SAMPLE_RATE, 48000)
    stereo = (np.stack([loud, loud], axis=1) * 32767).astype(np.int16)
    (final,) = finals(feed(transcriber.stream(), stereo, rate=48000, block=2400))
    offline = transcriber.transcribe(audio, sample_rate=SAMPLE_RATE)
    assert final.text == "fed cab"
    for ours, theirs in zip(final.words, offline.words):
        assert abs(ours.start - theirs.start) <= 0.02 and abs(ours.end - theirs.end) <= 0.02


def test_two_utterances_separated_by_silence_give_two_finals(transcriber):
    audio = np.concatenate([tone_audio("ab cd"), silence(1.5), tone_audio("ef"), silence(1.0)])
    events = feed(transcriber.stream(), audio)
    first, second = finals(events)
    assert (first.text, first.utterance) == ("ab cd", 0)
    assert (second.text, second.utterance) == ("ef", 1)
    assert first.end < second.start
    assert second.words[0].start == pytest.approx(
        len(tone_audio("ab cd")) / SAMPLE_RATE + 1.5 + 0.1, abs=0.021
    )
    # partials come before their final, carry its utterance number, and only grow towards it here
    partials = [e for e in events if not e.is_final]
    assert len([p for p in partials if p.utterance == 0]) >= 2
    assert events.index(first) < min(events.index(p) for p in partials if p.utterance == 1)
    for partial in partials:
        final = first if partial.utterance == 0 else second
        assert final.text.startswith(partial.text)


def test_final_comes_one_endpoint_silence_after_the_speech(transcriber):
    options = StreamOptions(endpoint_silence=0.4)
    stream = transcriber.stream(options)
    speech = tone_audio("abc", gap_seconds=0.05)
    audio = np.concatenate([speech, silence(2.0)])
    block = 160  # 10 ms
    for i in range(0, len(audio), block):
        if any(e.is_final for e in stream.accept(audio[i : i + block], SAMPLE_RATE)):
            heard_at = (i + block) / SAMPLE_RATE
            break
    else:
        pytest.fail("no final before the end of the audio")
    speech_end = (len(speech) - 0.05 * SAMPLE_RATE) / SAMPLE_RATE
    # (the tone fades over its last 10 ms, so the VAD may hear its end a frame early)
    assert options.endpoint_silence - 0.03 <= heard_at - speech_end <= options.endpoint_silence + 0.05


def test_flush_finishes_the_utterance_in_progress(transcriber):
    stream = transcriber.stream()
    audio = tone_audio("abc de")
    events = feed(stream, audio, flush=False)
    assert not finals(events) and stream.in_utterance
    (final,) = stream.flush()
    assert (final.text, final.reason, final.is_final) == ("abc de", "flush", True)
    assert not stream.in_utterance
    assert stream.flush() == []


def test_noise_that_the_model_does_not_hear_gives_no_event(transcriber):
    t = np.arange(int(0.6 * SAMPLE_RATE)) / SAMPLE_RATE
    beep = (0.3 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32)  # loud, but no token's frequency
    stream = transcriber.stream()
    events = feed(stream, np.concatenate([silence(0.5), beep, silence(2.0), tone_audio("ab"), silence(1.0)]))
    assert stream.stats.model_calls > 0  # the VAD did trigger on the beep
    assert [(e.text, e.utterance) for e in finals(events)] == [("ab", 0)]


@pytest.mark.parametrize("final_pass", [True, False], ids=["final-pass", "no-final-pass"])
def test_a_long_pause_the_vad_calls_speech_still_ends_a_word(transcriber, final_pass):
    # A 2 s beep keeps the utterance open (the VAD hears it) while the model hears nothing: "ab" and
    # "c" on either side must stay two words in the partials and the final, not "abc".
    t = np.arange(int(2.0 * SAMPLE_RATE)) / SAMPLE_RATE
    beep = (0.3 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32)
    audio = np.concatenate([tone_audio("ab"), beep, tone_audio("c"), silence(1.0)])
    events = feed(transcriber.stream(StreamOptions(final_pass=final_pass)), audio)
    (final,) = finals(events)
    assert final.text == "ab c"
    assert [w.text for w in final.words] == ["ab", "c"]
    assert final.words[0].end < 0.8 and final.words[1].start > 2.4
    assert "ab c" in [e.text for e in events if not e.is_final]


def test_silence_never_runs_the_model(transcriber):
    stream = transcriber.stream()
    assert feed(stream, silence(30.0)) == []
    assert stream.stats.model_calls == 0
    assert stream.stats.audio_seconds == pytest.approx(30.0)


def test_max_utterance_cuts_long_speech(transcriber):
    options = StreamOptions(max_utterance_seconds=2.0)
    text = "abcdef " * 4
    events = feed(transcriber.stream(options), np.concatenate([tone_audio(text), silence(1.0)]))
    cut = finals(events)
    assert len(cut) >= 4
    assert all(e.reason == "max-length" for e in cut[:-1])
    assert all(e.end - e.start <= 2.0 + 0.3 + 1e-6 for e in cut)  # pre-roll can precede the speech
    assert [e.utterance for e in cut] == list(range(len(cut)))


@pytest.mark.parametrize("final_pass", [True, False], ids=["final-pass", "no-final-pass"])
def test_compute_per_hop_does_not_grow_with_utterance_length(transcriber, monkeypatch, final_pass):
    sizes: List[int] = []
    real = transcriber.model.log_probs

    def recording(samples: np.ndarray) -> np.ndarray:
        sizes.append(samples.size)
        return real(samples)

    final_from: List[int] = []  # where in `sizes` each final pass began
    real_final_pass = Stream._final_pass

    def final_pass_spy(self, utt):
        final_from.append(len(sizes))
        return real_final_pass(self, utt)

    monkeypatch.setattr(transcriber.model, "log_probs", recording)
    monkeypatch.setattr(Stream, "_final_pass", final_pass_spy)
    options = StreamOptions(max_utterance_seconds=600.0, final_pass=final_pass)
    per_length, final_runs = {}, {}
    for seconds in (5, 60):
        sizes.clear()
        final_from.clear()
        # Continuous tones (gaps shorter than the endpoint silence): one utterance of `seconds`.
        audio = tone_audio("abcdef" * 100)[: seconds * SAMPLE_RATE]
        stream = transcriber.stream(options)
        (final,) = finals(feed(stream, audio, block=800))
        assert final.end == pytest.approx(seconds, abs=0.1)
        hops = final_from[0] if final_pass else len(sizes)
        assert len(final_from) == stream.stats.final_passes == int(final_pass)
        per_length[seconds], final_runs[seconds] = sizes[:hops], sizes[hops:]
    hop = stream.plan
    window = hop.samples_for(hop.left_frames + hop.chunk_frames + hop.right_frames)
    for seconds, calls in per_length.items():
        # after the left context has filled; without a final pass, before the hop runner's last run
        steady = calls[3:] if final_pass else calls[3:-1]
        assert steady and set(steady) == {window}, seconds
        assert max(calls) <= hop.samples_for(hop.left_frames + 2 * hop.chunk_frames + hop.right_frames) + 320
    assert max(per_length[5]) == max(per_length[60])
    # one more model call per hop of extra audio: linear in the audio, each call the same size
    assert abs(len(per_length[60]) - len(per_length[5]) - 55 / options.hop_seconds) <= 1
    if final_pass:
        # the final pass windows the utterance as a file is: 12 s windows at most, one per 10 s core
        file_plan = transcriber.plan
        assert stream.final_plan == file_plan
        file_window = file_plan.samples_for(
            file_plan.left_frames + file_plan.chunk_frames + file_plan.right_frames
        )
        assert final_runs[5] == [5 * SAMPLE_RATE]
        assert max(final_runs[60]) == file_window and len(final_runs[60]) == 6
    else:
        assert final_runs == {5: [], 60: []} and stream.stats.final_pass_seconds == 0.0


def deaf_to_short_windows(transcriber, monkeypatch, shortest: float = 4.0) -> None:
    """Make the model hear nothing in windows under `shortest` seconds (blank wins every frame there):
    an exaggerated Whisper encoder, which reads short windows worse than long ones."""
    real = transcriber.model.log_probs

    def deaf(samples: np.ndarray) -> np.ndarray:
        out = real(samples)
        if samples.size < shortest * SAMPLE_RATE:
            out = np.full_like(out, -50.0)
            out[:, 0] = 0.0
        return out

    monkeypatch.setattr(transcriber.model, "log_probs", deaf)


def test_the_final_pass_gives_exactly_what_transcribe_gives_for_the_utterance(transcriber, monkeypatch):
    deaf_to_short_windows(transcriber, monkeypatch)
    said = "abc def fed cba"  # 4.6 s of tones: only the final pass's one window is long enough
    audio = np.concatenate([silence(1.3), tone_audio(said)])
    stream = transcriber.stream()
    events = feed(stream, audio)
    (final,) = finals(events)
    assert final.reason == "flush" and not [e for e in events if not e.is_final]  # no partial heard it
    utterance = audio[round(final.start * SAMPLE_RATE) :]  # pre-roll + speech, up to the flush
    offline = transcriber.transcribe(utterance, sample_rate=SAMPLE_RATE)
    assert final.text == offline.text == said
    assert [(w.text, w.start, w.end, w.confidence) for w in final.words] == [
        (w.text, round(w.start + final.start, 3), round(w.end + final.start, 3), w.confidence)
        for w in offline.words
    ]
    stats = stream.stats
    assert stats.final_passes == 1 and 0.0 < stats.final_pass_seconds <= stats.model_seconds


def test_without_the_final_pass_finals_come_from_the_committed_hops(transcriber, monkeypatch):
    deaf_to_short_windows(transcriber, monkeypatch)
    audio = np.concatenate([silence(1.3), tone_audio("abc def fed cba"), silence(1.5)])
    stream = transcriber.stream(StreamOptions(final_pass=False))
    assert feed(stream, audio) == []  # every hop window is short: nothing heard, no final line
    assert stream.stats.final_passes == 0 and stream.stats.model_calls > 0


@pytest.mark.parametrize("final_pass", [True, False], ids=["final-pass", "no-final-pass"])
def test_a_grammar_decodes_the_final_pass(transcriber, monkeypatch, final_pass):
    from edge_asr.grammar import Grammar

    deaf_to_short_windows(transcriber, monkeypatch)
    audio = np.concatenate([silence(1.3), tone_audio("abc def fed cba")])
    grammar = Grammar.from_phrases(["abc def fed cba", "fed cab"])
    events = feed(transcriber.stream(StreamOptions(final_pass=final_pass), grammar=grammar), audio)
    if final_pass:
        (final,) = finals(events)
        assert final.command is not None and (final.text, final.command.phrase) == ("abc def fed cba",) * 2
        assert final.command.start == pytest.approx(final.words[0].start, abs=0.021)  # stream seconds
    else:
        assert events == []  # the hops heard nothing, so there is no final to match


def test_sample_rate_change_needs_a_flush_and_bad_input_is_refused(transcriber):
    stream = transcriber.stream()
    assert stream.accept(np.zeros(0, np.float32), 44100) == []
    stream.accept(np.zeros(4410, np.float32), 44100)
    with pytest.raises(InputError, match="flush"):
        stream.accept(np.zeros(1600, np.float32), 16000)
    stream.flush()
    stream.accept(np.zeros(1600, np.float32), 16000)
    with pytest.raises(Exception, match="sample rate"):
        transcriber.stream().accept(np.zeros(100, np.float32), 100)


@pytest.mark.parametrize(
    "field, value",
    [
        ("hop_seconds", 0.0),
        ("endpoint_silence", -1.0),
        ("left_context_seconds", -0.5),
        ("max_utterance_seconds", 0.1),
    ],
)
def test_bad_stream_options_are_refused(transcriber, field, value):
    with pytest.raises(InputError, match=field):
        transcriber.stream(StreamOptions(**{field: value}))


def test_event_dict_for_jsonl(transcriber):
    events = feed(transcriber.stream(), np.concatenate([tone_audio("ab"), silence(1.0)]))
    final = finals(events)[0].to_dict()
    assert final["type"] == "final" and final["text"] == "ab" and final["reason"] == "silence"
    assert final["words"][0]["text"] == "ab" and final["words"][0]["start"] == pytest.approx(0.1, abs=0.021)
    partial = next(e for e in events if not e.is_final).to_dict()
    assert partial["type"] == "partial" and "words" not in partial


def test_blank_penalty_reaches_the_stream(transcriber):
    stream = transcriber.stream(StreamOptions(blank_penalty=50.0))  # blank can never win
    events = feed(stream, np.concatenate([tone_audio("ab"), silence(1.0)]))
    assert len(finals(events)[0].text) > 2


DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "edge_asr" / "models" / "default"


@pytest.mark.skipif(
    not (DEFAULT_BUNDLE / "bundle.json").is_file(),
    reason="no default model at edge_asr/models/default yet (it is being trained); the tone tests above "
    "check the streaming path itself",
)
# 211 reference characters: one CER point is two characters. Measured with the v2 default model
# (Whisper tiny.en encoder), offline / streaming with the final pass / without it: CER 0.109 / 0.114 /
# 0.137 with its LMs, 0.152 / 0.147 / 0.166 greedy. Without the final pass the encoder sees only the
# 2.5 s hop windows (12 s for a file) and reads short windows worse; with it the final is what the file
# path gives for the utterance's audio, which has less silence around the speech than these files
# (the v1 model gave 0.062 / 0.076 without a final pass). With the LMs rebuilt without the fortunes
# text: 0.104 / 0.128 / 0.123 (five characters apart). v2.2 (the head trained on, also, short
# utterances) with its retuned LMs: 0.104 / 0.114 / 0.118, and 0.137 / 0.152 / 0.161 greedy (the file
# path gained three characters, the hops one); on the floors (onnxruntime 1.16) greedy gave 0.123 /
# 0.142 / 0.156. Three points of slack with the final pass, and five without it, keep that apart from a
# real streaming bug (lost or doubled frames cost tens of points).
@pytest.mark.parametrize("decoding", ["joint", "lm", "greedy"])
def test_streaming_cer_close_to_offline_with_the_default_model(tmp_path, decoding):
    import shutil
    import subprocess

    import soundfile as sf

    jiwer = pytest.importorskip("jiwer")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (needed to synthesize test speech)")
    sentences = [
        "the quick brown fox jumps over the lazy dog",
        "she sells sea shells by the sea shore",
        "a journey of a thousand miles begins with a single step",
        "please call stella and ask her to bring these things with her from the store",
    ]
    options = {
        "joint": TranscribeOptions(),
        "lm": TranscribeOptions(decoder="ctc"),
        "greedy": TranscribeOptions(decoder="ctc", use_lm=False),
    }[decoding]
    transcriber = EdgeTranscriber(options=options)
    norm = transcriber.metadata.text_normalization
    offline_hyp: List[str] = []
    stream_hyp: Dict[bool, List[str]] = {True: [], False: []}
    for i, sentence in enumerate(sentences):
        wav = tmp_path / f"{i}.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-w", str(wav), sentence], check=True, capture_output=True
        )
        audio, rate = sf.read(wav, dtype="float32")
        audio = np.concatenate([np.zeros(rate // 2, np.float32), audio, np.zeros(rate, np.float32)])
        offline_hyp.append(norm(transcriber.transcribe(audio, sample_rate=rate).text))
        for final_pass, hyp in stream_hyp.items():
            stream = transcriber.stream(StreamOptions(final_pass=final_pass))
            events = feed(stream, audio, rate=rate, block=rate // 20)
            hyp.append(norm(" ".join(e.text for e in finals(events))))
    refs = [norm(s) for s in sentences]
    offline_cer = jiwer.cer(refs, offline_hyp)
    final_pass_cer, hops_cer = (jiwer.cer(refs, stream_hyp[final_pass]) for final_pass in (True, False))
    figures = (offline_cer, final_pass_cer, hops_cer, stream_hyp)
    # Joint decoding (v3) measured 0.038 offline and 0.081 with the final pass: one sentence of four,
    # "brown fox jump" -> "round-fuck stump", a near-tie of the decoder's that the final pass's audio
    # (it starts at the VAD's pre-roll, 0.2 s in) flips; six points keep that apart from a bug.
    assert final_pass_cer - offline_cer <= (0.06 if decoding == "joint" else 0.03), figures
    if decoding != "joint":  # without the final pass, joint finals are the CTC head's greedy text
        assert hops_cer - offline_cer <= 0.05, figures


def test_a_model_with_5_ms_frames_streams_the_offline_text(tmp_path, monkeypatch):
    import tone_model

    monkeypatch.setattr(tone_model, "STRIDE", 80)  # like train/'s "small" preset: 80-sample frames
    asr = EdgeTranscriber(tone_model.write_tone_bundle(tmp_path / "stride80"), threads=1)
    assert asr.metadata.frame_stride == 80
    audio = np.concatenate([tone_audio("ab cd"), silence(1.0), tone_audio("fe"), silence(1.0)])
    stream = asr.stream()
    assert stream.frame_length == 320  # the VAD still sees 20 ms frames
    events = feed(stream, audio, block=999)
    assert [e.text for e in finals(events)] == ["ab cd", "fe"]
    # one partial chance per hop whatever the block size
    assert [e.text for e in feed(asr.stream(), audio, block=48000)] == [e.text for e in events]
    offline = asr.transcribe(audio[: len(tone_audio("ab cd"))], sample_rate=SAMPLE_RATE)
    assert [(w.text, w.start, w.end) for w in finals(events)[0].words] == [
        (w.text, w.start, w.end) for w in offline.words
    ]


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e30])
def test_a_bad_sample_does_not_silence_the_rest_of_the_stream(transcriber, caplog, value):
    spoiled = silence(0.5)
    spoiled[100] = value
    audio = np.concatenate([tone_audio("ab"), silence(1.0), spoiled, tone_audio("cd"), silence(1.0)])
    with caplog.at_level("WARNING", logger="edge_asr"):
        stream = transcriber.stream()
        events = feed(stream, audio[: len(audio) // 2], flush=False) + feed(stream, audio[len(audio) // 2 :])
    assert [e.text for e in finals(events)] == ["ab", "cd"]
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
