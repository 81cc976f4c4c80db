"""Build a character n-gram LM from text and add it to a bundle (`python -m quantize lm`).

The estimate is interpolated Witten-Bell, which needs no tuning and behaves on the small texts a user
has (their own transcripts, a list of voice commands). N-grams of order 3 and up seen fewer than
`min_count` times are pruned, then every context gets the backoff weight that keeps its distribution
summing to one, and the model is written as gzipped ARPA for `edge_asr.lm` to read.

With an evaluation manifest, the LM weight and insertion bonus are picked on it by a small grid
search over the bundle's own ONNX output (computed once), and the CER with and without the LM is
stored in bundle.json.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edge_asr.beam import BeamOptions, PrefixBeamDecoder
from edge_asr.bundle import load_bundle, write_bundle
from edge_asr.ctc import Vocabulary, best_path, decode
from edge_asr.errors import BundleError
from edge_asr.lm import BOS, EOS, WORD_BOUNDARY, CharNgramLM, open_text, tokens_of, write_arpa
from edge_asr.text import TextNormalization
from train.metrics import count_errors

from .convert import place_bundle
from .errors import QuantizeError
from .manifest import EvalItem, read_manifest

log = logging.getLogger(__name__)
ProgressFn = Callable[[str], None]
LM_FILE = "lm.arpa.gz"
WEIGHTS = (0.2, 0.35, 0.5, 0.7, 1.0)
BONUSES = (0.0, 0.5, 1.0, 1.5, 2.5)

History = Tuple[str, ...]
ArpaEntries = List[List[Tuple[History, float, float]]]


@dataclass
class LmStats:
    sentences: int
    skipped: int
    tokens: int
    ngrams: List[int]


def read_sentences(paths: Sequence[Path]) -> List[str]:
    """Sentences from text files (one per line, .gz allowed) or manifests (.csv, metadata.csv, .jsonl)."""
    sentences: List[str] = []
    for path in paths:
        if not Path(path).is_file():
            raise QuantizeError(f"{path}: text file not found")
        if path.name.endswith((".txt", ".txt.gz")):
            with open_text(path) as handle:
                sentences.extend(line.strip() for line in handle if line.strip())
        else:
            sentences.extend(item.text for item in read_manifest(path))
    return sentences


def lm_token_sentences(
    sentences: Iterable[str], normalization: TextNormalization, vocabulary: Sequence[str]
) -> Tuple[List[List[str]], int]:
    """Normalize each sentence as the model's labels were; drop those with characters it cannot spell."""
    spellable = set(vocabulary) | {WORD_BOUNDARY}
    kept: List[List[str]] = []
    skipped = 0
    for sentence in sentences:
        tokens = tokens_of(normalization(sentence))
        if tokens and all(t in spellable for t in tokens):
            kept.append(tokens)
        else:
            skipped += 1
    return kept, skipped


