"""Desktop side: fine-tune CTC models (wav2vec2 family, whisper-ctc) and build training corpora.

Needs the `train` extra."""
