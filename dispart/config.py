"""Experiment configuration: plain dataclasses, loaded from YAML, overridable as ``a.b=value``.

Every field has a default, so a config file names only what differs; ``dispart train
configs/pvae.yaml --out runs/x train.epochs=5 model.alpha_cm=0`` overrides single values.

Every value that enters a config (from a file or an override) is checked against its field's
annotation (``int``, ``float``, ``list[float]``, ``str | None``...) and against :data:`RULES`, a
table of ranges and choices; a bad value is one :class:`ConfigError` line naming the file or
override, the field, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from dispart.data.corpus import LAYOUTS
from dispart.data.splits import parse_split
from dispart.errors import ConfigError
from dispart.files import atomic_write


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
    precision: str | int = "32-true"  # Lightning's precision, e.g. "32-true", "bf16-mixed", 32
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
        """A config from ``{section: {field: value}}``; every value is checked (see :data:`RULES`)."""
        cfg = cls()
        for section, values in (d or {}).items():
            if section not in _SECTIONS:
                raise ConfigError(f"{origin}: unknown section {section!r}; known: {list(_SECTIONS)}")
            if values is None:  # an empty section ("train:" with nothing under it)
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{origin}: section {section!r} must be a mapping of fields, "
                                  f"got {type(values).__name__}")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value, origin)
        return cfg


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}

# --- validation: types from the annotations, ranges and choices from RULES ------------------------


@dataclass(frozen=True)
class Rule:
    """A constraint on a field's value (after its type is checked): ``ok(value)``, what it expects
    and the word for a value that fails it."""

    ok: Callable[[Any], bool]
    expects: str
    problem: str = "out of range"
    alone: bool = True  # ``expects`` says it all; else it follows the type ("an integer >= 1")


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f">= {low}", alone=False)


def above(low: float) -> Rule:
    return Rule(lambda v: v > low, f"> {low}", alone=False)


def between(low: float, high: float, high_open: bool = False) -> Rule:
    return Rule(lambda v: low <= v < high if high_open else low <= v <= high,
                f"in [{low}, {high}{')' if high_open else ']'}", alone=False)


def one_of(*choices: str, problem: str = "unknown value") -> Rule:
    return Rule(lambda v: v in choices, f"one of {list(choices)}", problem)


NON_EMPTY = Rule(lambda v: bool(v.strip()), "a non-empty string", "empty")
MODEL_NAMES = ("pvae", "jmvae_kl", "jmvae", "mvae", "mvae_q", "vae")  # = dispart.models.MODELS (tested)
MODALITIES = ("audio", "image", "label")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
              "64-true", "64", "transformer-engine", "transformer-engine-float16")
_MAX_TIME = re.compile(r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$")


def _valid_split(v: str) -> bool:
    try:
        parse_split(v)
    except ConfigError:
        return False
    return True


def _valid_modalities(v: list[str]) -> bool:
    return bool(v) and len(set(v)) == len(v) and all(m in MODALITIES for m in v)


def _valid_devices(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v >= 1 or v == -1
    if isinstance(v, list):
        return bool(v) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
    return v == "auto"


def _valid_strategy(v: str) -> bool:
    if v == "auto":
        return True
    from lightning.pytorch.strategies import StrategyRegistry  # only when a strategy is named

    return v in StrategyRegistry.available_strategies()


def _nonnegative_weights(v: dict[str, float] | None) -> bool:
    return v is None or (all(m in MODALITIES for m in v) and all(w >= 0 for w in v.values()))


SEED = between(0, 2**32 - 1)  # numpy and Lightning seeds
COUNT = at_least(1)
NONNEG = at_least(0)

RULES: dict[str, Rule] = {
    "data.audio": NON_EMPTY,
    "data.layout": one_of(*LAYOUTS),
    "data.images": NON_EMPTY,
    "data.split": Rule(_valid_split, "'official', 'speaker:NAME' or 'speakers:A,B'", "invalid split"),
    "data.sample_rate": COUNT,
    "data.n_mels": COUNT,
    "data.vad_top_db": above(0),
    "data.normalize": one_of("global", "utterance"),
    "data.augment": one_of("none", "warp"),
    "data.warp_freq": between(0, 1, high_open=True),
    "data.warp_time": between(0, 1, high_open=True),
    "data.cache_dir": NON_EMPTY,
    "data.on_error": one_of("raise", "skip"),
    "data.num_workers": NONNEG,
    "data.binarize": one_of("none", "stochastic", "threshold"),
    "data.paired_fraction": between(0, 1),
    "data.unpaired": one_of("split", "drop"),
    "model.name": one_of(*MODEL_NAMES, problem="unknown model"),
    "model.modalities": Rule(_valid_modalities, f"a non-empty list of distinct modalities from "
                                                f"{list(MODALITIES)}", "invalid modalities"),
    "model.image_net": one_of("cnn", "mlp"),
    "model.hidden": COUNT,
    "model.semantic_dim": COUNT,
    "model.style_dim": COUNT,
    "model.latent_dim": COUNT,
    "model.alpha_ch": NONNEG,
    "model.alpha_cm": NONNEG,
    "model.margin": NONNEG,
    "model.alpha": NONNEG,
    "model.k": NONNEG,
    "model.lambdas": Rule(_nonnegative_weights, f"weights >= 0 for modalities in {list(MODALITIES)}"),
    "model.beta": NONNEG,
    "model.anneal_steps": NONNEG,
    "train.epochs": COUNT,
    "train.max_steps": Rule(lambda v: v == -1 or v >= 1, "-1 (no limit) or an integer >= 1"),
    "train.checkpoint_every_steps": NONNEG,
    "train.batch_size": COUNT,
    "train.bucket_pool": COUNT,
    "train.lr": above(0),
    "train.betas": Rule(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
                        "two numbers in [0, 1), e.g. [0.95, 0.999]"),
    "train.seed": SEED,
    "train.accelerator": one_of(*ACCELERATORS),
    "train.devices": Rule(_valid_devices, "a number of devices >= 1, -1 (all), 'auto' or a list "
                                          "of device indices", "invalid devices"),
    "train.num_nodes": COUNT,
    "train.strategy": Rule(_valid_strategy, "'auto' or a Lightning strategy such as 'ddp'",
                           "unknown strategy"),
    "train.precision": Rule(lambda v: str(v) in PRECISIONS, f"one of {list(PRECISIONS)}",
                            "unknown precision"),
    "train.logger": one_of("csv", "tensorboard"),
    "train.log_every_n_steps": COUNT,
    "train.gradient_clip_val": NONNEG,
    "train.max_time": Rule(lambda v: bool(_MAX_TIME.match(v)), "'DD:HH:MM:SS', e.g. '00:01:30:00'",
                           "invalid duration"),
    "train.eval_every": NONNEG,
    "train.stop_at_purity": Rule(lambda v: 0 < v <= 1, "in (0, 1]", alone=False),
    "eval.n_clusters": COUNT,
    "eval.k_max": COUNT,
    "eval.seed": SEED,
}


class _Mismatch(Exception):
    """A value does not have a field's type."""


