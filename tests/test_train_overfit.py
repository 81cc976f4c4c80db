"""train/: the whole loop can learn - a tiny model fits a handful of utterances to greedy CER 0 (slow)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402
from test_train_data import make_ljspeech, tiny_config  # noqa: E402

from train.data import load_audio  # noqa: E402
from train.dataset import normalize_samples  # noqa: E402
from train.metrics import count_errors, ids_to_text  # noqa: E402
from train.pipeline import run_training  # noqa: E402

pytestmark = [pytest.mark.desktop, pytest.mark.slow]

PHRASES = ["yes", "no", "go left", "stop now"]


def test_tiny_model_overfits_to_greedy_cer_zero(tmp_path):
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    data = make_ljspeech(tmp_path / "data", PHRASES)
    # Train and score on the same four utterances; no augmentation, so fitting them is possible.
    config = tiny_config(
        tmp_path,
        [data],
        validation_data=[str(data)],
        max_steps=600,
        eval_steps=100,
        logging_steps=100,
        learning_rate=3e-3,
        warmup=50,
        early_stopping_patience=0,
    )
    result = run_training(config)
    assert result.cer == 0.0, [h for h in result.log_history if "eval_cer" in h]

    # The saved folder, loaded as quantize/ will load it, decodes each file alone to its transcript.
    model = Wav2Vec2ForCTC.from_pretrained(result.model_dir).eval()
    processor = Wav2Vec2Processor.from_pretrained(result.model_dir)
    tokens = processor.tokenizer.convert_ids_to_tokens(list(range(len(processor.tokenizer))))
    hyps = []
    for i in range(len(PHRASES)):
        audio = normalize_samples(load_audio(str(data / "wavs" / f"utt{i:03d}.wav")))
        with torch.no_grad():
            ids = model(torch.from_numpy(audio)[None]).logits[0].argmax(-1).tolist()
        hyps.append(ids_to_text(ids, tokens, processor.tokenizer.pad_token_id))
    assert count_errors([p.capitalize() + "." for p in PHRASES], hyps).cer == 0.0, hyps
