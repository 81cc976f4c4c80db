"""`python -m train.corpus`: build a synthetic multi-voice LJSpeech-format corpus with offline TTS.

bash scripts/install_tts.sh                       # engines + Debian text packages
python -m train.corpus --list-engines             # what is installed, and why not
nice python -m train.corpus --out data/corpus-v1 --hours 15 --seed 1 --workers 2 \\
    --engines espeak,flite,festival,pico,hibari     # corpus-v1 (train/corpus/RECIPE.md)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from .build import CorpusError, CorpusOptions, build, write_sentences
from .engines import ENGINES, voice_missing
from .plan import ProsodyRange
from .sources import SOURCES
from .voices import DEFAULT_TEST_SPEAKERS, DEFAULT_VALID_SPEAKERS, VOICES


def _csv_list(text: str) -> tuple:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.corpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, help="output folder (created; resumed if it exists)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--hours", type=float, help="generate until this many hours of audio exist")
    size.add_argument("--count", type=int, help="generate this many utterances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engines", type=_csv_list, default=ENGINES, help=f"comma list from {','.join(ENGINES)}")
    p.add_argument("--voices", type=_csv_list, default=(), help="comma list of registry keys (default: all)")
    p.add_argument(
        "--sources",
        type=_csv_list,
        default=tuple(SOURCES),
        help=f"comma list from {','.join(SOURCES)} (the default), fragments (single words and 2-3-word "
        "runs of those; with --min-words 1 --max-words 3), letters (letters said alone or in runs of 2-4; "
        "with --min-words 1 --max-words 4) or file:PATH (one sentence a line)",
    )
    p.add_argument("--exclude", type=Path, nargs="+", default=(), metavar="MANIFEST",
                   help="never say a sentence of these path,text manifests (e.g. another corpus's "
                   "valid.csv and test.csv)")  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="parallel synthesis processes (default 2)")
    p.add_argument("--valid-speakers", type=_csv_list, default=DEFAULT_VALID_SPEAKERS)
    p.add_argument("--test-speakers", type=_csv_list, default=DEFAULT_TEST_SPEAKERS)
    p.add_argument("--min-words", type=int, default=4)
    p.add_argument("--max-words", type=int, default=25)
    p.add_argument("--rate", type=float, nargs=2, default=(0.85, 1.2), metavar=("MIN", "MAX"),
                   help="tempo factor range (1 = engine default)")  # fmt: skip
    p.add_argument("--pitch", type=float, nargs=2, default=(-3.0, 3.0), metavar=("MIN", "MAX"),
                   help="pitch shift range in semitones")  # fmt: skip
    p.add_argument("--sentences-out", type=Path, metavar="FILE",
                   help="write the label of every usable sentence (less --exclude's) to FILE, one a "
                   "line, and stop: language-model text (`python -m quantize lm --text FILE`)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--list-engines", action="store_true", help="show each voice, its licence and status")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    only_lists = args.list_engines or args.sentences_out is not None
    if not only_lists and args.out is None:
        p.error("--out is required")
    if not only_lists and args.hours is None and args.count is None:
        p.error("give --hours or --count")
    if args.workers < 1:
        p.error("--workers must be at least 1")
    return args


def list_engines() -> int:
    print(f"{'voice':34} {'speaker':24} status / licence")
    for key, voice in VOICES.items():
        reason = voice_missing(voice)
        print(f"{key:34} {voice.speaker:24} {'MISSING: ' + reason if reason else 'ok: ' + voice.licence}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list_engines:
        return list_engines()
    options = CorpusOptions(
        out=args.out, hours=args.hours, count=args.count, seed=args.seed, engines=tuple(args.engines),
        voices=tuple(args.voices), sources=tuple(args.sources), workers=args.workers,
        valid_speakers=tuple(args.valid_speakers), test_speakers=tuple(args.test_speakers),
        min_words=args.min_words, max_words=args.max_words,
        prosody=ProsodyRange(args.rate[0], args.rate[1], args.pitch[0], args.pitch[1]),
        progress=not args.no_progress, exclude=tuple(args.exclude),
    )  # fmt: skip
    if args.sentences_out is not None:
        try:
            written = write_sentences(options, args.sentences_out)
        except CorpusError as exc:
            print(f"train.corpus: error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.sentences_out}: {written} sentences")
        return 0
    try:
        result = build(options)
    except CorpusError as exc:
        print(f"train.corpus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"train.corpus: interrupted; {args.out} holds what was made. Rerun the same command to resume.",
              file=sys.stderr)  # fmt: skip
        return 130
    for key, reason in sorted(result.skipped_voices.items()):
        print(f"skipped {key}: {reason}")
    print(f"{result.out}: {result.utterances} utterances, {result.seconds / 3600:.3f} h "
          f"({result.new_utterances} new, {result.new_seconds / 3600:.3f} h in {result.wall_seconds:.0f} s, "
          f"{result.new_seconds / max(result.wall_seconds, 1e-9):.1f} s of audio per second)")  # fmt: skip
    for name, row in result.per_split.items():
        print(f"  {name:6} {int(row['utterances']):7d} utt {row['hours']:8.3f} h")
    for name, row in sorted(result.per_speaker.items()):
        print(f"  speaker {name:24} {int(row['utterances']):7d} utt {row['hours']:8.3f} h")
    if result.failures:
        first = result.failures[0]
        print(f"{len(result.failures)} utterance(s) failed (rerun to retry them); first: {first}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