def estimate(sentences: Sequence[Sequence[str]], order: int = 6, min_count: int = 2) -> ArpaEntries:
    """Interpolated Witten-Bell n-grams, pruned and renormalized into ARPA entries (log10)."""
    if order < 1:
        raise QuantizeError(f"--order must be 1 or more, got {order}")
    counts: Dict[History, Counter] = defaultdict(Counter)
    for tokens in sentences:
        seq = [BOS, *tokens, EOS]
        for i in range(1, len(seq)):
            for k in range(min(order - 1, i) + 1):
                counts[tuple(seq[i - k : i])][seq[i]] += 1
    if not counts:
        raise QuantizeError("no usable sentence to build a language model from")
    totals = {h: (sum(c.values()), len(c)) for h, c in counts.items()}
    vocabulary_size = len(counts[()])
    memo: Dict[Tuple[History, str], float] = {}

    def interpolated(history: History, token: str) -> float:
        key = (history, token)
        if key not in memo:
            lower = interpolated(history[1:], token) if history else 1.0 / vocabulary_size
            seen = counts.get(history)
            if seen is None:
                memo[key] = lower
            else:
                total, types = totals[history]
                memo[key] = (seen[token] + types * lower) / (total + types)
        return memo[key]

    kept: Dict[History, Dict[str, float]] = {}
    for history, following in counts.items():
        n = len(history) + 1
        chosen = {t: interpolated(history, t) for t, c in following.items() if n <= 2 or c >= min_count}
        if chosen:
            kept[history] = chosen

    backoff: Dict[History, float] = {}

    def model_prob(history: History, token: str) -> float:
        weight = 1.0
        while True:
            found = kept.get(history, {}).get(token)
            if found is not None:
                return weight * found
            if not history:
                return weight * 1e-12
            weight *= backoff.get(history, 1.0)
            history = history[1:]

    for history in sorted(kept, key=len):
        if not history:
            continue
        mass = sum(kept[history].values())
        lower_mass = sum(model_prob(history[1:], t) for t in kept[history])
        if mass < 1.0 and lower_mass < 1.0:
            backoff[history] = (1.0 - mass) / (1.0 - lower_mass)

    entries: ArpaEntries = [[] for _ in range(order)]
    grams: Dict[History, float] = {h + (t,): p for h, following in kept.items() for t, p in following.items()}
    grams.setdefault((BOS,), 0.0)
    for gram in sorted(grams, key=lambda g: (len(g), g)):
        p = grams[gram]
        logprob = -99.0 if gram == (BOS,) else math.log10(p)
        bow = backoff.get(gram, 1.0)
        entries[len(gram) - 1].append((gram, logprob, math.log10(bow) if bow > 0 else -99.0))
    return [level for level in entries if level]


def write_lm(path: Path, entries: ArpaEntries) -> None:
    # mtime=0: the same text gives the same bytes, hence the same sha256 in bundle.json.
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        io.TextIOWrapper(zipped, encoding="utf-8") as handle,
    ):
        write_arpa(handle, entries)


def decode_all(
    log_probs: Sequence[np.ndarray],
    vocabulary: Vocabulary,
    frame_seconds: float,
    lm: Optional[CharNgramLM],
    options: Optional[BeamOptions],
) -> List[str]:
    texts = []
    for lp in log_probs:
        if lm is None or options is None:
            ids, scores = best_path(lp, vocabulary.blank_id)
        else:
            decoder = PrefixBeamDecoder(vocabulary, lm, options)
            decoder.push(lp)
            ids, scores = decoder.finish()
        texts.append(decode(ids, vocabulary, frame_seconds, scores)[0])
    return texts


def tune(
    bundle_dir: Path, lm: CharNgramLM, items: Sequence[EvalItem], beam_size: int, threads: Optional[int], say
) -> Dict[str, float]:
    """Grid-search lm_weight x insertion_bonus on `items`; returns the best with CER/WER with and without."""
    from edge_asr.audio import open_audio
    from edge_asr.transcriber import EdgeTranscriber

    asr = EdgeTranscriber(bundle_dir, threads=threads, verify=False)
    meta = asr.metadata
    log_probs = []
    for item in items:
        _, blocks = open_audio(item.path, meta.sample_rate)
        log_probs.append(asr.model.log_probs(np.concatenate(list(blocks))))
    refs = [item.text for item in items]
    norm = meta.text_normalization
    greedy = count_errors(refs, decode_all(log_probs, asr.vocabulary, meta.frame_seconds, None, None), norm)
    say(f"  greedy: CER {greedy.cer:.4f} WER {greedy.wer:.4f} on {len(items)} utterances")
    best: Optional[Tuple[float, float, float, float]] = None
    for weight in WEIGHTS:
        for bonus in BONUSES:
            options = BeamOptions(beam_size=beam_size, lm_weight=weight, insertion_bonus=bonus)
            hyps = decode_all(log_probs, asr.vocabulary, meta.frame_seconds, lm, options)
            scored = count_errors(refs, hyps, norm)
            log.info(
                "lm_weight %.2f insertion_bonus %.1f: CER %.4f WER %.4f",
                weight,
                bonus,
                scored.cer,
                scored.wer,
            )
            if best is None or (scored.cer, scored.wer) < (best[2], best[3]):
                best = (weight, bonus, scored.cer, scored.wer)
    assert best is not None
    say(f"  with LM: CER {best[2]:.4f} WER {best[3]:.4f} (lm_weight {best[0]}, insertion_bonus {best[1]})")
    return {
        "lm_weight": best[0],
        "insertion_bonus": best[1],
        "utterances": len(items),
        "cer_greedy": round(greedy.cer, 4),
        "wer_greedy": round(greedy.wer, 4),
        "cer_lm": round(best[2], 4),
        "wer_lm": round(best[3], 4),
    }


