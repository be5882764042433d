"""Experiment configuration: plain dataclasses, loaded from YAML, overridable as ``a.b=value``.

Every field has a default, so a config file names only what differs; ``dispart train
configs/pvae.yaml --out runs/x train.epochs=5 model.alpha_cm=0`` overrides single values.

The ``model`` section is the chosen model's: four common fields (:class:`ModelConfig`) plus the
fields of that model's config dataclass in :data:`dispart.models.registry.REGISTRY`
(:func:`model_section`), so ``model.k=5`` on a PVAE run is an error naming the field, the model
and its fields. Saved as one flat mapping; a config.yaml saved before this split (every model's
fields) still loads (see ``LEGACY_CORE``).

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

from dispart.data.config import BINARIZE, DataConfig
from dispart.data.corpus import LAYOUTS
from dispart.data.splits import parse_split
from dispart.errors import ConfigError
from dispart.files import atomic_write
from dispart.models.pvae import SPEAKER_PENALTIES
from dispart.models.registry import REGISTRY, entry
from dispart.nn.modality import ACTIVATIONS, CATEGORICAL_INITS, IMAGE_DECODERS, SEQUENCE_ENCODERS

DEFAULT_MODEL = "pvae"


@dataclass(slots=True)
class ModelConfig:
    """The fields every model section has; :func:`model_section` adds the chosen model's own.

    ``cfg.model`` is an instance of ``model_section(cfg.model.name)``: these four fields, then the
    fields of that model's config dataclass (``dispart.models.registry.REGISTRY``), so a field of
    another model (``model.k`` on a PVAE run) is refused. ``display_name`` labels its rows in Table 1.
    """

    name: str = DEFAULT_MODEL  # a key of dispart.models.registry.REGISTRY
    display_name: str = "PVAE"
    modalities: list[str] = field(default_factory=lambda: ["audio", "image"])  # audio|image|label
    image_net: str = "cnn"  # "cnn" (PVAE appendix B) | "mlp" (784-512-512, the MVAE/JMVAE MNIST nets)


COMMON_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def _reduce_section(section: ModelConfig) -> tuple[Callable[..., ModelConfig], tuple[str, dict[str, Any]]]:
    """Pickle/copy support for the generated section classes (they are not module attributes)."""
    values = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    return _rebuild_section, (type(section).model, values)


def _rebuild_section(model: str, values: dict[str, Any]) -> ModelConfig:
    return model_section(model)(**values)


@functools.cache
def model_section(name: str) -> type[ModelConfig]:
    """The model-section dataclass of registered model ``name`` (ValueError if unknown): the
    fields of :class:`ModelConfig` (``name`` defaulting to ``name``), then the fields of the
    model's config dataclass, with its annotations and defaults. One class per name."""
    e = entry(name)
    hints = typing.get_type_hints(e.config)
    own: list[tuple[str, Any, Any]] = [("name", str, field(default=name))]
    for f in dataclasses.fields(e.config):
        if f.name in COMMON_MODEL_FIELDS:
            raise TypeError(f"{e.config.__name__}.{f.name}: a common model field, not a model's own")
        if f.default is not dataclasses.MISSING:
            spec = field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            spec = field(default_factory=f.default_factory)
        else:
            raise TypeError(f"{e.config.__name__}.{f.name} needs a default (config files name only "
                            "what differs)")
        own.append((f.name, hints[f.name], spec))
    cls = dataclasses.make_dataclass(f"ModelConfig[{name}]", own, bases=(ModelConfig,), slots=True,
                                     namespace={"__reduce__": _reduce_section, "model": name})
    cls.__module__ = __name__
    cls.__doc__ = (f"The model section of a {name!r} run: {list(COMMON_MODEL_FIELDS)} and the fields "
                   f"of {e.config.__module__}.{e.config.__name__}.")
    return cls


def model_params(section: ModelConfig) -> Any:
    """The model's own config dataclass (registry entry of ``section.name``) filled from ``section``."""
    config = entry(section.name).config
    return config(**{f.name: getattr(section, f.name) for f in dataclasses.fields(config)})


