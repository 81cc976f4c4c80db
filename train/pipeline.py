"""One training run, start to finish: data -> vocabulary -> model -> Trainer -> model folder.

`run_training` is its steps in order, each a function below it: `start_run` (run folder, resume,
device), `load_data` (splits, vocabulary, the run's record), `build_model`, `build_trainer` (datasets,
augmentation, metrics, callbacks), `train_model` and `evaluate_and_save` (run/model, metrics.json).

Run folder (``--output-dir``)::

    train_config.yaml        the resolved options (feed back with --config)
    versions.json            exact package versions
    *.resumed.*              the same records for the latest --resume (the originals are kept)
    text_normalization.json  how labels were normalized
    vocab.json               the vocabulary (id 0 = [PAD] = CTC blank)
    splits/train.csv         the rows trained on (path,text,seconds,origin)
    splits/validation.csv    the rows scored on
    dropped.csv              every row left out, with the reason
    impulse_responses/       synthetic reverb impulse responses (when reverb is on)
    checkpoints/checkpoint-N complete model folders with optimizer state (resume from the last)
    tensorboard/             scalars and decoded examples
    model/                   the final model: the best checkpoint by validation CER
    metrics.json             the final model's validation scores

Under torchrun every process prepares the same data (deterministically); only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge_asr.atomic import replace_folder, write_text_atomic
from edge_asr.text import TextNormalization

from . import data as D
from . import model as M
from . import vocab as V
from .augment import AugmentOptions, make_impulse_responses
from .config import ConfigError, TrainConfig, save_config
from .trainer import NORMALIZATION_FILE, TrainError
from .versions import package_versions

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MODEL = "model"


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    model_dir: Path
    cer: float
    wer: float
    steps: int
    stopped_early: bool
    train_rows: int
    validation_rows: int
    report: D.FilterReport = field(default_factory=D.FilterReport)
    log_history: List[Dict[str, float]] = field(default_factory=list)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def last_checkpoint(folder: Path) -> Optional[Path]:
    steps = []
    for path in folder.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / "trainer_state.json").is_file():
            steps.append((int(suffix), path))
    return max(steps)[1] if steps else None


def _resolve_device(config: TrainConfig) -> Tuple[bool, str]:
    """(use_cpu, precision) with the GPU/CPU rules applied."""
    import torch

    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise ConfigError(
            "--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu (slow) or fix the driver"
        )
    use_cpu = config.device == "cpu" or not cuda
    precision = config.precision
    if precision == "auto":
        if use_cpu:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if use_cpu and precision == "bf16" and not cpu_has_native_bf16():
        log.warning(
            "--precision bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): PyTorch emulates it, "
            "and a training step ran ~50x slower than fp32 on such a CPU (AMD EPYC, AVX2 only). "
            "Use --precision fp32 or auto."
        )
    if use_cpu and precision == "fp16":
        raise ConfigError(
            "--precision fp16 on CPU: fp16 autocast on CPU ran ~10x slower than fp32 here. "
            "Use --precision fp32, or bf16 on a CPU with native bf16 (AVX512-BF16/AMX: ~1.9x faster)."
        )
    if not use_cpu and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16: this GPU has no bf16 support; use --precision fp16")
    return use_cpu, precision


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 matmuls in hardware (where bf16 autocast is ~1.9x faster than fp32
    rather than far slower). torch.cpu's probes are private, hence the /proc/cpuinfo fallback."""
    import torch

    probes = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    if all(callable(probe) for probe in probes):
        return any(probe() for probe in probes)  # type: ignore[misc]
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def prepare_data(config: TrainConfig, run_dir: Path, model_config, normalization, resuming: bool):
    """Read, check, split and encode the data. Returns (train rows, val rows, vocabulary, report)."""
    report = D.FilterReport()
    field_, _ = M.frame_geometry(model_config)
    limits = D.AudioLimits(
        min_samples=max(field_, int(config.min_seconds * D.SAMPLE_RATE)),
        max_samples=int(config.max_seconds * D.SAMPLE_RATE),
        min_frames=M.min_frames(model_config),
        frames=lambda n: M.output_frames(model_config, n),
    )
    splits = run_dir / "splits"
    if resuming and (splits / "train.csv").is_file() and (splits / "validation.csv").is_file():
        log.info("resuming: reusing the saved splits in %s", splits)
        train_rows = D.read_source(str(splits / "train.csv"), report)
        val_rows = D.read_source(str(splits / "validation.csv"), report)
        train_rows = D.check_audio(D.normalize_labels(train_rows, normalization, report), limits, report)
        val_rows = D.check_audio(D.normalize_labels(val_rows, normalization, report), limits, report)
    else:
        rows = D.read_sources(config.data, report)
        rows = D.normalize_labels(rows, normalization, report)
        rows = D.check_audio(rows, limits, report, progress=_rank() == 0)
        if config.validation_data:
            train_rows = rows
            val_rows = D.read_sources(config.validation_data, report)
            val_rows = D.check_audio(D.normalize_labels(val_rows, normalization, report), limits, report)
        else:
            train_rows, val_rows = D.split_rows(rows, config.validation_fraction, config.seed)

    saved_vocab = run_dir / "vocab.json"
    if resuming and saved_vocab.is_file():
        vocabulary = V.load_vocabulary(saved_vocab)
    elif config.vocab:
        vocabulary = V.load_vocabulary(Path(config.vocab))
    else:
        vocabulary = V.build_vocabulary((r.label for r in train_rows), config.min_char_count)
    encode = V.encoder(vocabulary)
    train_rows = D.check_labels(train_rows, vocabulary, encode, limits.frames, report)
    val_rows = D.check_labels(val_rows, vocabulary, encode, limits.frames, report)
    report.kept = len(train_rows) + len(val_rows)
    if not train_rows:
        raise D.DataError(f"no usable training utterances.\n{report.summary()}")
    if not val_rows:
        raise D.DataError(f"no usable validation utterances.\n{report.summary()}")
    val_rows.sort(key=lambda r: r.samples)
    return train_rows, val_rows, vocabulary, report


