"""Voice-command grammars: phrase scoring, rejection, templates, and the file and stream paths."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
from tone_model import VOCAB, token_frequency, tone_audio

from edge_asr import EdgeTranscriber, InputError
from edge_asr.cli import main as cli_main
from edge_asr.ctc import Vocabulary
from edge_asr.grammar import CompiledGrammar, Grammar, GrammarDecoder, Phrase, align
from edge_asr.text import TextNormalization

TONE_VOCAB = Vocabulary(VOCAB, 0, "|")
PHRASES = ["abc fed", "bad cafe", "face bead", "deaf cafe", "bad cab"]


def ctc_brute_force(log_probs: np.ndarray, labels: list[int], blank: int) -> float:
    """log P(labels | log_probs) by enumerating every frame path (tiny inputs only)."""
    total = -np.inf
    frames, vocab = log_probs.shape
    for path in itertools.product(range(vocab), repeat=frames):
        collapsed = [t for i, t in enumerate(path) if (i == 0 or t != path[i - 1]) and t != blank]
        if collapsed == labels:
            total = np.logaddexp(total, sum(log_probs[i, t] for i, t in enumerate(path)))
    return float(total)


@pytest.mark.parametrize("prune", [False, True])
def test_trie_forward_pass_is_the_exact_ctc_likelihood(prune: bool) -> None:
    vocab = Vocabulary(["_", "|", "a", "b"], 0, "|")
    rng = np.random.default_rng(0)
    log_probs = rng.normal(size=(6, 4))
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    grammar = Grammar.from_phrases(["ab", "a b", "aa", "b", "ba ab"]).compile(vocab, TextNormalization())
    decoder = GrammarDecoder(grammar, 0.02, prune=prune)
    decoder.push(log_probs[:2])
    decoder.push(log_probs[2:])
    scores = decoder.phrase_scores()
    for index, labels in enumerate(grammar.labels):
        expected = ctc_brute_force(log_probs, labels, 0)
        if 1 in labels:  # the word delimiter may also be left out between words
            expected = np.logaddexp(expected, ctc_brute_force(log_probs, [t for t in labels if t != 1], 0))
        assert scores[index] == pytest.approx(expected, abs=1e-9)


def test_in_grammar_speech_is_recognized_and_the_rest_rejected(transcriber: EdgeTranscriber) -> None:
    grammar = transcriber.compile_grammar(Grammar.from_phrases(PHRASES))
    match = transcriber.recognize(tone_audio("bad cafe"), grammar, sample_rate=16000)
    assert match.phrase == "bad cafe" and match.confidence > 0.9
    assert [a.phrase for a in match.alternatives][:2] == ["bad cafe", "bad cab"]
    assert match.start == pytest.approx(0.1, abs=0.03) and match.end == pytest.approx(2.4, abs=0.03)
    for outside in (tone_audio("ace"), tone_audio("abc fed abc fed"), np.zeros(16000, dtype=np.float32)):
        rejected = transcriber.recognize(outside, grammar, sample_rate=16000)
        assert rejected.phrase is None and rejected.confidence < 0.25 and rejected.slots == {}


def test_a_misheard_letter_still_finds_its_phrase(transcriber: EdgeTranscriber) -> None:
    # The last tone mixes 'd' (louder) with 'e': free decoding hears "bad cafd", which is no phrase.
    n = int(0.2 * 16000)
    t = np.arange(n) / 16000
    ramp = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / 160)
    d, e = (np.sin(2 * np.pi * token_frequency(VOCAB.index(c)) * t) for c in "de")
    audio = np.concatenate([tone_audio("bad caf"), (ramp * (0.17 * d + 0.13 * e)).astype(np.float32)])
    # The tone model is sure of every frame, so one wrong letter costs it more than a real model.
    grammar = Grammar.from_phrases(PHRASES)
    match = transcriber.recognize(audio, grammar, sample_rate=16000, min_confidence=0.2)
    assert match.heard == "bad cafd" and match.phrase == "bad cafe"


def test_pruned_and_exact_search_agree_on_a_large_grammar(transcriber: EdgeTranscriber) -> None:
    words = ["".join(w) for w in itertools.product("abcdef", repeat=3)]  # 216 three-letter words
    phrases = [f"{a} {b}" for a, b in itertools.product(words[:60], words[:60])] + ["bad cafe"]
    compiled = transcriber.compile_grammar(Grammar.from_phrases(phrases))
    log_probs = np.concatenate(list(transcriber.log_probs(tone_audio("bad cafe"), 16000)))
    results = []
    for prune in (False, True):
        decoder = GrammarDecoder(compiled, 0.02, prune=prune)
        decoder.push(log_probs)
        decoder.finish()
        assert decoder.match is not None
        results.append((decoder.match.phrase, decoder.match.confidence))
    assert results[0] == results[1] and results[0][0] == "bad cafe"


def test_phrases_the_model_cannot_spell_are_refused_by_name() -> None:
    with pytest.raises(InputError, match=r"'fade 2'.* cannot spell: o t w"):  # "2" -> "two"
        Grammar.from_phrases(["bad cafe", "fade 2"]).compile(TONE_VOCAB, TextNormalization())
    with pytest.raises(InputError, match="no phrases"):
        Grammar.from_phrases(["", "  "])
    with pytest.raises(InputError, match="min_confidence"):
        GrammarDecoder(Grammar.from_phrases(["abc"]).compile(TONE_VOCAB, TextNormalization()), 0.02, 1.5)


def test_duplicate_phrases_keep_the_first_slots() -> None:
    grammar = Grammar([Phrase("bad  cafe", (("x", "1"),)), Phrase("bad cafe", (("x", "2"),))])
    assert len(grammar) == 1 and grammar.phrases[0].slot_dict == {"x": "1"}


def test_templates_expand_with_slot_values(tmp_path: Path) -> None:
    pytest.importorskip("hassil")
    path = tmp_path / "commands.txt"
    path.write_text(
        "# a comment\n"
        "(turn | switch) on [the] {area} light[s]\n"
        "set [a] timer for {minutes:1-3} minute[s]\n"
        "activate {scene:mode} <please>\n"
        "{area} = kitchen | living room\n"
        "{scene} = movie night:movie\n"
        "<please> = please | now\n"
    )
    grammar = Grammar.from_file(path)
    texts = {p.text: p.slot_dict for p in grammar.phrases}
    assert texts["switch on kitchen lights"] == {"area": "kitchen"}
    assert texts["turn on the living room light"] == {"area": "living room"}
    assert texts["set timer for two minutes"] == {"minutes": "2"}
    assert texts["activate movie night now"] == {"mode": "movie"}
    assert len(grammar) == 2 * 2 * 2 * 2 + 2 * 3 * 2 + 2
    saved = tmp_path / "commands.json"
    grammar.save(saved)
    assert [(p.text, p.slots) for p in Grammar.from_file(saved).phrases] == [
        (p.text, p.slots) for p in grammar.phrases
    ]
    path.write_text("turn on {room}\n")
    with pytest.raises(InputError, match=r"list \{room\} is used but not defined"):
        Grammar.from_file(path)
    path.write_text("turn on (the\n")
    with pytest.raises(InputError, match="cannot parse template"):
        Grammar.from_file(path)


def test_plain_phrase_files_and_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "phrases.txt"
    path.write_text("bad cafe   # comment\n\nface bead\n")
    assert [p.text for p in Grammar.from_file(path).phrases] == ["bad cafe", "face bead"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"phrase": []}))
    with pytest.raises(InputError, match="not a grammar JSON file"):
        Grammar.from_file(bad)
    with pytest.raises(InputError, match="cannot read the grammar"):
        Grammar.from_file(tmp_path / "missing.txt")


def test_stream_finals_carry_the_command(transcriber: EdgeTranscriber) -> None:
    silence = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([tone_audio("bad cafe"), silence, tone_audio("ace"), silence])
    stream = transcriber.stream(grammar=Grammar.from_phrases(PHRASES))
    events = [e for i in range(0, audio.size, 1600) for e in stream.accept(audio[i : i + 1600], 16000)]
    finals = [e for e in [*events, *stream.flush()] if e.is_final]
    commands = [(e.text, e.command.phrase if e.command else "-") for e in finals]
    assert commands == [("bad cafe", "bad cafe"), ("", None)]  # "ace" is no command
    assert finals[0].to_dict()["command"]["phrase"] == "bad cafe"
    command = finals[0].command
    assert command is not None and command.start == pytest.approx(finals[0].words[0].start, abs=0.03)


def test_alignment_puts_each_label_on_its_tone(transcriber: EdgeTranscriber) -> None:
    log_probs = np.concatenate(list(transcriber.log_probs(tone_audio("ab"), 16000)))
    first, last = align(log_probs, [VOCAB.index("a"), VOCAB.index("b")], 0)
    # tones: 0.1 s lead, 0.2 s tone, 0.1 s gap: "a" on frames 5-14, "b" on frames 20-29
    assert np.abs(first - [5, 20]).max() <= 1 and np.abs(last - [14, 29]).max() <= 1


def test_compiled_trie_shares_prefixes() -> None:
    compiled = CompiledGrammar(Grammar.from_phrases(["bad cafe", "bad cab"]), TONE_VOCAB, TextNormalization())
    assert compiled.nodes == 1 + len("bad|caf") + 2  # root, the shared "bad cafe" prefix, then "e" and "b"


@pytest.fixture
def command_files(tmp_path: Path) -> tuple[Path, Path]:
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", tone_audio("bad cafe"), 16000)
    sf.write(audio / "b.wav", tone_audio("ace"), 16000)
    grammar = tmp_path / "commands.txt"
    grammar.write_text("\n".join(PHRASES) + "\n")
    return audio, grammar


def test_cli_file_grammar_in_txt_and_json(tone_bundle: Path, command_files, tmp_path: Path, capsys) -> None:
    audio, grammar = command_files
    base = ["file", "-m", str(tone_bundle), "--grammar", str(grammar)]
    assert cli_main([*base, str(audio / "a.wav")]) == 0
    assert capsys.readouterr().out == "bad cafe (1.00)\n"
    out = tmp_path / "out"
    assert cli_main([*base, str(audio), "-f", "json", "-o", str(out)]) == 0
    accepted, rejected = (json.loads((out / f"{name}.json").read_text()) for name in "ab")
    assert accepted["phrase"] == "bad cafe" and accepted["alternatives"][1]["phrase"] == "bad cab"
    assert rejected["phrase"] is None and rejected["heard"] == "ace" and rejected["source"].endswith("b.wav")
    assert cli_main([*base, str(audio), "-f", "srt", "-o", str(out)]) == 2
    assert "--grammar writes one command per input as txt or json" in capsys.readouterr().err
    assert cli_main([*base, str(audio / "a.wav"), "--min-confidence", "1.5"]) == 2
    assert "--min-confidence must be between 0 and 1" in capsys.readouterr().err


def test_cli_listen_grammar_prints_commands(tone_bundle: Path, command_files, tmp_path: Path, capsys) -> None:
    _, grammar = command_files
    silence = np.zeros(16000, dtype=np.float32)
    wav = tmp_path / "live.wav"
    sf.write(wav, np.concatenate([tone_audio("face bead"), silence, tone_audio("ace"), silence]), 16000)
    argv = ["listen", "-m", str(tone_bundle), "--grammar", str(grammar), "--input", str(wav), "-q"]
    assert cli_main(argv) == 0
    assert capsys.readouterr().out == "face bead (1.00)\n"
    assert cli_main(["-v", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "face bead (1.00)" and lines[1].startswith("none (best") and "heard: ace" in lines[1]


def test_templates_too_large_are_refused_before_expanding(tmp_path: Path) -> None:
    pytest.importorskip("hassil")
    path = tmp_path / "huge.txt"
    path.write_text("set {a:1-2000} to {b:1-2000}\n")  # 4 million phrases
    with pytest.raises(InputError, match="expand to 4000000 phrases"):
        Grammar.from_file(path)


class Stop(Exception):
    pass


def stop_after(calls: int) -> Callable[[], None]:
    """A `phrases.Check` that raises on its `calls`-th call."""
    seen = [0]

    def check() -> None:
        seen[0] += 1
        if seen[0] >= calls:
            raise Stop

    return check


def test_expanding_and_compiling_stop_when_their_check_raises() -> None:
    """A server abandons a grammar no request waits for any more: the check runs per phrase while
    templates expand, while phrases are collected and while the trie is built."""
    pytest.importorskip("hassil")
    words = " | ".join("".join(w) for w in itertools.islice(itertools.product("abcdef", repeat=3), 100))
    text = f"{{x}} {{y}}\n{{x}} = {words}\n{{y}} = {words}\n"  # 10,000 phrases
    with pytest.raises(Stop):
        Grammar.from_text(text, check=stop_after(50))  # while expanding
    with pytest.raises(Stop):
        Grammar.from_text("\n".join(PHRASES), check=stop_after(3))  # a plain list, while collecting
    grammar = Grammar.from_text(text)
    normalization = TextNormalization()
    for calls in (50, len(grammar) + 50, 2 * len(grammar) + 2):  # token lists, the trie, its numbering
        with pytest.raises(Stop):
            grammar.compile(TONE_VOCAB, normalization, check=stop_after(calls))
    assert grammar.compile(TONE_VOCAB, normalization).nodes > len(grammar)


def test_sampled_templates_draw_within_the_expansion() -> None:
    pytest.importorskip("hassil")
    from edge_asr.templates import expand_sentences, sample_sentences

    lists = {"n": [(str(i), str(i)) for i in range(50)]}
    rules = {"v": "(set|put)"}
    whole = {(p.text, p.slots) for p in expand_sentences(["<v> [the] {n} [now]"], lists, rules)}
    drawn = sample_sentences(["<v> [the] {n} [now]"], lists, rules, per_template=40, seed=3)
    assert len(whole) == 400 and len(drawn) == 40 and {(p.text, p.slots) for p in drawn} <= whole
    assert len({p.text.split()[0] for p in drawn}) == 2  # both alternatives of the rule are drawn


# -- hostile templates and files (issue 29) ---------------------------------------------------------------


def nested_rules(copies: int, levels: int) -> str:
    """<r0> = (on|off), each <rN> = `copies` x <rN-1>, and one sentence using the last: 2**(copies**levels)
    phrases from a few hundred bytes."""
    lines = ["<r0> = (on|off)"]
    lines += [f"<r{n}> = " + " ".join([f"<r{n - 1}>"] * copies) for n in range(1, levels + 1)]
    return "\n".join([*lines, f"turn <r{levels}>"]) + "\n"


HOSTILE_449 = nested_rules(8, 9)  # ran for about 20 minutes, holding the server's model thread
HOSTILE_298 = nested_rules(4, 10)  # a ValueError traceback formatting a 4,300-digit count


@pytest.mark.parametrize(
    "text, size", [(HOSTILE_449, 449), (HOSTILE_298, 298)], ids=["449-bytes", "298-bytes"]
)
def test_exponential_templates_are_refused_in_milliseconds(text: str, size: int) -> None:
    pytest.importorskip("hassil")
    import time

    assert len(text.encode()) == size
    Grammar.from_text("turn (on|off)")  # hassil imported: its import is not timed
    start = time.perf_counter()
    with pytest.raises(
        InputError, match=r"^grammar: the templates expand to more than 1e15 phrases, and at most"
    ):
        Grammar.from_text(text)
    assert time.perf_counter() - start < 0.5


def test_counting_remembers_rules_and_saturates() -> None:
    pytest.importorskip("hassil")
    from edge_asr.templates import SATURATED, saturating_product

    assert saturating_product([10**10, 10**10, 0]) == 0 and saturating_product([10**10, 10**10]) == SATURATED
    with pytest.raises(InputError, match="expand to 65536 phrases, and at most 1000 are taken"):
        Grammar.from_text(nested_rules(2, 3).replace("(on|off)", "(on|off|up|down)"), max_phrases=1000)
    with pytest.raises(InputError, match="refer to each other in a loop"):
        Grammar.from_text("<a> = x <a>\nsay <a>")


def test_grammar_files_are_read_with_a_size_cap_and_deep_json_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^/dev/zero: not a text file \(it holds NUL bytes\)"):
        Grammar.from_file("/dev/zero")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="not a grammar JSON file .*nested too deeply"):
        Grammar.from_file(deep)
    big = tmp_path / "big.txt"
    big.write_bytes(b"bad cafe\n" * 1000)
    from edge_asr import limits

    with pytest.raises(InputError, match="larger than 0.005 MB, the most a grammar file may be"):
        limits.read_text(big, 5000, "grammar")


def test_grammar_and_templates_do_not_import_each_other() -> None:
    import ast

    import edge_asr.templates

    tree = ast.parse(Path(str(edge_asr.templates.__file__)).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "grammar" not in imported  # grammar imports templates (lazily); templates only phrases


def test_the_template_expander_command_writes_json(tmp_path: Path) -> None:
    pytest.importorskip("hassil")
    from edge_asr.templates import main as expand_main

    source = tmp_path / "commands.txt"
    source.write_text("(bad | deaf) {food}\n{food} = cafe:drink | cab\n")
    assert expand_main([str(source), str(tmp_path / "out.json")]) == 0
    grammar = Grammar.from_file(tmp_path / "out.json")
    assert [(p.text, p.slot_dict) for p in grammar.phrases][0] == ("bad cafe", {"food": "drink"})
    assert len(grammar) == 4
