"""Experiment configuration: plain dataclasses, loaded from YAML, overridable as ``a.b=value``.

Every field has a default, so a config file names only what differs; ``dispart train
configs/pvae.yaml --set train.epochs=5 model.alpha_cm=0`` overrides single values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dispart.errors import ConfigError


@dataclass
class DataConfig:
    """Where the data is and how speech becomes features.

    ``audio``: "sample" (the embedded sample), a folder in FSDD or AudioMNIST layout, or a
    ``label,speaker,path`` CSV. ``images``: "sample", an MNIST ``.npz`` or a folder of IDX files.
    ``split``: "official" (FSDD takes 0-4 test), "speaker:NAME" or "speakers:A,B" (held out).
    """

    audio: str = "sample"
    layout: str = "auto"
    images: str = "sample"
    split: str = "official"
    sample_rate: int = 8000
    n_mels: int = 80
    vad_top_db: float = 30.0
    normalize: str = "global"  # "global": train-split mean/std; "utterance": also per-utterance mean
    augment: str = "none"  # "none" | "warp": random Mel-axis (VTLP-like) and time warps (train only)
    warp_freq: float = 0.1  # Mel-axis warp factor range: 1 +- warp_freq
    warp_time: float = 0.1  # time-axis warp factor range: 1 +- warp_time
    cache_dir: str | None = None  # default: $DISPART_CACHE or ~/.cache/dispart
    on_error: str = "raise"  # "raise" at the first bad file, or "skip" and report the count
    num_workers: int = 0
    binarize: str = "none"  # images: "none" | "stochastic" (one fixed Bernoulli draw) | "threshold" (> 0.5)
    paired_fraction: float = 1.0  # image+label runs: fraction of training examples kept paired
    unpaired: str = "split"  # the rest: "split" into image-only and label-only halves | "drop"


@dataclass
class ModelConfig:
    """Which model and its sizes. ``display_name`` labels its rows in Table 1."""

    name: str = "pvae"  # pvae | jmvae_kl | jmvae | mvae | mvae_q | vae
    display_name: str = "PVAE"
    modalities: list[str] = field(default_factory=lambda: ["audio", "image"])  # audio|image|label
    image_net: str = "cnn"  # "cnn" (PVAE appendix B) | "mlp" (784-512-512, the MVAE/JMVAE MNIST nets)
    hidden: int = 512
    semantic_dim: int = 32
    style_dim: int = 32
    latent_dim: int = 96  # jmvae_kl and vae: size of the single latent
    alpha_ch: float = 0.1
    alpha_cm: float = 10.0
    margin: float = 0.5
    alpha: float = 0.1  # jmvae_kl: weight of the unimodal KL terms
    allow_missing: bool = False  # pvae: train/infer on any subset of modalities (docs/models.md)
    k: int = 0  # mvae: random subsets (2 <= |S| < M) in the sub-sampled objective
    lambdas: dict[str, float] | None = None  # mvae: per-modality likelihood weights
    beta: float = 1.0  # mvae: KL weight after annealing
    anneal_steps: int = 0  # mvae: linear KL annealing from 0 to beta over this many steps


@dataclass
class TrainConfig:
    """Optimisation and the trainer (PyTorch Lightning). Paper: Adam, lr 1e-3, betas (0.95, 0.999)."""

    epochs: int = 100
    max_steps: int = -1  # > 0: stop after this many optimiser steps (whichever comes first)
    checkpoint_every_steps: int = 0  # 0: a checkpoint every epoch; > 0: every this many steps
    batch_size: int = 256
    bucket_pool: int = 50  # length buckets: sort within random pools of bucket_pool * batch_size
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    seed: int = 0
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: Any = 1  # number of devices, or "auto"; > 1 trains with DDP
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    logger: str = "csv"  # csv | tensorboard
    log_every_n_steps: int = 5
    progress_bar: bool = True
    gradient_clip_val: float | None = None
    max_time: str | None = None  # e.g. "00:00:10:00" (dd:hh:mm:ss)
    eval_every: int = 0  # > 0: log unimodal z purity on the test split every N epochs
    stop_at_purity: float | None = None  # stop once every monitored purity reaches this


@dataclass
class EvalConfig:
    """Paper protocol: k-means with ``n_clusters`` on unimodal test latents; inertia for 1..k_max."""

    n_clusters: int = 10
    k_max: int = 20
    seed: int = 0


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str = "config") -> ExperimentConfig:
        cfg = cls()
        for section, values in (d or {}).items():
            if section not in _SECTIONS:
                raise ConfigError(f"{origin}: unknown section {section!r}; known: {list(_SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{origin}: section {section!r} must be a mapping")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value, origin)
        return cfg


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


def _set(cfg: ExperimentConfig, dotted: str, value: Any, origin: str) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        raise ConfigError(f"{origin}: {dotted!r} is not a field; use section.field with a section "
                          f"in {list(_SECTIONS)}")
    section, key = parts
    target = getattr(cfg, section)
    names = {f.name for f in dataclasses.fields(target)}
    if key not in names:
        raise ConfigError(f"{origin}: unknown field {dotted!r}; {section} has {sorted(names)}")
    setattr(target, key, value)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides.

    Override values are parsed as YAML, so ``train.epochs=5`` is an int and ``data.cache_dir=null``
    is None.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
    cfg = ExperimentConfig.from_dict(raw, origin=str(path or "defaults"))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, text = item.split("=", 1)
        _set(cfg, key.strip(), yaml.safe_load(text), origin="override")
    return cfg


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