def _write_run_files(
    config, run_dir, normalization, vocabulary, train_rows, val_rows, report, resuming
) -> None:
    """The run's record. A resumed run keeps the first invocation's files and adds *.resumed.* ones."""
    run_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".resumed" if resuming else ""
    save_config(config, run_dir / f"train_config{suffix}.yaml")
    write_text_atomic(run_dir / f"versions{suffix}.json", json.dumps(package_versions(), indent=2) + "\n")
    if not resuming or report.dropped:
        report.write_csv(run_dir / f"dropped{suffix}.csv")
    write_text_atomic(run_dir / NORMALIZATION_FILE, json.dumps(normalization.to_dict(), indent=2) + "\n")
    V.save_vocabulary(vocabulary, run_dir / "vocab.json")
    D.write_split(train_rows, run_dir / "splits" / "train.csv")
    D.write_split(val_rows, run_dir / "splits" / "validation.csv")


def _check_resume(config: TrainConfig, run_dir: Path, normalization) -> Optional[Path]:
    checkpoint = last_checkpoint(run_dir / CHECKPOINTS)
    if checkpoint is not None and not config.resume:
        raise ConfigError(
            f"{run_dir} holds checkpoints of an earlier run (last: {checkpoint.name}). Pass --resume to "
            "continue it, or choose another --output-dir."
        )
    if config.resume and checkpoint is None:
        log.warning("--resume: no checkpoint in %s yet; starting from the beginning", run_dir / CHECKPOINTS)
    saved = run_dir / NORMALIZATION_FILE
    if config.resume and saved.is_file():
        previous = json.loads(saved.read_text(encoding="utf-8"))
        if previous != normalization.to_dict():
            raise ConfigError(
                f"--resume: the text normalization differs from the run's ({saved}); resume with the same "
                "--lowercase/--keep-punctuation/--strip-accents/--alphabet options"
            )
    return checkpoint if config.resume else None


