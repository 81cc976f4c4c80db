"""Desktop side: fine-tune wav2vec2 CTC models and build training corpora (needs the `train` extra)."""
