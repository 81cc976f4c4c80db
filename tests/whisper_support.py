"""A tiny random Whisper with a text decoder (d_model 64, 2+2 layers, 100 tokens), saved the way
`train.whisper_import --include-decoder` saves a real one: for the decoder's export and distillation
tests."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from edge_asr.attention import _bytes_to_unicode

VOCAB = 100
EOT, START = 96, 97


def token_strings() -> List[str]:
    """Letters, " letter" pieces, the space marker, marks and digits in GPT-2's byte form, fillers,
    then 4 specials (end of text, start of transcript, two more)."""
    table = _bytes_to_unicode()
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    text = letters + [table[32] + c for c in letters] + [table[32]]
    text += list(".,!?'-") + [str(d) for d in range(10)]
    text += [table[ord("A") + i] for i in range(VOCAB - 4 - len(text))]
    return text + ["<|endoftext|>", "<|startoftranscript|>", "<|a|>", "<|b|>"]


def save_tiny_whisper(
    folder: Path, *, pad_token_id: int = EOT, embed_scale: float = 1.0, suppress: Sequence[int] = ()
) -> None:
    """A random WhisperForConditionalGeneration (seed 0) in `folder`. Whisper pads with end of text;
    `pad_token_id` elsewhere keeps EOT's embedding row from starting at zero, and `embed_scale` gives
    the token table a trained table's scale (at init, std 0.02, no logit can win by much)."""
    import torch
    import transformers

    config = transformers.WhisperConfig(
        d_model=64, encoder_layers=2, encoder_attention_heads=4, decoder_layers=2,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
        vocab_size=VOCAB, pad_token_id=pad_token_id, bos_token_id=EOT, eos_token_id=EOT,
        decoder_start_token_id=START, max_target_positions=64,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config)
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight.mul_(embed_scale)
    model.generation_config.suppress_tokens = list(suppress)
    model.generation_config.begin_suppress_tokens = [EOT]
    model.save_pretrained(str(folder))