def training_arguments(config: TrainConfig, run_dir: Path, use_cpu: bool, precision: str, model_config):
    from transformers import TrainingArguments

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Parameters unused in a step (SpecAugment's mask embedding when masking is off, layers skipped by
    # layerdrop) make DDP hang unless it is told to look for them.
    unused = model_config.mask_time_prob == 0 or model_config.layerdrop > 0
    return TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup,
        lr_scheduler_type="cosine",
        optim="adamw_torch",
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="cer",
        greater_is_better=False,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to="none",  # the TensorBoard callback is added by hand, pointed at run/tensorboard
        dataloader_num_workers=config.num_workers,
        remove_unused_columns=False,
        label_names=["labels"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=use_cpu,
        seed=config.seed,
        ddp_backend="gloo" if (use_cpu and distributed) else None,
        ddp_find_unused_parameters=unused if distributed else None,
        log_level=config.log_level if config.log_level != "info" else "passive",
        **_version_dependent_arguments(config),
    )


def _version_dependent_arguments(config: TrainConfig) -> Dict[str, Any]:
    """Options renamed in transformers 5 (length grouping, activation checkpointing).

    Dict[str, Any]: which names exist depends on the installed transformers, so no static type of
    TrainingArguments can check them; each value is what that version's field takes.
    """
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    extra: Dict[str, Any] = {}
    if "train_sampling_strategy" in names:
        extra["train_sampling_strategy"] = "group_by_length" if config.group_by_length else "random"
    else:
        extra["group_by_length"] = config.group_by_length
    if config.gradient_checkpointing:
        key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
        extra[key] = True
    return extra


def run_training(config: TrainConfig) -> RunResult:
    """Train as `config` says; returns where the model went and how it scored."""
    config.validate()
    run = start_run(config)
    data = load_data(config, run)
    model = build_model(config, run, data.vocabulary)
    trainer = build_trainer(config, run, data, model)
    train_model(trainer, config, run.checkpoint)
    return evaluate_and_save(trainer, run, data, model)


# ----------------------------------------------------------------------------------------------
# the steps of run_training, in order


@dataclass
class RunSetup:
    """Where a run writes and how it computes; decided before any data is read."""

    dir: Path
    main_process: bool  # rank 0 (the only process without torchrun): the one that writes files
    normalization: TextNormalization
    checkpoint: Optional[Path]  # the checkpoint to resume from
    resuming: bool  # a resumed run with saved splits: reuse them and its vocabulary
    use_cpu: bool
    precision: str  # fp32, bf16 or fp16, resolved from --precision and the hardware


@dataclass
class TrainingData:
    """The checked, labelled splits and the vocabulary they are encoded with."""

    train_rows: List[D.Utterance]
    val_rows: List[D.Utterance]
    vocabulary: Dict[str, int]
    report: D.FilterReport


@dataclass
class ModelParts:
    """The network, its (final, vocabulary-sized) config and the processor saved beside it."""

    config: Any  # a transformers Wav2Vec2Config
    processor: Any  # a Wav2Vec2Processor
    net: Any  # a Wav2Vec2ForCTC


def start_run(config: TrainConfig) -> RunSetup:
    """Check --resume against the run folder, pick the device and precision, set the CPU threads."""
    import torch

    run_dir = Path(config.output_dir).resolve()
    normalization = config.text_normalization()
    checkpoint = _check_resume(config, run_dir, normalization)
    use_cpu, precision = _resolve_device(config)
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    return RunSetup(
        dir=run_dir,
        main_process=_rank() == 0,
        normalization=normalization,
        checkpoint=checkpoint,
        resuming=config.resume and (run_dir / "splits").is_dir(),
        use_cpu=use_cpu,
        precision=precision,
    )


def load_data(config: TrainConfig, run: RunSetup) -> TrainingData:
    """Read, check and split the data against the model's frame geometry; write the run's record."""
    probe_config = M.load_model_config(config.model, config.init_from_config, config.model_overrides)
    log.info("model geometry: %s", M.describe_geometry(probe_config))
    train_rows, val_rows, vocabulary, report = prepare_data(
        config, run.dir, probe_config, run.normalization, run.resuming
    )
    if report.dropped:
        log.warning("data: %s", report.summary())
    log.info(
        "train: %s; validation: %s; vocabulary: %d tokens",
        D.summarize(train_rows),
        D.summarize(val_rows),
        len(vocabulary),
    )
    if run.main_process:
        _write_run_files(
            config, run.dir, run.normalization, vocabulary, train_rows, val_rows, report, run.resuming
        )
    return TrainingData(train_rows, val_rows, vocabulary, report)


def build_model(config: TrainConfig, run: RunSetup, vocabulary: Dict[str, int]) -> ModelParts:
    """The model config sized to the vocabulary, the processor, and the network (pretrained or new)."""
    from_scratch = bool(config.init_from_config)
    model_config = M.load_model_config(
        config.model, config.init_from_config, config.model_overrides, len(vocabulary), vocabulary[V.PAD]
    )
    vocab_file = run.dir / "vocab.json"
    if not run.main_process:  # rank 0 may not have written it yet; every rank builds the same one
        vocab_file = run.dir / f".vocab.rank{_rank()}.json"
        V.save_vocabulary(vocabulary, vocab_file)
    processor = V.make_processor(
        vocab_file, M.uses_attention_mask(model_config), M.pretrained_do_normalize(config.model, from_scratch)
    )
    net = M.build_model(model_config, config.model, from_scratch, config.freeze_feature_encoder, config.seed)
    return ModelParts(model_config, processor, net)


def build_trainer(config: TrainConfig, run: RunSetup, data: TrainingData, model: ModelParts):
    """The datasets (augmented training split), CER/WER metrics, callbacks and the CTCTrainer."""
    from .dataset import CTCCollator, SpeechDataset, usable_workers
    from .trainer import CTCTrainer

    encode = V.encoder(data.vocabulary)
    frames = lambda n: M.output_frames(model.config, n)  # noqa: E731
    do_normalize = model.processor.feature_extractor.do_normalize
    augment = augmentation(config, run)
    train_set = SpeechDataset(data.train_rows, encode, frames, do_normalize, augment)
    val_set = SpeechDataset(data.val_rows, encode, frames, do_normalize, None)
    config.num_workers = usable_workers(config.num_workers)

    metrics = _metrics(config, run, data.vocabulary)
    callbacks = _callbacks(config, run, metrics, model.processor)
    args = training_arguments(config, run.dir, run.use_cpu, run.precision, model.config)
    trainer = CTCTrainer(
        model=model.net,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=CTCCollator(M.uses_attention_mask(model.config)),
        processing_class=model.processor,
        compute_metrics=metrics,
        callbacks=callbacks,
        train_lengths=train_set.lengths,
    )
    log.info(
        "training on %s x %d process(es)%s, precision %s, %d DataLoader worker(s), effective batch %d",
        "cpu" if run.use_cpu else "cuda",
        args.world_size,
        f" ({args.ddp_backend or 'default'} backend)" if args.world_size > 1 else "",
        run.precision,
        config.num_workers,
        config.batch_size * config.grad_accum * args.world_size,
    )
    return trainer


def augmentation(config: TrainConfig, run: RunSetup) -> Optional[AugmentOptions]:
    """The training split's augmentation (None when off), with this run's synthetic impulse responses
    written when reverb is on: in the run folder by rank 0, in a private folder by the other ranks."""
    options = config.augment
    if not options.enabled:
        return None
    if options.reverb_p <= 0:
        return options
    impulse_dir = run.dir / ("impulse_responses" if run.main_process else f".impulse_responses.rank{_rank()}")
    make_impulse_responses(impulse_dir, options.reverb_rt60, seed=config.seed)
    return dataclasses.replace(options, impulse_dir=str(impulse_dir))


def _metrics(config: TrainConfig, run: RunSetup, vocabulary: Dict[str, int]):
    from .trainer import MetricComputer

    return MetricComputer(
        tokens=[t for t, _ in sorted(vocabulary.items(), key=lambda kv: kv[1])],
        blank_id=vocabulary[V.PAD],
        delimiter=V.DELIMITER,
        silent_ids=[vocabulary[t] for t in (V.PAD, V.UNK) if t in vocabulary],
        normalization=run.normalization,
        keep_examples=config.logged_examples,
    )


def _callbacks(config: TrainConfig, run: RunSetup, metrics, processor) -> List[Any]:
    """TensorBoard (in run/tensorboard), decoded examples, complete checkpoint folders, early stopping."""
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_callback import EarlyStoppingCallback

    from .trainer import CheckpointCompleter, EvalReporter

    tensorboard = TensorBoardCallback()
    tensorboard.logging_dir = str(run.dir / "tensorboard")
    callbacks: List[Any] = [
        tensorboard,
        EvalReporter(metrics, tensorboard),
        CheckpointCompleter(processor, run.normalization),
    ]
    if config.early_stopping_patience > 0:
        callbacks.append(
            EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold)
        )
    return callbacks


