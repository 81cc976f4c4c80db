"""train.corpus: spoken-form text, sentence sources, the plan, and real corpora from each installed engine.

Engines that are not installed (see scripts/install_tts.sh) are skipped with the reason.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asr.spoken import number_to_words, ordinal_to_words, to_spoken, year_to_words
from edge_asr.text import TextNormalization
from train.corpus import CorpusError, CorpusOptions, build
from train.corpus.__main__ import main
from train.corpus.engines import ENGINES, Prosody, engine_missing, native_settings, synthesize, voice_missing
from train.corpus.plan import Planner, prefer_short
from train.corpus.sources import file_lines, load_sentences, make_sentence, split_sentences, wordnet_lines
from train.corpus.voices import VOICES

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sold three apples at the market on Monday.",
    "Mr. Brown paid $5.50 for the 2nd ticket.",
    "Please open the window before you leave.",
    "Turn left at the old mill and keep going.",
    "NASA sent it up on a rocket.",  # dropped: acronym
]


# --- spoken-form text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (21, "twenty one"),
        (100, "one hundred"),
        (105, "one hundred five"),
        (1001, "one thousand one"),
        (123456, "one hundred twenty three thousand four hundred fifty six"),
        (2_000_000_005, "two billion five"),
    ],
)
def test_number_to_words(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1, "first"), (2, "second"), (3, "third"), (12, "twelfth"), (20, "twentieth"), (21, "twenty first"),
     (100, "one hundredth"), (45, "forty fifth")],
)  # fmt: skip
def test_ordinal_to_words(n, words):
    assert ordinal_to_words(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1984, "nineteen eighty four"), (1900, "nineteen hundred"), (2005, "two thousand five"),
     (1805, "eighteen oh five"), (2024, "twenty twenty four")],
)  # fmt: skip
def test_year_to_words(n, words):
    assert year_to_words(n) == words


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("I have 3 cats.", "I have three cats."),
        ("It cost $5.50 today.", "It cost five dollars and fifty cents today."),
        ("It cost $1 today.", "It cost one dollar today."),
        ("A 10% rise.", "A ten percent rise."),
        ("Meet me at 7:30 tonight.", "Meet me at seven thirty tonight."),
        ("Prices rose 2.5% in 1999.", "Prices rose two point five percent in nineteen ninety nine."),
        ("We sold 1,250 of them.", "We sold one thousand two hundred fifty of them."),
        ("On the 21st day.", "On the twenty first day."),
        ("Mr. Smith & Dr. Jones met.", "Mister Smith and Doctor Jones met."),
        ("Fear the LORD and GOD.", "Fear the Lord and God."),
        ("He said 'hello' to me.", "He said hello to me."),
        ("Don't stop -- ever.", "Don't stop, ever."),
        ("The \u2018smart\u2019 quote isn\u2019t a problem.", "The smart quote isn't a problem."),
        ("O Lord, I am here.", "O Lord, I am here."),
        ("Then the sun went in.", "Then the sun went in."),  # ordinary words ending a sentence stay
        ("Wait... is it here?", "Wait... is it here?"),
    ],
)
def test_to_spoken_expands(text, spoken):
    assert to_spoken(text) == spoken


@pytest.mark.parametrize(
    "text",
    [
        "NASA sent a rocket.",  # acronym
        "He joined the U.S. Army.",  # dotted abbreviation
        "Meet me at 7:05 tonight.",  # "oh five" or "zero five": engines differ
        "Call 0800 now.",  # leading zero
        "The 3th time.",  # wrong ordinal suffix
        "Plan B is ready.",  # lone letter
        "Buy an iPhone.",  # internal capitals
        "A caf\u00e9 in town.",  # non-ASCII
        "Visit St. Paul.",  # ambiguous abbreviation
        "He lives on Baker St.",
        "It weighs ten lbs. and more.",
        "The item was approx. ten feet long.",  # any "word. lowercase" is an abbreviation
        "Use a/b and x=y.",  # symbols
        "Read item #5 first.",  # symbol
    ],
)
def test_to_spoken_refuses(text):
    assert to_spoken(text) is None


def test_label_is_text_normalization_of_spoken():
    sentence = make_sentence("test", "Mr. O'Brien's 2 dogs barked at 3 cats!")
    assert sentence is not None
    assert sentence.spoken == "Mister O'Brien's two dogs barked at three cats!"
    assert sentence.label == TextNormalization()(sentence.spoken)
    assert sentence.label == "mister o'brien's two dogs barked at three cats"
    assert make_sentence("test", "Too short.") is None  # under 4 words
    assert make_sentence("test", " ".join(["word"] * 26)) is None  # over 25 words


# --- sentence sources ------------------------------------------------------------------------------


def test_split_sentences():
    assert split_sentences('One two. Three four! "Five six?" seven. Eight') == [
        "One two.",
        "Three four!",
        '"Five six?" seven.',
        "Eight",
    ]


def test_wordnet_usage_examples_not_glosses(tmp_path):
    (tmp_path / "data.noun").write_text(
        "  1 This software and database is being provided to you\n"
        '00002684 03 n 02 object 0 | a tangible entity; "it was full of rackets, balls and other objects"\n'
        '00003553 03 n 02 whole 0 | an assemblage of parts; "how big is that part?"; "the team is a unit"\n'
    )
    assert list(wordnet_lines(tmp_path)) == [
        "It was full of rackets, balls and other objects",
        "How big is that part?",
        "The team is a unit",
    ]


def test_load_sentences_dedups_and_filters(tmp_path):
    text = tmp_path / "s.txt"
    text.write_text("# comment\n\n" + "\n".join(SENTENCES + ["the quick brown FOX jumps over the lazy dog"]))
    assert len(list(file_lines(text))) == len(SENTENCES) + 1
    sentences = load_sentences([f"file:{text}"])
    labels = [s.label for s in sentences]
    assert len(labels) == len(set(labels)) == 5  # NASA dropped; the FOX line is a duplicate once normalized
    assert "mister brown paid five dollars and fifty cents for the second ticket" in labels
    with pytest.raises(ValueError, match="unknown text source"):
        load_sentences(["nope"])


def test_debian_text_sources_give_sentences():
    from train.corpus.sources import SOURCES

    found = {}
    for name, lines in SOURCES.items():
        for original in lines():
            if make_sentence(name, original):
                found[name] = original
                break
    if not found:
        pytest.skip("no Debian text package installed (bible-kjv, wordnet-base, fortunes, jargon-text)")
    assert all(to_spoken(s) for s in found.values())


def test_fragments_are_single_words_and_short_runs_of_the_sources(monkeypatch):
    from train.corpus import sources

    text = [f"The {c}ook saw a {c}at by the river bank today." for c in "bcdfghlmnprstvw"]
    for name in ("kjv", "wordnet", "jargon", "fortunes"):
        monkeypatch.setitem(sources.SOURCES, name, lambda: iter(text))
    lines = sources.fragment_lines(words=10, fragments=20, vocabulary=40)
    assert lines == sources.fragment_lines(words=10, fragments=20, vocabulary=40)  # deterministic
    singles = [line for line in lines if " " not in line]
    runs = [line for line in lines if " " in line]
    assert len(singles) == 10 and len(runs) == 20 and len(set(lines)) == 30
    joined = " ".join(" ".join(t.lower().rstrip(".").split()) for t in text)
    assert all(2 <= len(run.split()) <= 3 and run in joined for run in runs)
    assert all(len(word) >= 2 for word in singles)
    labels = [s.label for s in load_sentences(["fragments"], min_words=1, max_words=3)]
    # The default sizes ask for more than this text holds: every word and every distinct run, then stop.
    assert len(set(labels)) == len(labels) and all(1 <= len(label.split()) <= 3 for label in labels)
    assert {"the", "cook saw a", "saw a"} <= set(labels) and len(labels) > 60
    assert "fragments" not in main.__globals__["SOURCES"]  # never part of the default source list


def test_letters_are_said_alone_and_in_runs_with_repeats_kept():
    from train.corpus import sources

    lines = sources.letter_lines(per_letter=3, runs=50)
    assert lines == sources.letter_lines(per_letter=3, runs=50)  # deterministic
    singles = [line for line in lines if " " not in line]
    assert sorted(singles) == sorted(sources.LETTERS * 3)
    runs = [line.split() for line in lines if " " in line]
    assert len(runs) == 50 and all(2 <= len(run) <= 4 and set(run) <= set(sources.LETTERS) for run in runs)
    # to_spoken refuses a lone letter inside prose; this source is read as given and keeps repeats.
    assert to_spoken("B") is None and to_spoken("plan B") is None
    kept = load_sentences(["letters"], min_words=1, max_words=4)
    assert len(kept) == len(sources.letter_lines())
    b = [s for s in kept if s.original == "B"]
    assert len(b) == 40 and {(s.spoken, s.label) for s in b} == {("B", "b")}
    assert {s.label for s in kept if s.original == "K D"} <= {"k d"}
    assert len(load_sentences(["letters"], min_words=1, max_words=1)) == 26 * 40
    assert "letters" not in main.__globals__["SOURCES"]


# --- plan -----------------------------------------------------------------------------------------


def test_plan_is_deterministic_and_splits_by_speaker(tmp_path):
    text = tmp_path / "s.txt"
    text.write_text("\n".join(f"This is sentence number {i} of the list." for i in range(300)))
    sentences = prefer_short(load_sentences([f"file:{text}"]), seed=0)
    voices = list(VOICES.values())
    splits = {"ked": "test", "rms": "valid"}
    a = [Planner(sentences, voices, splits, seed=4).item(i) for i in range(200)]
    b = [Planner(sentences, voices, splits, seed=4).item(i) for i in range(200)]
    c = [Planner(sentences, voices, splits, seed=5).item(i) for i in range(200)]
    assert a == b
    assert [u.voice for u in a] != [u.voice for u in c]
    assert all(u.split == splits.get(u.voice.speaker, "train") for u in a)
    assert len({u.voice.key for u in a}) > 5
    assert all(0.85 <= u.prosody.rate <= 1.2 and -3 <= u.prosody.pitch <= 3 for u in a)


def test_native_settings_keep_planned_tempo():
    flite = VOICES["flite:slt"]
    native, trick, applied = native_settings(flite, Prosody(rate=1.1, pitch=3.0))
    assert trick == pytest.approx(2**0.25)
    assert applied.rate == pytest.approx(1.1, abs=1e-3)  # the engine's tempo compensates the pitch trick
    hts = VOICES["festival:cmu_us_slt_arctic_hts"]
    assert native_settings(hts, Prosody(rate=1.1, pitch=3.0))[2].rate == pytest.approx(2**0.25, abs=1e-3)


# --- engines and whole corpora --------------------------------------------------------------------


def _write_sentences(tmp_path: Path) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return path


def _read_csv(path: Path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def check_ljspeech_folder(out: Path) -> dict:
    """Assert `out` is a valid corpus; return id -> sidecar row."""
    norm = TextNormalization()
    rows = [line.split("|") for line in (out / "metadata.csv").read_text().splitlines()]
    assert rows, "metadata.csv is empty"
    wavs = {p.stem for p in (out / "wavs").glob("*.wav")}
    assert {r[0] for r in rows} == wavs, "metadata rows and WAV files differ"
    sidecar = {r["id"]: r for r in _read_csv(out / "utterances.csv")}
    assert set(sidecar) == wavs
    for uid, text, label in rows:
        assert label == norm(text) and label
        info = sf.info(str(out / "wavs" / f"{uid}.wav"))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        audio, _ = sf.read(str(out / "wavs" / f"{uid}.wav"), dtype="float32")
        assert np.sqrt(np.mean(audio**2)) > 0.01, f"{uid} is (nearly) silent"
        assert sidecar[uid]["duration"] == f"{len(audio) / 16000:.3f}"
        assert float(sidecar[uid]["duration"]) > 0.5
        assert sidecar[uid]["licence"] and sidecar[uid]["engine"] in ENGINES
    # Manifests: path relative to the manifest, text = label; splits disjoint by speaker.
    speakers = {}
    labels = {r[0]: r[2] for r in rows}
    listed = []
    for split in ("train", "valid", "test"):
        manifest = _read_csv(out / f"{split}.csv")
        for row in manifest:
            uid = Path(row["path"]).stem
            assert (out / row["path"]).exists() and row["text"] == labels[uid]
            assert sidecar[uid]["split"] == split
            listed.append(uid)
        speakers[split] = {sidecar[Path(r["path"]).stem]["speaker"] for r in manifest}
    assert sorted(listed) == sorted(wavs)
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    splits = json.loads((out / "splits.json").read_text())
    assert {k: set(v["speakers"]) for k, v in splits.items()} == speakers
    return sidecar


@pytest.mark.parametrize("engine", ENGINES)
def test_each_installed_engine_makes_a_valid_corpus(engine, tmp_path):
    pytest.importorskip("tqdm")
    reason = engine_missing(engine)
    if reason:
        pytest.skip(f"{engine}: {reason}")
    voices = tuple(k for k, v in VOICES.items() if v.engine == engine and not voice_missing(v))
    if not voices:
        pytest.skip(f"{engine}: no voice installed")
    options = CorpusOptions(
        out=tmp_path / "corpus", count=4, seed=2, engines=(engine,), voices=voices,
        sources=(f"file:{_write_sentences(tmp_path)}",), workers=1, progress=False,
    )  # fmt: skip
    result = build(options)
    assert result.failures == []
    assert result.utterances == result.new_utterances == 4
    sidecar = check_ljspeech_folder(tmp_path / "corpus")
    assert {row["engine"] for row in sidecar.values()} == {engine}


def test_voice_renders_requested_tempo():
    """A slower rate gives longer audio, whatever the engine does to pitch."""
    voice = VOICES["espeak:en-US"]
    if voice_missing(voice):
        pytest.skip(voice_missing(voice))
    text = "Please open the window before you leave."
    slow = synthesize(voice, text, "", Prosody(rate=0.85))
    fast = synthesize(voice, text, "", Prosody(rate=1.2))
    ratio = (len(slow.audio) / slow.sample_rate) / (len(fast.audio) / fast.sample_rate)
    assert 1.2 < ratio < 1.6


def test_all_engines_parallel_resume_and_extend(tmp_path, capsys):
    pytest.importorskip("tqdm")
    installed = [e for e in ENGINES if not engine_missing(e)]
    if not installed:
        pytest.skip("no TTS engine installed (run scripts/install_tts.sh)")
    out = tmp_path / "corpus"
    sentences = tmp_path / "many.txt"
    colours = ["red", "green", "blue", "brown", "black", "white", "yellow", "grey"]
    things = ["box", "door", "chair", "house", "boat", "cup"]
    sentences.write_text("\n".join(f"The {c} {t} is near the river." for c in colours for t in things))
    args = ["--out", str(out), "--count", "10", "--seed", "3", "--engines", ",".join(installed),
            "--sources", f"file:{sentences}", "--workers", "2", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    first = check_ljspeech_folder(out)
    assert len(first) == 10
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "wavs").glob("*.wav")}
    # Resume: nothing is made again. Extend: only the new ids are made.
    assert main(args) == 0
    assert "(0 new" in capsys.readouterr().out
    assert main([*args[:3], "14", *args[4:]]) == 0
    assert "(4 new" in capsys.readouterr().out
    second = check_ljspeech_folder(out)
    assert len(second) == 14 and all(second[k] == first[k] for k in first)
    assert all((out / "wavs" / n).stat().st_mtime_ns == t for n, t in mtimes.items())
    # Other options on the same folder: refused, nothing touched.
    with pytest.raises(CorpusError, match="other options"):
        build(
            CorpusOptions(
                out=out, count=2, seed=4, engines=tuple(installed), sources=(f"file:{sentences}",), workers=1
            )
        )
    assert len(list((out / "wavs").glob("*.wav"))) == 14
    assert not list((out / "wavs").glob(".*"))  # no temp files left


def test_hours_target_with_progress_bar(tmp_path):
    pytest.importorskip("tqdm")
    if engine_missing("espeak"):
        pytest.skip(engine_missing("espeak"))
    sentences = tmp_path / "s.txt"
    sentences.write_text("\n".join(f"Here is a short line about {w} and more." for w in SENTENCES[0].split()))
    options = CorpusOptions(
        out=tmp_path / "c", hours=0.004, engines=("espeak",), sources=(f"file:{sentences}",), workers=1
    )
    result = build(options)  # the bar overshoots its total on the last utterance: must not fail
    assert 0.004 * 3600 <= result.seconds < 0.004 * 3600 + 10
    assert len(check_ljspeech_folder(tmp_path / "c")) == result.utterances


def test_cli_errors(tmp_path, capsys):
    assert main(["--list-engines"]) == 0
    assert "espeak:en-US" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--count", "3"])  # no --out
    assert main(["--out", str(tmp_path / "x"), "--count", "3", "--engines", "nope"]) == 2
    assert "unknown engine" in capsys.readouterr().err
    both = ["--test-speakers", "rms", "--valid-speakers", "rms"]
    assert main(["--out", str(tmp_path / "x"), "--count", "3", *both]) == 2
    assert "both valid and test" in capsys.readouterr().err


def test_exclude_keeps_another_corpus_sentences_out(tmp_path, capsys):
    pytest.importorskip("tqdm")
    if engine_missing("espeak"):
        pytest.skip(engine_missing("espeak"))
    sentences = _write_sentences(tmp_path)
    norm = TextNormalization()
    banned = [norm(to_spoken(SENTENCES[0])), norm(to_spoken(SENTENCES[3]))]
    manifest = tmp_path / "held_out.csv"
    manifest.write_text("path,text\n" + "".join(f"wavs/x{i}.wav,{t}\n" for i, t in enumerate(banned)))
    args = ["--out", str(tmp_path / "c"), "--count", "10", "--engines", "espeak", "--workers", "1",
            "--sources", f"file:{sentences}", "--exclude", str(manifest), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    labels = {line.split("|")[2] for line in (tmp_path / "c" / "metadata.csv").read_text().splitlines()}
    assert len(labels) == 3 and not labels & set(banned)  # 5 speakable sentences, 2 excluded
    # The exclusion is part of the plan: the same folder without it is refused.
    assert main(args[:-3] + ["--no-progress"]) == 2
    assert "other options" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nwavs/a.wav,hello\n")
    assert main([*args[:-2], str(bad), "--no-progress"]) == 2
    assert "no 'text' column" in capsys.readouterr().err


def test_kokoro_plan_blends_speakers():
    voices = [v for v in VOICES.values() if v.engine == "kokoro"]
    assert {v.speaker for v in voices} == {f"kokoro-{n}" for n in ("jf_alpha", "jf_gongitsune", "jf_nezumi",
                                                                  "jf_tebukuro", "jm_kumo")}  # fmt: skip
    sentences = [make_sentence("t", f"This is sentence number {i} of the list.") for i in range(3)]
    sentences = [s for s in sentences if s] * 20
    plan = [Planner(sentences, voices, {}, seed=1).item(i) for i in range(60)]
    blends = [p for u in plan for p in u.variant.split("+") if "@" in p]
    british = [u for u in plan if "gb" in u.variant.split("+")]
    assert 15 < len(blends) < 45 and 15 < len(british) < 45  # about half each
    for u in plan:
        for part in u.variant.split("+"):
            if "@" in part:
                other, share = part.split("@")
                assert other != u.voice.voice and f"kokoro:{other}" in VOICES and float(share) in (0.25, 0.5)
            else:
                assert part in ("", "gb")


def test_sentences_out_writes_lm_text_without_held_out_sentences(tmp_path, capsys):
    sentences = _write_sentences(tmp_path)
    norm = TextNormalization()
    banned = norm(to_spoken(SENTENCES[0]))
    manifest = tmp_path / "test.csv"
    manifest.write_text(f"path,text\nwavs/x.wav,{banned}\n")
    out = tmp_path / "lm" / "text.txt"
    args = ["--sentences-out", str(out), "--sources", f"file:{sentences}", "--exclude", str(manifest)]
    assert main(args) == 0  # no --out, --hours or engines needed
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and banned not in lines  # 5 speakable sentences, 1 excluded
    assert "mister brown paid five dollars and fifty cents for the second ticket" in lines  # labels
    assert f"{out}: 4 sentences" in capsys.readouterr().out
    assert main(["--sentences-out", str(out), "--sources", "nope"]) == 2
    assert "unknown text source" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 4  # a failed run leaves the old file whole