@dataclass
class TrainConfig:
    """Optimisation and the trainer (PyTorch Lightning). Paper: Adam, lr 1e-3, betas (0.95, 0.999)."""

    epochs: int = 100
    max_steps: int = -1  # > 0: stop after this many optimiser steps (whichever comes first)
    checkpoint_every_steps: int = 0  # 0: a checkpoint every epoch; > 0: every this many steps
    batch_size: int = 256
    bucket_pool: int = 50  # length buckets: sort within random pools of bucket_pool * batch_size
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (from lr to 0 over the run's optimiser steps)
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
    threads: int | str = 0  # > 0: torch threads of this process (0: torch's default; "auto": timed)
    init_from: str = ""  # a finished run folder whose weights start training (same model settings)
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes kept fixed, e.g. [inference]
    average_from: int = 0  # >= 1: the model is the mean of the weights at the end of epochs N..last


@dataclass
class EvalConfig:
    """Paper protocol: k-means with ``n_clusters`` on unimodal test latents; inertia for 1..k_max."""

    n_clusters: int = 10
    k_max: int = 20
    seed: int = 0


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: model_section(DEFAULT_MODEL)())
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """{section: {field: value}}; the model section is flat (common fields, then the model's)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str = "config") -> ExperimentConfig:
        """A config from ``{section: {field: value}}``; every value is checked (see :data:`RULES`)."""
        return _build(_file_items(d, origin))


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
MODEL_NAMES = tuple(REGISTRY)
MODALITIES = ("audio", "image", "label", "video", "speech")  # "video": image sequences (grid, sprites,
# ball loaders); "speech": fixed-length spectral segments (data.loader=speech_segments)
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


def _valid_loader(v: str) -> bool:
    """"auto", or registered corpus loader names joined by "+" (the registry is read lazily:
    ``dispart.batches`` sits below this layer, and plugins may register loaders after import)."""
    from dispart.batches.loaders import LOADERS

    names = [n.strip() for n in v.split("+")]
    return v == "auto" or (all(names) and all(n in LOADERS for n in names))


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


# Lightning's registered strategy names (StrategyRegistry.available_strategies() of Lightning 2.6;
# tests/test_config_registry.py checks the installed Lightning has the same). Written out because
# nothing below dispart.training imports Lightning (the import-linter contracts in pyproject.toml).
STRATEGIES = (
    "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_false",
    "ddp_find_unused_parameters_true", "ddp_spawn_find_unused_parameters_false",
    "ddp_spawn_find_unused_parameters_true", "ddp_fork_find_unused_parameters_false",
    "ddp_fork_find_unused_parameters_true", "ddp_notebook_find_unused_parameters_false",
    "ddp_notebook_find_unused_parameters_true", "deepspeed", "deepspeed_stage_1", "deepspeed_stage_2",
    "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload",
    "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload", "single_device", "single_xla",
    "xla_debug", "xla", "single_tpu",
)


def _valid_strategy(v: str) -> bool:
    return v == "auto" or v in STRATEGIES


def _nonnegative_weights(v: dict[str, float] | None) -> bool:
    return v is None or (all(m in MODALITIES for m in v) and all(w >= 0 for w in v.values()))


def _positive_widths(v: dict[str, int] | None) -> bool:
    return v is None or (all(m in MODALITIES for m in v) and all(w >= 1 for w in v.values()))


SEED = between(0, 2**32 - 1)  # numpy and Lightning seeds
COUNT = at_least(1)
NONNEG = at_least(0)

RULES: dict[str, Rule] = {
    "data.audio": NON_EMPTY,
    "data.audio_extra": Rule(lambda v: True, "a second spoken-digit folder or CSV, or '' (none)"),
    "data.layout": one_of(*LAYOUTS),
    "data.images": NON_EMPTY,
    "data.loader": Rule(_valid_loader, "'auto' or registered corpus loader names joined by '+' "
                                       "(built in: 'speech', 'mnist', 'grid')", "unknown corpus loader"),
    "data.pairing": one_of("auto", "label", "example"),
    "data.split": Rule(_valid_split, "'official', 'speaker:NAME' or 'speakers:A,B'", "invalid split"),
    "data.sample_rate": COUNT,
    "data.n_mels": COUNT,
    "data.hop_ms": above(0),
    "data.win_ms": above(0),
    "data.vad_top_db": above(0),
    "data.normalize": one_of("global", "utterance", "speaker", "speaker_var"),
    "data.augment": one_of("none", "warp"),
    "data.speed_perturb": Rule(lambda v: all(0.5 <= x <= 2.0 and x != 1.0 for x in v)
                               and len(set(v)) == len(v),
                               "distinct speeds in [0.5, 2], not 1.0 (the recordings themselves)"),
    "data.warp_freq": between(0, 1, high_open=True),
    "data.warp_time": between(0, 1, high_open=True),
    "data.image_shift": at_least(0),
    "data.cache_dir": NON_EMPTY,
    "data.on_error": one_of("raise", "skip"),
    "data.num_workers": NONNEG,
    "data.binarize": one_of(*BINARIZE),
    "data.paired_fraction": between(0, 1),
    "data.unpaired": one_of("split", "drop"),
    "model.name": Rule(lambda v: v in REGISTRY, f"one of {list(MODEL_NAMES)}", "unknown model"),
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
    "model.style_beta": NONNEG,
    "model.style_beta_on": NON_EMPTY,
    "model.alpha_indep": NONNEG,
    "model.alpha_swap": NONNEG,
    "model.alpha_adv": NONNEG,
    "model.alpha_xcorr": NONNEG,
    "model.xcorr_weights": Rule(_nonnegative_weights, f"weights >= 0 for modalities in {list(MODALITIES)}"),
    "model.swap_weights": Rule(_nonnegative_weights, f"weights >= 0 for modalities in {list(MODALITIES)}"),
    "model.xcorr_momentum": between(0, 1, high_open=True),
    "model.alpha_semantic_xcorr": NONNEG,
    "model.alpha_speaker": NONNEG,
    "model.speaker_classes": NONNEG,
    "model.speaker_penalty": one_of(*SPEAKER_PENALTIES),
    "model.sequence_encoder": one_of(*SEQUENCE_ENCODERS),
    "model.image_channels": COUNT,
    "model.image_decoder": one_of(*IMAGE_DECODERS),
    "model.activation": one_of(*ACTIVATIONS),
    "model.decoder_layers": COUNT,
    "model.categorical_init": one_of(*CATEGORICAL_INITS),
    "model.penalty_start": NONNEG,
    "model.alpha": NONNEG,
    "model.k": NONNEG,
    "model.lambdas": Rule(_nonnegative_weights, f"weights >= 0 for modalities in {list(MODALITIES)}"),
    "model.widths": Rule(_positive_widths, f"widths >= 1 for modalities in {list(MODALITIES)}"),
    "model.style_dims": Rule(_positive_widths, f"sizes >= 1 for modalities in {list(MODALITIES)}"),
    "model.beta": NONNEG,
    "model.anneal_steps": NONNEG,
    "model.f_dim": COUNT,
    "model.z_dim": COUNT,
    "model.prior_hidden": COUNT,
    "model.conv_width": COUNT,
    "model.q": one_of("factorised", "full"),
    "model.frame_encoder": one_of("auto", "mlp", "conv"),
    "model.frame_decoder": one_of("auto", "mlp", "lstm", "conv"),
    "model.beta_f": NONNEG,
    "model.beta_z": NONNEG,
    "model.z_colour_jitter": Rule(lambda v: isinstance(v, bool), "true or false", "not a boolean"),
    # vq_vae (frame-wise VQ-VAE), and the same fields with the prefix vq_ in mdvae (its stage 1)
    **{f"model.{prefix}{key}": rule for prefix in ("", "vq_") for key, rule in (
        ("code_dim", COUNT), ("codebook_size", COUNT), ("hidden", COUNT), ("conv_width", COUNT),
        ("downsample", NONNEG), ("frame_codes", COUNT), ("beta", NONNEG),
        ("decay", between(0, 1, high_open=True)), ("restart", NONNEG),
        ("ema", Rule(lambda v: True, "true (EMA codebook updates) or false (codebook loss)")))},
    # mdvae
    "model.w_dim": COUNT,
    "model.zav_dim": COUNT,
    "model.za_dim": COUNT,
    "model.zv_dim": COUNT,
    "model.decoder": one_of("mlp", "lstm"),
    "model.obs_scale": one_of("unit", "optimal"),
    "model.beta_w": NONNEG,
    "model.stage1_epochs": Rule(lambda v: v >= 0, ">= 0 (0: train.epochs)", alone=False),
    "model.stage1_dir": Rule(lambda v: True, "a folder holding finished stage1_<modality> runs, or '' "
                                             "(train them in the run folder)"),
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
    "train.threads": Rule(lambda v: v == "auto" or (isinstance(v, int) and v >= 0),
                          "an integer >= 0 or 'auto'", "invalid thread count"),
    "train.strategy": Rule(_valid_strategy, "'auto' or a Lightning strategy such as 'ddp'",
                           "unknown strategy"),
    "train.precision": Rule(lambda v: str(v) in PRECISIONS, f"one of {list(PRECISIONS)}",
                            "unknown precision"),
    "train.logger": one_of("csv", "tensorboard"),
    "train.lr_schedule": one_of("constant", "cosine"),
    "train.log_every_n_steps": COUNT,
    "train.gradient_clip_val": NONNEG,
    "train.max_time": Rule(lambda v: bool(_MAX_TIME.match(v)), "'DD:HH:MM:SS', e.g. '00:01:30:00'",
                           "invalid duration"),
    "train.eval_every": NONNEG,
    "train.stop_at_purity": Rule(lambda v: 0 < v <= 1, "in (0, 1]", alone=False),
    "train.init_from": Rule(lambda v: True, "a finished run folder, or '' (random initialisation)"),
    "train.freeze": Rule(lambda v: all(isinstance(x, str) and x.strip() for x in v),
                         "a list of parameter-name prefixes, e.g. [inference] or [inference.unimodal.audio]"),
    "train.average_from": Rule(lambda v: v >= 0, ">= 0 (0: off; N: average the weights at the end "
                                                "of epochs N to the last)", alone=False),
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
def field_types(section: str, model: str | None = None) -> dict[str, Any]:
    """{field: annotation} of a config section (resolved from the dataclass).

    For "model": the fields of model ``model`` (:func:`model_section`), or without it the fields
    any registered model has (common ones first; the first model's annotation for a shared name).
    """
    if section != "model":
        return typing.get_type_hints(_SECTIONS[section])
    if model is not None:
        return typing.get_type_hints(model_section(model))
    union: dict[str, Any] = {}
    for name in REGISTRY:
        for key, tp in field_types("model", name).items():
            union.setdefault(key, tp)
    return union


def check_value(dotted: str, value: Any, origin: str = "config", model: str | None = None) -> Any:
    """``value`` checked (and ints made floats where a float is expected) for ``section.field``;
    a ``model.*`` field with the annotation it has in model ``model`` (any model's when None).

    Raises one ConfigError line: '<origin>: <field>=<value>: <problem>; expected <what>'.
    """
    section, key = dotted.split(".", 1)
    tp = field_types(section, model if section == "model" else None)[key]
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
        if section == "model":
            _validate_model(cfg.model, origin)
            continue
        for key in field_types(section):
            check_value(f"{section}.{key}", getattr(getattr(cfg, section), key), origin)


def _validate_model(section: Any, origin: str) -> None:
    name = check_value("model.name", getattr(section, "name", None), origin)
    if type(section) is not model_section(name):
        raise ConfigError(f"{origin}: model.name={name!r} but the model section is a "
                          f"{type(section).__name__}; build it with "
                          f"dispart.config.model_section({name!r})(...)")
    for key in field_types("model", name):
        check_value(f"model.{key}", getattr(section, key), origin, model=name)


# --- building a config from a file and overrides ----------------------------------------------------

# The flat ModelConfig before issue 9 held every model's fields; every config.yaml saved by then has
# at least the fields of its first version (LEGACY_CORE). Such a file may carry another model's field
# at its old default (dropped: it had no effect on training); any other value is refused.
LEGACY_CORE = frozenset({"name", "display_name", "modalities", "hidden", "semantic_dim", "style_dim",
                         "latent_dim", "alpha_ch", "alpha_cm", "margin", "alpha"})
LEGACY_DEFAULTS: dict[str, tuple[Any, Any]] = {  # field: (annotation, old default)
    "hidden": (int, 512), "semantic_dim": (int, 32), "style_dim": (int, 32), "latent_dim": (int, 96),
    "alpha_ch": (float, 0.1), "alpha_cm": (float, 10.0), "margin": (float, 0.5), "alpha": (float, 0.1),
    "allow_missing": (bool, False), "k": (int, 0), "lambdas": (dict[str, float] | None, None),
    "beta": (float, 1.0), "anneal_steps": (int, 0),
}


@dataclass(frozen=True)
class _Item:
    """One ``section.field = value`` from a file or an override; ``legacy``: from a pre-issue-9
    saved config (see LEGACY_CORE)."""

    dotted: str
    value: Any
    origin: str
    legacy: bool = False


def _file_items(d: Any, origin: str) -> list[_Item]:
    """The assignments of a config document ``{section: {field: value}}``, in file order."""
    items: list[_Item] = []
    for section, values in (d or {}).items():
        if section not in _SECTIONS:
            raise ConfigError(f"{origin}: unknown section {section!r}; known: {list(_SECTIONS)}")
        if values is None:  # an empty section ("train:" with nothing under it)
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: section {section!r} must be a mapping of fields, "
                              f"got {type(values).__name__}")
        legacy = section == "model" and LEGACY_CORE <= set(values)
        items += [_Item(f"{section}.{key}", value, origin, legacy) for key, value in values.items()]
    return items


def _build(items: list[_Item]) -> ExperimentConfig:
    """A checked config from assignments (later ones win). The model is the last ``model.name``
    (default pvae), whatever the order, and every ``model.*`` key is checked against its fields."""
    parsed: list[tuple[str, str, _Item]] = []
    for item in items:
        parts = item.dotted.split(".")
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ConfigError(f"{item.origin}: {item.dotted!r} is not a field; use section.field with "
                              f"a section in {list(_SECTIONS)}")
        parsed.append((parts[0], parts[1], item))
    name = DEFAULT_MODEL
    for section, key, item in parsed:
        if (section, key) == ("model", "name"):
            name = check_value("model.name", item.value, item.origin)
    cfg = ExperimentConfig()
    own = field_types("model", name)
    model_values: dict[str, Any] = {}
    for section, key, item in parsed:
        if section != "model":
            names = field_types(section)
            if key not in names:
                raise ConfigError(f"{item.origin}: unknown field {item.dotted!r}; {section} has "
                                  f"{sorted(names)}")
            setattr(getattr(cfg, section), key, check_value(item.dotted, item.value, item.origin))
        elif key in own:
            model_values[key] = check_value(item.dotted, item.value, item.origin, model=name)
        elif not (item.legacy and _is_old_default(key, item.value)):
            raise _not_a_field(name, key, item)
    cfg.model = model_section(name)(**model_values)
    return cfg


def _is_old_default(key: str, value: Any) -> bool:
    if key not in LEGACY_DEFAULTS:
        return False
    tp, default = LEGACY_DEFAULTS[key]
    try:
        return _coerce(value, tp) == default
    except _Mismatch:
        return False


def _not_a_field(name: str, key: str, item: _Item) -> ConfigError:
    """The error for ``model.<key>`` that model ``name`` does not have."""
    own = list(field_types("model", name))
    owners = [m for m in REGISTRY if key in field_types("model", m)]
    old = item.legacy and key in LEGACY_DEFAULTS
    if not owners and not old:
        return ConfigError(f"{item.origin}: unknown field {item.dotted!r}; model {name!r} has {own}")
    where = (f"it is a field of {', '.join(owners)}" if owners
             else "it is a field of the old flat model section")
    if old:
        return ConfigError(
            f"{item.origin}: {item.dotted}={item.value!r}: does not apply to model {name!r} ({where}; "
            f"an old saved config may hold it only at its old default "
            f"{LEGACY_DEFAULTS[key][1]!r}, and it had no effect on this model: delete the line); "
            f"expected one of the {name} fields {own}")
    return ConfigError(f"{item.origin}: {item.dotted}={item.value!r}: not a field of model {name!r} "
                       f"({where}); expected one of the {name} fields {own}")


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
    is None. The model is the last ``model.name`` given (file or override), so the order of
    overrides does not matter; a ``model.*`` key that is not a field of that model is refused.
    Every value is checked; errors are one ConfigError line naming the file or override.
    """
    raw = _read_yaml_file(Path(path)) if path is not None else {}
    items = _file_items(raw, origin=str(path or "defaults"))
    for item in overrides or []:
        key, value = parse_override(item)
        items.append(_Item(key, value, f"override {item!r}"))
    return _build(items)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: a crash leaves the old file or the new)."""
    atomic_write(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
