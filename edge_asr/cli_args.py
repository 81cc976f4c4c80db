"""The flags that `edge-asr file` and `edge-asr listen` share, declared once, and the options built from them.

cli.py declares each command and listen.py the live-only flags; both add the shared groups from here,
and both turn the parsed flags into a `TranscribeOptions` with `transcribe_options`.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, Optional

from . import limits
from .grammar import DEFAULT_MIN_CONFIDENCE, Grammar
from .hotwords import DEFAULT_BOOST, Hotwords
from .model import ARENA_CHOICES
from .transcriber import DECODER_CHOICES, TranscribeOptions, tuned_beam_options


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """--model: every command that loads a bundle."""
    parser.add_argument(
        "--model", "-m", metavar="DIR", help="model bundle folder (default: the bundled model)"
    )


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """--model, --threads, --fp32, --blank-penalty: the commands that transcribe (file, listen)."""
    add_model_args(parser)
    parser.add_argument(
        "--threads", "-t", type=int, help="onnxruntime threads (default: physical cores, max 4)"
    )
    parser.add_argument(
        "--fp32", action="store_true", help="run the float32 graph even if the bundle has int8"
    )
    parser.add_argument(
        "--blank-penalty",
        type=float,
        default=0.0,
        help="subtract from the blank score; >0 emits more letters",
    )
    parser.add_argument(
        "--front-end-cache",
        choices=("auto", "on", "off"),
        default="auto",
        help="keep front-end features of audio already seen (bundles with split graphs); auto: only "
        "where that changes no frame (see docs/streaming.md)",
    )
    add_arena_arg(parser)


def add_arena_arg(parser: argparse.ArgumentParser) -> None:
    """--arena: onnxruntime's CPU memory arena (file, listen, serve; bench takes a list)."""
    parser.add_argument(
        "--arena",
        choices=ARENA_CHOICES,
        default="auto",
        help="onnxruntime's CPU memory arena; auto: by model size, as measured (docs/benchmarks.md)",
    )


def runtime_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """The `EdgeTranscriber` arguments that `add_runtime_args` flags set, beside the options."""
    cache = {"auto": None, "on": True, "off": False}[getattr(args, "front_end_cache", "auto")]
    return {
        "quantized": not args.fp32,
        "threads": args.threads,
        "front_end_cache": cache,
        "arena": getattr(args, "arena", "auto"),
    }


def add_decoding_args(parser: argparse.ArgumentParser, *, file: bool) -> None:
    """The "language model" group: --no-lm, --no-word-lm, --beam-size.

    `file`: also --lm-weight and --insertion-bonus. `listen` (file=False) beam-searches its final lines
    only (partials stay greedy) and keeps the bundle's tuned weights.
    """
    if file:
        about = "beam search with the bundle's LM, when it has one (see `edge-asr info`)"
        no_lm = "decode greedily even if the bundle has an LM"
        word_lm = "leave the bundle's word LM out of the beam search (character LM alone)"
        beam = "prefixes kept per frame (default: the bundle's)"
    else:
        about = "beam search for final lines with the bundle's LM, when it has one (see `edge-asr info`)"
        no_lm = "greedy finals even if the bundle has a language model (partials are always greedy)"
        word_lm = "leave the bundle's word LM out of the finals' beam search (character LM alone)"
        beam = "prefixes kept per frame for finals (default: the bundle's; 8 halves the cost)"
    text = parser.add_argument_group(
        "text decoder", "a bundle with a text decoder (`edge-asr info` says) writes final text with it"
    )
    text.add_argument(
        "--decoder",
        choices=DECODER_CHOICES,
        default="auto",
        help="joint: the bundle's text decoder steered by the CTC head (cased, punctuated); ctc: the CTC "
        "head alone, with the LMs; auto (default): joint when the bundle has a decoder and no --hotwords"
        + ("" if file else "; partials are always CTC"),
    )
    text.add_argument(
        "--ctc-weight",
        type=float,
        help="weight of the CTC head's score in joint decoding (default: the bundle's)",
    )
    text.add_argument(
        "--decoder-beam",
        type=int,
        help="hypotheses kept in joint decoding (default: the bundle's; 1 is greedy: faster, less accurate)",
    )
    text.add_argument(
        "--lowercase",
        action="store_true",
        help="with the text decoder: lower case without punctuation, numbers spelled (the CTC form)",
    )
    group = parser.add_argument_group("language model", about)
    group.add_argument("--no-lm", dest="use_lm", action="store_false", help=no_lm)
    group.add_argument("--no-word-lm", dest="use_word_lm", action="store_false", help=word_lm)
    group.add_argument("--beam-size", type=int, help=beam)
    group.add_argument(
        "--hotwords",
        metavar="FILE",
        help="words or names to favour, one a line (optionally 'word :BOOST'); works without an LM too",
    )
    group.add_argument(
        "--hotword-boost",
        type=float,
        default=DEFAULT_BOOST,
        help=f"how far a hotword may trail what was heard, nats per letter (default {DEFAULT_BOOST})",
    )
    if file:
        group.add_argument("--lm-weight", type=float, help="LM score scale (default: the bundle's, tuned)")
        group.add_argument(
            "--insertion-bonus", type=float, help="score added per character (default: the bundle's, tuned)"
        )


def transcribe_options(args: argparse.Namespace) -> TranscribeOptions:
    """The decoding options of `file` and `listen`, from the flags above (and file's --chunk-seconds).

    A flag the command does not have (listen: --chunk-seconds, --lm-weight, --insertion-bonus) keeps
    the default: the bundle's tuned beam settings. A bad beam value is an InputError, even without an LM.
    """
    return TranscribeOptions(
        blank_penalty=args.blank_penalty,
        chunk_seconds=getattr(args, "chunk_seconds", TranscribeOptions.chunk_seconds),
        use_lm=args.use_lm,
        use_word_lm=args.use_word_lm,
        hotwords=Hotwords.from_file(args.hotwords, args.hotword_boost) if args.hotwords else None,
        decoder=args.decoder,
        lowercase=args.lowercase,
        ctc_weight=args.ctc_weight,
        decoder_beam=args.decoder_beam,
        beam=tuned_beam_options(
            args.model,
            beam_size=args.beam_size,
            lm_weight=getattr(args, "lm_weight", None),
            insertion_bonus=getattr(args, "insertion_bonus", None),
        ),
    )


def add_command_args(parser: argparse.ArgumentParser) -> None:
    """The "voice commands" group: --grammar, --min-confidence (file and listen)."""
    group = parser.add_argument_group(
        "voice commands",
        "recognize one of a fixed set of phrases instead of free text (see docs/commands.md)",
    )
    group.add_argument(
        "--grammar",
        metavar="FILE",
        help="phrases one a line, Home Assistant style templates, or JSON from Grammar.save",
    )
    group.add_argument(
        "--min-confidence",
        type=float,
        default=DEFAULT_MIN_CONFIDENCE,
        help=f"below it an utterance is no command (0-1, default {DEFAULT_MIN_CONFIDENCE})",
    )


def load_grammar(args: argparse.Namespace) -> Optional[Grammar]:
    """The --grammar file's grammar, or None; InputError for a bad file or --min-confidence."""
    limits.MIN_CONFIDENCE.check(args.min_confidence, "--min-confidence")
    return Grammar.from_file(args.grammar) if args.grammar else None
