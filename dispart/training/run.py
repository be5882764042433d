"""``train(cfg, out_dir)``: data -> model -> Lightning fit -> a run folder (see dispart.runs)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from dispart.batches.modality import ModalitySpec
from dispart.batches.pipeline import SPLITS, ExperimentData, load_experiment_data
from dispart.config import ExperimentConfig, ModelConfig, model_params, save_config, validate_config
from dispart.errors import ConfigError, RunDirError
from dispart.features.augment import Augment, RandomShift, RandomWarp
from dispart.files import atomic_write_json
from dispart.models import build_model
from dispart.runs import load_run, save_run
from dispart.training import stages
from dispart.training.averaging import EpochAveraging
from dispart.training.datamodule import EpochPairing, ImageLabelDataModule, PairedDataModule
from dispart.training.module import LitModel
from dispart.training.monitor import PurityMonitor
from dispart.training.resume import (
    RngState,
    SafeCheckpointIO,
    is_launched_worker,
    prepare_run_folder,
    remove_partial_writes,
    resume_checkpoint,
)
from dispart.training.threads import FastestThreads


def modality_specs(cfg: ExperimentConfig, data: ExperimentData | None = None) -> dict[str, ModalitySpec]:
    """The modalities a config can name, as the model sees them.

    Speech features, digit images and digit labels are described by the config (``data.n_mels``,
    ``data.binarize``, ``model.image_net``: (1, 28, 28) images for the CNN, (784,) vectors for
    the MLP), so a model can be checked before any data is loaded. Every other modality of
    ``data`` (e.g. "video" of ``data.loader=grid``, whose frame shape only the data knows) comes
    from the data: ``data.spec(m)``; so does an "audio" modality whose frames are not
    ``data.n_mels`` log-Mel bands (``data.loader=grid_clips``: power spectrogram frames).
    """
    if cfg.model.image_net not in ("cnn", "mlp"):
        raise ConfigError(f"model.image_net must be 'cnn' or 'mlp', got {cfg.model.image_net!r}")
    likelihood = "gaussian" if cfg.data.binarize == "none" else "bernoulli"
    image = (ModalitySpec("image", "image", (1, 28, 28), likelihood) if cfg.model.image_net == "cnn"
             else ModalitySpec("image", "vector", (28 * 28,), likelihood))
    specs = {
        "audio": ModalitySpec("audio", "sequence", (cfg.data.n_mels,)),
        "image": image,
        "label": ModalitySpec("label", "categorical", (10,), "categorical"),
    }
    if data is not None:
        specs.update({m: data.spec(m) for m in data.modalities if m not in specs})
        # "audio" that is not log-Mel frames of data.n_mels (the grid_clips loader's power
        # spectrogram frames): the data's spec
        if "audio" in data.modalities and data.spec("audio").shape != specs["audio"].shape:
            specs["audio"] = data.spec("audio")
    return specs


def uses_speech(cfg: ExperimentConfig) -> bool:
    return "audio" in cfg.model.modalities


def needs_data(cfg: ExperimentConfig) -> bool:
    """Whether the model names a modality only the data describes (see :func:`modality_specs`)."""
    known = modality_specs(cfg)
    return any(m not in known for m in cfg.model.modalities)


def model_hparams(cfg: ExperimentConfig, data: ExperimentData | None = None) -> dict[str, Any]:
    """Plain-data model description from the config (the input of build_model):
    ``{"name", "modalities": [spec dicts], **the fields of the model's config dataclass}``.

    Built from the registry entry of ``cfg.model.name`` (no per-model code here). The model is
    built once on the meta device (no memory, the RNG untouched), so a combination its constructor
    refuses (e.g. vae with two modalities) is a ConfigError before any data is loaded. A
    modality only the data describes (:func:`needs_data`) needs ``data``.
    """
    m: ModelConfig = cfg.model
    specs = modality_specs(cfg, data)
    unknown = [name for name in m.modalities if name not in specs]
    if unknown:
        where = ("" if data is not None else
                 " (a modality such as 'video' comes from data.loader: pass the loaded data)")
        raise ConfigError(f"model.modalities: unknown {unknown}; available {list(specs)}{where}")
    try:
        params = model_params(m)  # ValueError: not a registered model
    except ValueError as e:
        raise ConfigError(f"model.name: {e}") from None
    hparams = {"name": m.name, "modalities": [specs[name].to_dict() for name in m.modalities],
               **dataclasses.asdict(params)}
    if hparams.get("alpha_speaker", 0) > 0:
        hparams["speaker_classes"] = _speaker_classes(hparams["speaker_classes"], data)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            build_model(hparams)
    except ValueError as e:
        raise ConfigError(f"model ({m.name}, modalities {m.modalities}): {e}") from None
    return hparams


def _speaker_classes(configured: int, data: ExperimentData | None) -> int:
    """``model.speaker_classes`` of the speaker penalty (``model.alpha_speaker``): the number of
    speakers of the training speech (0 in the config: taken from the data; another number than
    the data's is a ConfigError). Without data (the early check of the config) a stand-in >= 2."""
    if data is None:
        return max(2, configured)
    if data.pairing != "label" or "audio" not in data.sets:
        raise ConfigError("model.alpha_speaker reads the speaker of each utterance: it needs speech "
                          "paired with images by label (data.pairing=label)")
    speakers = data.split("audio", "train").speakers
    if not speakers or any(s is None or str(s) == "" for s in speakers):
        raise ConfigError("model.alpha_speaker: the training speech has no speaker for some utterances")
    found = len(set(map(str, speakers)))
    if found < 2:
        raise ConfigError(f"model.alpha_speaker: the training speech has {found} speaker; a speaker "
                          "penalty needs at least 2")
    if configured and configured != found:
        raise ConfigError(f"model.speaker_classes={configured} but the training speech has {found} "
                          "speakers (leave it 0 to take the data's)")
    return found


COUNT_NAMES = {"audio": "speech"}  # modality -> its name in run.json's n_<name>_<split> counts


def data_summary(cfg: ExperimentConfig, data: ExperimentData) -> dict[str, Any]:
    """run.json's ``data`` block: sources, classes, speakers and example counts per modality.

    Keys as before modality-keyed data: ``n_speech_train``/``n_speech_test`` ("audio"),
    ``n_image_train``/``n_image_test``, ``n_<modality>_<split>`` for others (label modalities are
    not counted: they are the labels of another modality); classes and speakers from the first
    counted modality (speakers only when its examples have speakers).
    """
    d = cfg.data
    counted = [m for m in data.modalities if data.spec(m).kind != "categorical"]
    if not counted:
        raise ConfigError(f"the data has no modality to train on (it has {data.modalities})")
    first = data.split(counted[0], "train")
    counts = {f"n_{COUNT_NAMES.get(m, m)}_{s}": len(data.split(m, s)) for m in counted for s in SPLITS}
    classes = sorted(set(first.labels))
    loader = {} if d.loader == "auto" else {"loader": d.loader, "pairing": data.pairing}
    if "audio" not in data.sets:  # images and labels (MNIST)
        return {**loader, "images": d.images, "binarize": d.binarize, "classes": classes, **counts,
                "paired_fraction": d.paired_fraction, "unpaired": d.unpaired}
    test = data.split(counted[0], "test")
    summary: dict[str, Any] = {**loader, "audio": d.audio, "images": d.images, "split": d.split,
                               "classes": classes}
    if first.speakers is not None and test.speakers is not None:
        summary.update(speakers_train=sorted(set(first.speakers)), speakers_test=sorted(set(test.speakers)))
    return {**summary, **counts, "skipped_files": [{"path": p, "reason": r} for p, r in data.skipped]}


def train(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = False,
          data: ExperimentData | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train the configured model and write a run folder; returns a small summary.

    A non-empty ``out_dir`` is refused unless ``resume`` (continue from the newest usable
    checkpoint in ``out_dir/checkpoints``, exactly as if training had not stopped) or
    ``overwrite`` (remove its training outputs first).

    A model trained in two stages (its registry entry names a ``stage1`` model: MDVAE) trains
    the stage-1 runs ``out_dir/stage1_<modality>`` first, then itself in ``out_dir`` on their
    frozen weights (:mod:`dispart.training.stages`); ``resume`` continues whichever stage was
    interrupted and skips finished stage-1 runs.
    """
    validate_config(cfg)  # a config built in Python gets the CLI's checks
    check_precision(cfg)  # before any data is loaded or any stage-1 run trained
    if stages.stage1_model(cfg) is not None:
        return _train_stages(cfg, Path(out_dir), resume, data, overwrite)
    return _train(cfg, Path(out_dir), resume, data, overwrite)


def _train(cfg: ExperimentConfig, out: Path, resume: bool, data: ExperimentData | None, overwrite: bool,
           setup: Callable[[Any], None] | None = None, extra: dict[str, Any] | None = None,
           prepared: bool = False, quiet: bool = False) -> dict[str, Any]:
    """One training run into ``out`` (see :func:`train`). ``setup(model)`` runs on the freshly
    built model before a checkpoint is resumed and training starts (stage 2: load the frozen
    stage-1 weights); ``extra`` is added to the summary (train_summary.json) and to run.json's
    ``data`` block (stage 2: the stage-1 runs its observations come from); ``prepared``: the
    caller has prepared ``out`` (stage 2: it holds the stage-1 runs); ``quiet``: the caller has
    reported the skipped files already."""
    validate_config(cfg)
    if isinstance(cfg.train.threads, int) and cfg.train.threads > 0:  # process-wide
        torch.set_num_threads(cfg.train.threads)
    # validate the config before any heavy work (a modality only the data knows: once it is loaded)
    if not needs_data(cfg):
        model_hparams(cfg)  # a combination the model refuses: a ConfigError before any heavy work
    if not prepared:
        prepare_run_folder(out, resume, overwrite)
    ckpt_dir = out / "checkpoints"
    if resume and not ckpt_dir.is_dir():
        raise RunDirError(f"--resume: no checkpoint folder {ckpt_dir}; train without --resume "
                          "(with --overwrite if the run folder is not empty)")
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)

    data = data or load_experiment_data(cfg.data, progress=cfg.train.progress_bar,
                                        speech=uses_speech(cfg))
    hparams = model_hparams(cfg, data)  # the data's specs (e.g. grid_clips "audio" frames)
    worker = is_launched_worker()
    if data.skipped and not worker and not quiet:
        print(f"skipped {len(data.skipped)} bad audio files (data.on_error=skip); "
              f"first: {data.skipped[0][0]}: {data.skipped[0][1]}")
    lit = LitModel(hparams, lr=cfg.train.lr, betas=list(cfg.train.betas),
                   lr_schedule=cfg.train.lr_schedule)
    if setup is not None:
        setup(lit.model)
    start_from(cfg, lit.model)
    dm = _datamodule(cfg, data)
    ckpt = None
    if resume:
        ckpt = resume_checkpoint(ckpt_dir, lit.state_dict(), quiet=worker,
                                 averaged=cfg.train.average_from > 0)
        if not worker:
            remove_partial_writes(ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not worker:
        save_config(cfg, out / "config.yaml")
    monitor = None
    if cfg.train.eval_every > 0 and "audio" in data.sets:
        monitor = PurityMonitor(data, cfg.eval, cfg.train.eval_every, cfg.train.stop_at_purity)
    threads = FastestThreads(quiet=worker or quiet) if cfg.train.threads == "auto" else None
    averaging = EpochAveraging(cfg.train.average_from) if cfg.train.average_from > 0 else None
    trainer = _trainer(cfg, out, [c for c in (monitor, threads, averaging) if c is not None])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # The data modules resume mid-epoch themselves (their state_dict), not the DataLoader.
        warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        # MDVAE's frozen stage-1 VQ-VAEs stay in eval mode on purpose
        warnings.filterwarnings("ignore", r".*module\(s\) in eval mode at the start of training.*")
        trainer.fit(lit, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    summary = {"epochs": trainer.current_epoch, "global_step": trainer.global_step,
               "history": monitor.history if monitor else [],
               **({"averaged_epochs": averaging.averaged_epochs} if averaging else {}),
               **({"threads": threads.chosen} if threads else {}), **(extra or {})}
    if trainer.is_global_zero:
        save_run(out, cfg, lit.model.cpu(), data.normalizers.get("audio"), data.fbank,
                 {**data_summary(cfg, data), **(extra or {})}, normalizers=data.normalizers)
        atomic_write_json(out / "train_summary.json", summary)
    return summary


def cpu_runs_bf16_lstm() -> bool:
    """Whether this CPU runs ``torch.nn.LSTM`` under bfloat16 autocast (oneDNN needs AVX512-BF16
    or AMX; e.g. an AMD Zen 3 has neither), probed with a tiny LSTM."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.LSTM(2, 2, batch_first=True)(torch.zeros(1, 2, 2))
    except RuntimeError:
        return False
    return True


def check_precision(cfg: ExperimentConfig) -> None:
    """A ConfigError when ``train.precision`` is bf16 on a CPU without bfloat16 units
    (:func:`cpu_runs_bf16_lstm` is False): every sequence model's LSTMs would fail at the first
    step, deep inside ``torch.nn.LSTM``, and nothing else would get faster. Checked from the config
    alone, so it comes before data loading and before MDVAE's stage-1 runs."""
    t = cfg.train
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    if "bf16" in str(t.precision) and on_cpu and not cpu_runs_bf16_lstm():
        raise ConfigError(
            f"train.precision={t.precision}: this CPU has no bfloat16 units (oneDNN needs AVX512-BF16 "
            "or AMX to run LSTMs in bfloat16); use train.precision=32-true")


def start_from(cfg: ExperimentConfig, model: Any) -> None:
    """``train.init_from``: load a finished run's weights into the freshly built ``model`` (the
    same model settings: ConfigError naming the ones that differ); ``train.freeze``: keep the
    parameters under each named prefix fixed (left out of the optimiser; ConfigError for a prefix
    that names none). A resumed run's checkpoint is loaded afterwards and wins."""
    if cfg.train.init_from:
        source = load_run(cfg.train.init_from)
        theirs, ours = source.model.hparams(), model.hparams()
        if theirs != ours:
            differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise ConfigError(f"train.init_from: {cfg.train.init_from} holds a {source.model.name} model "
                              f"whose settings differ from this config's in {differ}")
        model.load_state_dict(source.model.state_dict())
    params = dict(model.named_parameters())
    for prefix in cfg.train.freeze:
        under = [n for n in params if n == prefix or n.startswith(prefix + ".")]
        if not under:
            tops = sorted({n.split(".")[0] for n in params})
            raise ConfigError(f"train.freeze: {prefix!r} names no parameter of the {model.name} model "
                              f"(its parameters start with {tops})")
        for n in under:
            params[n].requires_grad_(False)


def _train_stages(cfg: ExperimentConfig, out: Path, resume: bool, data: ExperimentData | None,
                  overwrite: bool) -> dict[str, Any]:
    """Stage 1 (one run per modality, ``out/stage1_<m>`` or ``model.stage1_dir``), then stage 2
    in ``out`` on the frozen stage-1 weights; see :mod:`dispart.training.stages`."""
    modalities = list(cfg.model.modalities)
    configs = {m: stages.stage1_config(cfg, m) for m in modalities}
    for c in configs.values():
        validate_config(c, origin="stage-1 config")
    if not needs_data(cfg):
        model_hparams(cfg)  # a combination the model refuses: before any training
    external = stages.external(cfg)
    if resume and overwrite:
        raise RunDirError("--resume continues a run and --overwrite starts it over: pass one")
    if resume and not (out.is_dir() and any(out.iterdir())):
        raise RunDirError(f"--resume: nothing to resume in {out}; train without --resume")
    if not resume and not is_launched_worker():
        if overwrite and not external:
            stages.remove_stage1_outputs(out)
        prepare_run_folder(out, resume=False, overwrite=overwrite)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    data = data or load_experiment_data(cfg.data, progress=cfg.train.progress_bar, speech=uses_speech(cfg))
    if data.skipped and not is_launched_worker():
        print(f"left out {len(data.skipped)} bad files or damaged parts of files; "
              f"first: {data.skipped[0][0]}: {data.skipped[0][1]}")
    runs = {}
    for m in modalities:
        folder = stages.stage1_folder(cfg, out, m)
        state = stages.folder_state(folder)
        if external and state != "finished":
            raise RunDirError(f"model.stage1_dir: {folder} is not a finished stage-1 run ({state}); train "
                              "it first (dispart train with the run's config, or without model.stage1_dir)")
        if state == "finished":
            if not is_launched_worker() and not external:
                print(f"stage 1 ({m}): {folder} is a finished run; skipped")
        else:
            _train(configs[m], folder, resume=state == "checkpoints", data=data,
                   overwrite=state == "fresh", quiet=True)
        runs[m] = load_run(folder)
    record = stages.stage1_record(cfg, out, runs)
    resume2 = stages.has_checkpoints(out)
    if resume2:
        stages.check_stage1_unchanged(out, record)
    elif not is_launched_worker():
        prepare_run_folder(out, resume=False, overwrite=True)  # outputs of a stage 2 killed early
    if not is_launched_worker():
        stages.write_record(out, record)
    return _train(cfg, out, resume=resume2, data=data, overwrite=False, prepared=True, quiet=True,
                  setup=lambda model: stages.load_stage1(model, runs), extra={"stage1": record})


def _datamodule(cfg: ExperimentConfig, data: ExperimentData) -> L.LightningDataModule:
    """Training batches as the data pairs its modalities (``data.pairing``): speech + image pairs
    re-paired by label every epoch; image + label examples (optionally weakly supervised,
    ``data.paired_fraction``); or the modalities of the same examples (audio and video of one
    clip), joined by example id."""
    augments: dict[str, Augment] = {}
    if cfg.data.augment == "warp":
        augments["audio"] = RandomWarp(cfg.data.warp_freq, cfg.data.warp_time, seed=cfg.train.seed)
    elif cfg.data.augment != "none":
        raise ConfigError(f"data.augment must be 'none' or 'warp', got {cfg.data.augment!r}")
    if cfg.data.image_shift > 0:
        augments["image"] = RandomShift(cfg.data.image_shift, seed=cfg.train.seed)
    for modality, field in (("audio", "data.augment=warp"), ("image", "data.image_shift")):
        if modality in augments and modality not in cfg.model.modalities:
            raise ConfigError(f"{field} augments the {modality!r} modality, which this run's "
                              f"model.modalities {cfg.model.modalities} lack")
    missing = [m for m in cfg.model.modalities if m not in data.sets]
    if missing:
        raise ConfigError(f"model.modalities include {missing} but the data given has only "
                          f"{data.modalities}" + (" (no speech)" if "audio" in missing else ""))
    if cfg.data.binarize == "dynamic" and not set(cfg.model.modalities) <= {"image", "label"}:
        raise ConfigError(f"data.binarize=dynamic redraws the images of image + label runs only; "
                          f"model.modalities are {cfg.model.modalities} (use data.binarize=stochastic)")
    if data.pairing == "label":
        if not uses_speech(cfg):
            raise ConfigError(f"data.pairing=label pairs 'audio' with 'image' by class; model.modalities "
                              f"{cfg.model.modalities} have no 'audio' (use data.pairing=example)")
        return PairedDataModule(data, cfg.train.batch_size, cfg.train.seed, cfg.data.num_workers,
                                augments=augments, bucket_pool=cfg.train.bucket_pool, pairing="label")
    specs = modality_specs(cfg, data)
    if "image" in augments and len(specs["image"].shape) < 2:
        raise ConfigError(f"data.image_shift moves images of 2 dimensions; this run's images are "
                          f"vectors of shape {specs['image'].shape} (set data.image_shift=0)")
    if set(cfg.model.modalities) <= {"image", "label"}:
        if augments:
            raise ConfigError("data.augment and data.image_shift apply to runs with speech or "
                              "paired by example; image + label runs take neither")
        if (cfg.model.name == "jmvae_kl" and cfg.data.paired_fraction < 1.0
                and cfg.data.unpaired == "split"):
            raise ConfigError("model.name=jmvae_kl trains on complete examples only: with "
                              "data.paired_fraction < 1 set data.unpaired=drop")
        return ImageLabelDataModule(data, [specs[m] for m in cfg.model.modalities],
                                    cfg.train.batch_size, cfg.train.seed, cfg.data.num_workers,
                                    cfg.data.paired_fraction, cfg.data.unpaired,
                                    redraw=cfg.data.binarize == "dynamic")
    return PairedDataModule(data, cfg.train.batch_size, cfg.train.seed, cfg.data.num_workers,
                            augments=augments, bucket_pool=cfg.train.bucket_pool, pairing="example",
                            specs=[specs[m] for m in cfg.model.modalities])


def _checkpointing(out: Path, every_steps: int) -> ModelCheckpoint:
    """Every epoch (or every ``every_steps`` steps): the two newest checkpoints (the older one
    is the fallback when the newest is damaged) and ``last.ckpt``, overwritten in place."""
    return ModelCheckpoint(
        dirpath=out / "checkpoints", auto_insert_metric_name=False, save_last=True,
        monitor="step", mode="max", save_top_k=2, enable_version_counter=False,
        **({"filename": "epoch{epoch:03d}-step{step:06d}", "every_n_train_steps": every_steps}
           if every_steps > 0 else {"filename": "epoch{epoch:03d}", "every_n_epochs": 1}))


def _trainer(cfg: ExperimentConfig, out: Path, extra: list[L.Callback]) -> L.Trainer:
    t = cfg.train
    if t.logger == "csv":
        logger = CSVLogger(out, name="logs", version="")
    elif t.logger == "tensorboard":
        logger = TensorBoardLogger(out, name="logs", version="")
    else:
        raise ConfigError(f"train.logger must be 'csv' or 'tensorboard', got {t.logger!r}")
    callbacks = [_checkpointing(out, t.checkpoint_every_steps), EpochPairing(), RngState(), *extra]
    return L.Trainer(
        max_epochs=t.epochs, max_steps=t.max_steps, accelerator=t.accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision, logger=logger,
        callbacks=callbacks, enable_progress_bar=t.progress_bar,
        log_every_n_steps=t.log_every_n_steps, gradient_clip_val=t.gradient_clip_val,
        max_time=t.max_time, default_root_dir=out, use_distributed_sampler=False,
        enable_model_summary=False, plugins=[SafeCheckpointIO()],
    )


def train_to_end(cfg: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    """Benchmark helper: train ``out_dir`` to the end, resuming it when it holds checkpoints of an
    interrupted run and starting over when it holds nothing to resume."""
    out = Path(out_dir)
    resume = (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("*.ckpt"))
    return train(cfg, out, resume=resume, overwrite=not resume)

