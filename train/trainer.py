"""transformers' `Trainer`, specialised for CTC.

Why Trainer rather than a hand-written loop or bare Accelerate: it already does, tested, everything
the issue lists around the loss - AdamW with warmup + cosine, bf16/fp16 autocast, clipping,
accumulation, DDP under torchrun (through Accelerate), checkpoints with optimizer/scheduler/RNG state
and resume, early stopping, best-checkpoint tracking in safetensors and TensorBoard scalars. What it
gets wrong for wav2vec2 CTC is overridden here:

* the loss: Wav2Vec2ForCTC derives each item's frame count from the attention mask, so base-style
  (group-norm) models, which must not get a mask, would be scored as if every item were as long as
  the longest one. `compute_loss` uses the true lengths the collator sends.
* evaluation keeps only greedy ids per frame (not [frames, vocab] logits) with padding frames
  blanked out, so the metrics see exactly what the device would decode.
* the length-grouped sampler gets lengths from the manifest instead of decoding every file.
* a non-finite training loss stops the run (TrainError) before it reaches the weights, and no
  checkpoint is written from weights that hold NaN or Inf: Trainer would go on, save NaN tensors
  as checkpoints and the final model, and exit 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from edge_asr.atomic import write_text_atomic
from edge_asr.text import TextNormalization

from .metrics import count_errors, ids_to_text

log = logging.getLogger(__name__)

NORMALIZATION_FILE = "text_normalization.json"


class TrainError(RuntimeError):
    """Training stopped for a reason the user can act on (the message says how)."""


def ctc_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    frames: torch.Tensor,
    blank_id: int,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """CTC loss over [batch, frames, vocab] logits with each item's own frame count.

    Same computation as Wav2Vec2ForCTC's (float32 log-softmax, cuDNN off, -100 = padding), but with
    `frames` given rather than inferred from an attention mask.
    """
    mask = labels >= 0
    target_lengths = mask.sum(-1)
    targets = labels.masked_select(mask)
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    with torch.backends.cudnn.flags(enabled=False):
        return F.ctc_loss(
            log_probs,
            targets,
            frames,
            target_lengths,
            blank=blank_id,
            reduction=reduction,
            zero_infinity=zero_infinity,
        )


def output_frames_tensor(config, lengths: torch.Tensor) -> torch.Tensor:
    """Frames per item from sample counts (tensor twin of `model.output_frames`)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    if getattr(config, "add_adapter", False):
        for _ in range(config.num_adapter_layers):
            lengths = torch.div(lengths - 1, config.adapter_stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


class CTCTrainer(Trainer):
    """Trainer with the true-length CTC loss, greedy-id evaluation and manifest-length batching."""

    def __init__(self, *args, train_lengths: Optional[Sequence[int]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        # Our loss is already a per-batch mean: let Trainer divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.train_lengths = list(train_lengths) if train_lengths is not None else None
        self.last_batch: Tuple[int, int, int] = (0, 0, 0)  # (utterances, padded samples, step)

    def _get_train_sampler(self, train_dataset=None):
        grouped = getattr(self.args, "train_sampling_strategy", None) == "group_by_length" or getattr(
            self.args, "group_by_length", False
        )
        if grouped and self.train_lengths is not None:
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=self.train_lengths
            )
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        # The validation split is stored sorted by length, so plain order already groups lengths.
        if self.args.world_size <= 1:
            return torch.utils.data.SequentialSampler(eval_dataset)
        return None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        lengths = inputs.pop("input_lengths")
        labels = inputs.pop("labels")
        self.last_batch = (
            int(lengths.shape[0]),
            int(inputs["input_values"].shape[1]),
            self.state.global_step,
        )
        outputs = model(**inputs)
        logits = outputs.logits
        config = self.accelerator.unwrap_model(model).config
        frames = output_frames_tensor(config, lengths).clamp(max=logits.shape[1])
        loss = ctc_loss(
            logits, labels, frames, config.pad_token_id, config.ctc_loss_reduction, config.ctc_zero_infinity
        )
        # Checked before backward(), so a NaN never reaches the gradients or the weights. One sync per
        # step: small beside a wav2vec2 forward and backward pass.
        if model.training and not bool(torch.isfinite(loss).all()):
            raise TrainError(describe_non_finite_loss(self, float(loss.detach().float().mean())))
        if return_outputs:
            return loss, {"logits": logits, "frames": frames}
        return loss

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False):
        """Trainer's save (checkpoints and the final model), refused for weights that are not finite."""
        bad = non_finite_parameters(self.model) if self.model is not None else []
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise TrainError(
                f"the model's weights hold NaN or Inf ({shown}) at step {self.state.global_step}; nothing "
                f"was saved to {output_dir or self.args.output_dir}. Lower --learning-rate or use "
                "--precision fp32, and resume from the last checkpoint with --resume"
            )
        return super().save_model(output_dir, _internal_call)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        labels = inputs["labels"]
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        ids = outputs["logits"].argmax(-1)
        positions = torch.arange(ids.shape[1], device=ids.device)[None, :]
        ids = ids.masked_fill(positions >= outputs["frames"][:, None], -100)
        return loss.detach(), ids, labels


@dataclass
class MetricComputer:
    """`compute_metrics` for the Trainer: greedy ids -> text -> CER/WER on normalized text."""

    tokens: List[str]
    blank_id: int
    delimiter: str
    silent_ids: Sequence[int]
    normalization: TextNormalization
    keep_examples: int = 4
    examples: List[Tuple[str, str]] = field(default_factory=list)

    def __call__(self, prediction) -> Dict[str, float]:
        hyps = [
            ids_to_text(row, self.tokens, self.blank_id, self.delimiter, self.silent_ids)
            for row in np.asarray(prediction.predictions)
        ]
        refs = [
            ids_to_text(row, self.tokens, self.blank_id, self.delimiter, self.silent_ids, collapse=False)
            for row in np.asarray(prediction.label_ids)
        ]
        counts = count_errors(refs, hyps, self.normalization)
        # Spread over the split (it is sorted by length), not just the shortest few.
        picks = sorted(
            set(np.linspace(0, len(refs) - 1, min(self.keep_examples, len(refs))).astype(int).tolist())
        )
        self.examples = [(refs[i], hyps[i]) for i in picks] if self.keep_examples > 0 else []
        return counts.as_dict()


class EvalReporter(TrainerCallback):
    """Writes decoded validation examples to TensorBoard (as text) and a one-line summary to the log."""

    def __init__(self, metrics: MetricComputer, tensorboard):
        self.metrics = metrics
        self.tensorboard = tensorboard  # transformers' TensorBoardCallback: we reuse its writer

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        log.info(
            "step %d: validation loss %.4f, CER %.4f, WER %.4f",
            state.global_step,
            metrics.get("eval_loss", float("nan")),
            metrics.get("eval_cer", float("nan")),
            metrics.get("eval_wer", float("nan")),
        )
        for ref, hyp in self.metrics.examples:
            log.info("  ref: %s\n  hyp: %s", ref, hyp)
        writer = getattr(self.tensorboard, "tb_writer", None)
        if writer is not None and self.metrics.examples:
            rows = ["| reference | greedy decode |", "|---|---|"]
            rows += [f"| {ref} | {hyp or '(empty)'} |" for ref, hyp in self.metrics.examples]
            writer.add_text("eval/examples", "\n".join(rows), state.global_step)
            writer.flush()


class CheckpointCompleter(TrainerCallback):
    """Makes every checkpoint a complete model folder for quantize/: adds preprocessor_config.json and
    text_normalization.json, which Trainer does not write."""

    def __init__(self, processor, normalization: TextNormalization):
        self.processor = processor
        self.normalization = normalization

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            complete_model_folder(folder, self.processor, self.normalization)


def complete_model_folder(folder: Path, processor, normalization: TextNormalization) -> None:
    """Tokenizer, feature extractor and normalization files beside config.json + model.safetensors."""
    import json

    processor.save_pretrained(str(folder))
    # transformers 5 folds the feature extractor into processor_config.json; the contract with
    # quantize/ (and older transformers) wants preprocessor_config.json as well.
    processor.feature_extractor.save_pretrained(str(folder))
    write_text_atomic(folder / NORMALIZATION_FILE, json.dumps(normalization.to_dict(), indent=2) + "\n")


def non_finite_parameters(model: torch.nn.Module) -> List[str]:
    """Names of the parameters that hold NaN or Inf."""
    return [name for name, value in model.named_parameters() if not bool(torch.isfinite(value).all())]


def describe_non_finite_loss(trainer: CTCTrainer, loss: float) -> str:
    items, samples, step = trainer.last_batch
    return (
        f"the training loss became {loss} at step {step + 1}, on a batch of {items} utterances padded to "
        f"{samples} samples; training stopped before that step could change the weights, so no "
        "checkpoint holds NaN. Usual causes: NaN or infinite audio that the data checks did not see "
        "(files changed since, augmentation), a learning rate too high (--learning-rate), fp16 overflow "
        "(--precision bf16 or fp32). Fix it and continue with --resume from the last checkpoint."
    )


def describe_oom(trainer: CTCTrainer, batch_size: int, grad_accum: int) -> str:
    items, samples, step = trainer.last_batch
    return (
        f"GPU out of memory at step {step} on a batch of {items} utterances padded to {samples} samples "
        f"({samples / 16000:.1f} s each). Use a smaller --batch-size with more --grad-accum to keep the "
        f"effective batch (e.g. --batch-size {max(1, batch_size // 2)} --grad-accum {grad_accum * 2}), "
        "lower --max-seconds, or add --gradient-checkpointing."
    )