def train_model(trainer, config: TrainConfig, checkpoint: Optional[Path]) -> None:
    """Run the Trainer (from `checkpoint` when resuming); a GPU out-of-memory becomes a TrainError that
    says which options to change."""
    import torch

    from .trainer import describe_oom

    if checkpoint is not None:
        log.info("resuming from %s", checkpoint)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.OutOfMemoryError as exc:
        raise TrainError(describe_oom(trainer, config.batch_size, config.grad_accum)) from exc


def evaluate_and_save(trainer, run: RunSetup, data: TrainingData, model: ModelParts) -> RunResult:
    """Score the best model on the validation split and write it as run/model (a complete model folder,
    replaced in one step) with metrics.json; clean up the other ranks' private files."""
    from .trainer import complete_model_folder

    final = trainer.evaluate()
    stopped_early = _stopped_early(trainer)
    model_dir = run.dir / MODEL
    partial = run.dir / f".{MODEL}.partial"
    if run.main_process and partial.exists():
        shutil.rmtree(partial)
    trainer.save_model(str(partial))  # collective under DDP; rank 0 writes
    if run.main_process:
        complete_model_folder(partial, model.processor, run.normalization)
        (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run folder keeps the config
        summary = {
            "cer": final.get("eval_cer"),
            "wer": final.get("eval_wer"),
            "loss": final.get("eval_loss"),
            "steps": trainer.state.global_step,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "stopped_early": stopped_early,
            "validation_utterances": len(data.val_rows),
        }
        write_text_atomic(run.dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
        replace_folder(partial, model_dir)
        for stray in run.dir.glob(".*.rank*"):
            shutil.rmtree(stray, ignore_errors=True) if stray.is_dir() else stray.unlink(missing_ok=True)
        log.info(
            "model written to %s (validation CER %.4f, WER %.4f)",
            model_dir,
            final["eval_cer"],
            final["eval_wer"],
        )
    return RunResult(
        run_dir=run.dir,
        model_dir=model_dir,
        cer=float(final["eval_cer"]),
        wer=float(final["eval_wer"]),
        steps=trainer.state.global_step,
        stopped_early=stopped_early,
        train_rows=len(data.train_rows),
        validation_rows=len(data.val_rows),
        report=data.report,
        log_history=list(trainer.state.log_history),
    )


def _stopped_early(trainer) -> bool:
    from transformers.trainer_callback import EarlyStoppingCallback

    stopper = next(
        (c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)), None
    )
    return bool(stopper and stopper.early_stopping_patience_counter >= stopper.early_stopping_patience)