def add_lm(
    bundle_dir: Path,
    out: Path,
    texts: Sequence[Path],
    force: bool,
    say: ProgressFn,
    order: int = 6,
    min_count: int = 2,
    beam_size: int = 8,
    tune_manifest: Optional[Path] = None,
    tune_limit: Optional[int] = None,
    threads: Optional[int] = None,
) -> Path:
    """Copy a bundle to `out` with a language model; when `out` is the bundle itself, replace it.

    The bundle is rebuilt in a temporary folder beside `out` and renamed into place, so a failure
    leaves the original untouched.
    """
    try:
        bundle = load_bundle(bundle_dir, verify=False)
    except BundleError as exc:
        raise QuantizeError(str(exc)) from None
    meta = bundle.metadata
    in_place = out.resolve() == bundle.path.resolve()
    if out.exists() and not force and not in_place:
        raise QuantizeError(f"{out}: already exists; pass --force to replace it")
    started = time.perf_counter()
    sentences, skipped = lm_token_sentences(read_sentences(texts), meta.text_normalization, meta.vocabulary)
    if not sentences:
        raise QuantizeError(
            f"none of the {skipped} sentence(s) can be spelled with the model's vocabulary; check --text"
        )
    if skipped:
        say(f"  skipped {skipped} sentence(s) with characters outside the model's vocabulary")
    entries = estimate(sentences, order, min_count)
    sizes = [len(level) for level in entries]
    say(f"  {len(sentences)} sentences -> {sum(sizes)} n-grams (orders 1-{len(sizes)}: {sizes})")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copytree(bundle.path, tmp, dirs_exist_ok=True)
        write_lm(tmp / LM_FILE, entries)
        lm = CharNgramLM.load(tmp / LM_FILE, meta.vocabulary)
        settings: Dict[str, object] = {
            "lm_weight": BeamOptions.lm_weight,
            "insertion_bonus": BeamOptions.insertion_bonus,
        }
        evaluation = None
        if tune_manifest is not None:
            say(f"tuning on {tune_manifest} ...")
            evaluation = tune(tmp, lm, read_manifest(tune_manifest, tune_limit), beam_size, threads, say)
            settings = {k: evaluation.pop(k) for k in ("lm_weight", "insertion_bonus")}
        meta.language_model = {
            "file": LM_FILE,
            "kind": "char-ngram-arpa",
            "order": len(sizes),
            "beam_size": beam_size,
            **settings,
        }
        meta.extra["language_model"] = {
            "sentences": len(sentences),
            "skipped": skipped,
            "ngrams": sizes,
            "min_count": min_count,
            "size_bytes": (tmp / LM_FILE).stat().st_size,
            **({"evaluation": evaluation} if evaluation else {}),
        }
        write_bundle(tmp, meta)
        place_bundle(tmp, out, force or in_place)
    except BundleError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise QuantizeError(str(exc)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size_mb = (out / LM_FILE).stat().st_size / 1e6
    say(f"  language model: {size_mb:.2f} MB in {time.perf_counter() - started:.1f} s")
    return out