def _describe(tp: Any) -> str:
    """'an integer', 'a list of numbers', 'a string or null'... for a field annotation."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if typing.get_origin(tp) is list:
        return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
    if typing.get_origin(tp) is dict:
        key, value = (_describe(a).split(" ", 1)[1] for a in args)
        return f"a mapping of {key}s to {value}s"
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(
        tp, "a value")


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as the annotated type ``tp`` (ints are accepted for floats); _Mismatch if not."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is list and isinstance(value, list):
        return [_coerce(v, args[0]) for v in value]
    if origin is dict and isinstance(value, dict):
        return {_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            raise _Mismatch from None
        if not math.isfinite(number):
            raise _Mismatch
        return number
    if tp in (bool, str) and isinstance(value, tp):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _Mismatch


def _expects(tp: Any, rule: Rule | None) -> str:
    """What a field takes, e.g. 'an integer >= 1', "one of ['csv', 'tensorboard'] or null"."""
    if rule is None:
        return _describe(tp)
    if not rule.alone:
        return " or ".join(f"{d} {rule.expects}" if d != "null" else d
                           for d in _describe(tp).split(" or "))
    nullable = type(None) in typing.get_args(tp)
    return rule.expects + (" or null" if nullable else "")


@functools.cache
def field_types(section: str) -> dict[str, Any]:
    """{field: annotation} of a config section (resolved from the dataclass)."""
    return typing.get_type_hints(_SECTIONS[section])


def check_value(dotted: str, value: Any, origin: str = "config") -> Any:
    """``value`` checked (and ints made floats where a float is expected) for ``section.field``.

    Raises one ConfigError line: '<origin>: <field>=<value>: <problem>; expected <what>'.
    """
    section, key = dotted.split(".", 1)
    tp = field_types(section)[key]
    rule = RULES.get(dotted)
    expects = _expects(tp, rule)
    try:
        checked = _coerce(value, tp)
    except _Mismatch:
        raise ConfigError(f"{origin}: {dotted}={value!r}: wrong type; expected {expects}") from None
    if rule is not None and checked is not None and not rule.ok(checked):
        raise ConfigError(f"{origin}: {dotted}={value!r}: {rule.problem}; expected {expects}")
    if isinstance(checked, int) and not -(2**63) <= checked < 2**63:
        raise ConfigError(f"{origin}: {dotted}={value!r}: out of range; expected a 64-bit integer")
    return checked


def validate_config(cfg: ExperimentConfig, origin: str = "config") -> None:
    """Check every field of ``cfg`` (e.g. one built in Python); ConfigError names the first bad one."""
    for section in _SECTIONS:
        for key in field_types(section):
            check_value(f"{section}.{key}", getattr(getattr(cfg, section), key), origin)


def _set(cfg: ExperimentConfig, dotted: str, value: Any, origin: str) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        raise ConfigError(f"{origin}: {dotted!r} is not a field; use section.field with a section "
                          f"in {list(_SECTIONS)}")
    section, key = parts
    names = field_types(section)
    if key not in names:
        raise ConfigError(f"{origin}: unknown field {dotted!r}; {section} has {sorted(names)}")
    setattr(getattr(cfg, section), key, check_value(dotted, value, origin))


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where (PyYAML's own text spans several lines)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _read_yaml_file(p: Path) -> dict[str, Any]:
    try:
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # also UnicodeDecodeError, a NUL byte in the name
        raise ConfigError(f"{p}: cannot read config ({e.__class__.__name__}: "
                          f"{' '.join(str(e).split())})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {yaml_problem(e)}") from e
    except RecursionError as e:
        raise ConfigError(f"{p}: not valid YAML: nested too deeply") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def parse_override(item: str) -> tuple[str, Any]:
    """``'section.field=value'`` -> (``'section.field'``, the value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.field=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value {text!r} is not valid YAML "
                          f"({yaml_problem(e)})") from e
    except RecursionError as e:
        raise ConfigError(f"override {item!r}: value is nested too deeply") from e
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides.

    Override values are parsed as YAML, so ``train.epochs=5`` is an int and ``data.cache_dir=null``
    is None. Every value is checked; errors are one ConfigError line naming the file or override.
    """
    raw = _read_yaml_file(Path(path)) if path is not None else {}
    cfg = ExperimentConfig.from_dict(raw, origin=str(path or "defaults"))
    for item in overrides or []:
        key, value = parse_override(item)
        _set(cfg, key, value, origin=f"override {item!r}")
    return cfg


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: a crash leaves the old file or the new)."""
    atomic_write(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
