"""The model section follows the registry (issue 9, item 4): each model's own fields, checked.

Expected field sets, defaults and hyper-parameters are written out by hand here (from the model
papers' settings in docs/models.md and the old flat ModelConfig), not read back from the code.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import pickle
from pathlib import Path

import pytest

from dispart.config import (
    ExperimentConfig,
    load_config,
    model_section,
    save_config,
    validate_config,
)
from dispart.errors import ConfigError
from dispart.models.registry import entry
from dispart.training.run import model_hparams

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["name", "display_name", "modalities", "image_net"]
OWN_DEFAULTS = {  # each model's own fields and defaults (= the old flat defaults)
    "pvae": {"semantic_dim": 32, "style_dim": 32, "hidden": 512, "alpha_ch": 0.1, "alpha_cm": 10.0,
             "margin": 0.5, "allow_missing": False, "style_beta": 1.0, "style_beta_on": "all",
             "alpha_indep": 0.0, "alpha_swap": 0.0, "alpha_adv": 0.0, "alpha_xcorr": 0.0,
             "xcorr_weights": None, "swap_weights": None, "xcorr_momentum": 0.0,
             "alpha_semantic_xcorr": 0.0, "penalty_start": 0, "widths": None,
             "style_dims": None, "alpha_speaker": 0.0, "speaker_classes": 0,
             "speaker_penalty": "critic", "sequence_encoder": "lstm", "image_channels": 4,
             "image_decoder": "paper", "lambdas": None},
    "jmvae_kl": {"latent_dim": 96, "hidden": 512, "alpha": 0.1},
    "jmvae": {"latent_dim": 96, "hidden": 512},
    "mvae": {"latent_dim": 96, "hidden": 512, "k": 0, "lambdas": None, "beta": 1.0, "anneal_steps": 0,
             "activation": "relu", "decoder_layers": 2, "categorical_init": "linear"},
    "mvae_q": {"latent_dim": 96, "hidden": 512, "k": 0, "lambdas": None, "beta": 1.0,
               "anneal_steps": 0, "activation": "relu", "decoder_layers": 2, "categorical_init": "linear"},
    "vae": {"latent_dim": 96, "hidden": 512},
}
MODALITIES = {"vae": "[image]"}  # vae takes one modality; the others the default [audio, image]


def _error(path=None, overrides=()) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, list(overrides))
    assert "\n" not in str(e.value)
    return str(e.value)


# --- 1. DataConfig lives below the models -----------------------------------------------------------

def _dispart_imports(path: Path) -> set[str]:
    """Every ``dispart.*`` module a source file imports (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dispart"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dispart")}
    return found


def test_data_config_is_a_plain_dataclass_below_config_and_re_exported():
    import dispart.config
    from dispart.data.config import DataConfig

    assert dispart.config.DataConfig is DataConfig
    assert _dispart_imports(ROOT / "dispart" / "data" / "config.py") == set()
    assert DataConfig().n_mels == 80 and DataConfig().split == "official"


def test_nothing_below_config_imports_it():
    """files/errors, data, features, batches, nn, distributions, objectives, models: none imports
    dispart.config (batches/pipeline.py takes DataConfig from dispart.data.config)."""
    below = [ROOT / "dispart" / f for f in ("files.py", "errors.py", "distributions.py", "objectives.py")]
    for folder in ("data", "features", "batches", "nn", "models"):
        below += sorted((ROOT / "dispart" / folder).rglob("*.py"))
    offenders = [str(p.relative_to(ROOT)) for p in below if "dispart.config" in _dispart_imports(p)]
    assert offenders == []


# --- 2. the model section: common fields + the model's dataclass ------------------------------------

@pytest.mark.parametrize("name", list(OWN_DEFAULTS))
def test_each_model_section_has_common_fields_then_its_own(name):
    section = model_section(name)()
    d = ExperimentConfig(model=section).to_dict()["model"]
    assert list(d)[:4] == COMMON
    assert d == {"name": name, "display_name": "PVAE", "modalities": ["audio", "image"],
                 "image_net": "cnn", **OWN_DEFAULTS[name]}
    assert model_section(name) is type(section)  # one class per model


def test_a_field_of_another_model_names_it_the_model_and_its_fields():
    msg = _error(None, ["model.k=5"])
    assert msg.startswith("override 'model.k=5': model.k=5: not a field of model 'pvae'")
    assert "mvae, mvae_q" in msg  # where k belongs
    for f in [*COMMON, *OWN_DEFAULTS["pvae"]]:
        assert repr(f) in msg
    msg = _error(None, ["model.name=jmvae", "model.alpha=0.5"])
    assert "model.alpha=0.5: not a field of model 'jmvae'" in msg and "jmvae_kl" in msg
    assert "'latent_dim'" in msg and "'semantic_dim'" not in msg
    assert "unknown field 'model.nme'; model 'vae' has" in _error(None, ["model.name=vae", "model.nme=1"])


def test_setting_a_field_the_model_lacks_in_python_fails():
    cfg = load_config(None)
    with pytest.raises(AttributeError):
        cfg.model.k = 5  # slots: a pvae section has no k


def test_order_of_keys_does_not_matter():
    a = load_config(None, ["model.name=mvae", "model.k=2"])
    b = load_config(None, ["model.k=2", "model.name=mvae"])
    assert a == b and a.model.k == 2 and a.model.name == "mvae"
    # the file's model is replaced by the override's, and the file's keys are checked against it
    c = load_config(ROOT / "configs" / "mnist_label_mvae.yaml", ["model.name=mvae_q"])
    assert (c.model.name, c.model.latent_dim, c.model.anneal_steps) == ("mvae_q", 64, 1200)
    msg = _error(ROOT / "configs" / "mnist_label_mvae.yaml", ["model.name=pvae"])
    assert msg.startswith(f"{ROOT / 'configs' / 'mnist_label_mvae.yaml'}: model.latent_dim=64: "
                          "not a field of model 'pvae'")


def test_a_file_with_another_models_key_fails(tmp_path):
    bad = tmp_path / "vae.yaml"
    bad.write_text("model:\n  name: vae\n  alpha_cm: 10.0\n")  # even at its old default
    msg = _error(bad)
    assert msg.startswith(f"{bad}: model.alpha_cm=10.0: not a field of model 'vae' (it is a field of "
                          "pvae); expected one of the vae fields ")
    fixed = load_config(bad, ["model.name=pvae"])  # the same key is fine once the model has it
    assert fixed.model.alpha_cm == 10.0


@pytest.mark.parametrize(("overrides", "shown", "expected"), [
    (["model.name=mvae", "model.k=1.5"], "model.k=1.5: wrong type", "an integer >= 0"),
    (["model.name=mvae", "model.k=-1"], "model.k=-1: out of range", "an integer >= 0"),
    (["model.name=mvae", "model.lambdas={image: -1}"], "model.lambdas={'image': -1}: out of range",
     "weights >= 0"),
    (["model.name=mvae_q", "model.lambdas=[1, 2]"], "model.lambdas=[1, 2]: wrong type",
     "weights >= 0"),
    (["model.name=mvae", "model.beta=true"], "model.beta=True: wrong type", "a number >= 0"),
    (["model.name=jmvae_kl", "model.alpha=-0.1"], "model.alpha=-0.1: out of range", "a number >= 0"),
    (["model.name=vae", "model.latent_dim=abc"], "model.latent_dim='abc': wrong type",
     "an integer >= 1"),
    (["model.allow_missing=1"], "model.allow_missing=1: wrong type", "a boolean"),
    (["model.semantic_dim=0"], "model.semantic_dim=0: out of range", "an integer >= 1"),
])
def test_model_values_are_type_and_range_checked(overrides, shown, expected):
    msg = _error(None, overrides)
    assert msg.startswith(f"override {overrides[-1]!r}: {shown}; expected ") and expected in msg


def test_values_are_coerced_to_the_dataclass_annotations():
    cfg = load_config(None, ["model.name=mvae", "model.beta=2", "model.lambdas={image: 1, label: 50}"])
    assert cfg.model.beta == 2.0 and isinstance(cfg.model.beta, float)
    assert cfg.model.lambdas == {"image": 1.0, "label": 50.0}
    assert all(isinstance(w, float) for w in cfg.model.lambdas.values())


def test_validate_config_refuses_a_section_of_another_model():
    cfg = ExperimentConfig()
    cfg.model.name = "vae"  # a pvae section renamed in Python
    with pytest.raises(ConfigError, match=r"^config: model.name='vae' but the model section is a "
                                          r"ModelConfig\[pvae\]"):
        validate_config(cfg)
    cfg.model = model_section("vae")(latent_dim=3)
    validate_config(cfg)


def test_configs_survive_pickle_copy_and_a_save_load_round_trip(tmp_path):
    cfg = load_config(ROOT / "configs" / "mnist_label_mvae.yaml", ["model.k=1"])
    assert pickle.loads(pickle.dumps(cfg)) == cfg and copy.deepcopy(cfg) == cfg
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    text = (tmp_path / "c.yaml").read_text()
    assert "semantic_dim" not in text and "  k: 1\n" in text  # flat, only mvae's fields


# --- old run folders: config.yaml with every field of the old flat ModelConfig ----------------------

OLD_MODEL = {  # the model section `dispart train` wrote before issue 9 (configs/mnist_label_mvae.yaml,
    "name": "mvae", "display_name": "MVAE", "modalities": ["image", "label"],  # model.hidden=16)
    "image_net": "mlp", "hidden": 16, "semantic_dim": 32, "style_dim": 32, "latent_dim": 64,
    "alpha_ch": 0.1, "alpha_cm": 10.0, "margin": 0.5, "alpha": 0.1, "allow_missing": False, "k": 0,
    "lambdas": {"image": 1.0, "label": 50.0}, "beta": 1.0, "anneal_steps": 1200,
}
OLD_FILE = """\
data:
  audio: sample
  layout: auto
  images: sample
  split: official
  sample_rate: 8000
  n_mels: 80
  vad_top_db: 30.0
  normalize: global
  augment: none
  warp_freq: 0.1
  warp_time: 0.1
  cache_dir: null
  on_error: raise
  num_workers: 0
  binarize: stochastic
  paired_fraction: 1.0
  unpaired: split
model:
  name: mvae
  display_name: MVAE
  modalities:
  - image
  - label
  image_net: mlp
  hidden: 16
  semantic_dim: 32
  style_dim: 32
  latent_dim: 64
  alpha_ch: 0.1
  alpha_cm: 10.0
  margin: 0.5
  alpha: 0.1
  allow_missing: false
  k: 0
  lambdas:
    image: 1.0
    label: 50.0
  beta: 1.0
  anneal_steps: 1200
train:
  epochs: 1
  max_steps: 3
  checkpoint_every_steps: 0
  batch_size: 100
  bucket_pool: 50
  lr: 0.001
  betas:
  - 0.9
  - 0.999
  seed: 0
  accelerator: auto
  devices: 1
  num_nodes: 1
  strategy: auto
  precision: 32-true
  logger: csv
  log_every_n_steps: 5
  progress_bar: false
  gradient_clip_val: null
  max_time: null
  eval_every: 0
  stop_at_purity: null
eval:
  n_clusters: 10
  k_max: 20
  seed: 0
"""


def _old_file(tmp_path: Path, **changes) -> Path:
    import yaml

    doc = yaml.safe_load(OLD_FILE)
    doc["model"].update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_an_old_saved_config_loads_without_the_other_models_fields(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_FILE)
    cfg = load_config(path)
    assert cfg.to_dict()["model"] == {k: OLD_MODEL[k] for k in [
        "name", "display_name", "modalities", "image_net", "latent_dim", "hidden", "k", "lambdas",
        "beta", "anneal_steps"]} | {"activation": "relu", "decoder_layers": 2,
                                      "categorical_init": "linear"}  # fields added since
    assert (cfg.train.max_steps, cfg.data.binarize) == (3, "stochastic")
    assert model_hparams(cfg) == {  # what the old model_hparams gave for this file
        "name": "mvae", "modalities": [
            {"name": "image", "kind": "vector", "shape": [784], "likelihood": "bernoulli"},
            {"name": "label", "kind": "categorical", "shape": [10], "likelihood": "categorical"}],
        "latent_dim": 64, "hidden": 16, "k": 0, "lambdas": {"image": 1.0, "label": 50.0},
        "beta": 1.0, "anneal_steps": 1200, "activation": "relu", "decoder_layers": 2,
        "categorical_init": "linear"}
    # an old pvae run: the mvae/jmvae fields at their old defaults are dropped the same way
    pvae = load_config(_old_file(tmp_path, name="pvae", modalities=["audio", "image"],
                                 image_net="cnn", lambdas=None, anneal_steps=0, latent_dim=96))
    assert pvae.to_dict()["model"] == {"name": "pvae", "display_name": "MVAE",
                                       "modalities": ["audio", "image"], "image_net": "cnn",
                                       "semantic_dim": 32, "style_dim": 32, "hidden": 16,
                                       "alpha_ch": 0.1, "alpha_cm": 10.0, "margin": 0.5,
                                       "allow_missing": False, "style_beta": 1.0,
                                       "style_beta_on": "all", "alpha_indep": 0.0, "alpha_swap": 0.0,
                                       "alpha_adv": 0.0, "alpha_xcorr": 0.0, "xcorr_weights": None,
                                       "swap_weights": None, "xcorr_momentum": 0.0,
                                       "alpha_semantic_xcorr": 0.0, "penalty_start": 0, "widths": None,
                                       "style_dims": None, "alpha_speaker": 0.0,
                                       "speaker_classes": 0, "speaker_penalty": "critic",
                                       "sequence_encoder": "lstm", "image_channels": 4,
                                       "image_decoder": "paper", "lambdas": None}


def test_an_old_config_without_image_net_or_mvae_fields_loads(tmp_path):
    """The first flat ModelConfig had no image_net, allow_missing, k, lambdas, beta, anneal_steps."""
    import yaml

    doc = yaml.safe_load(OLD_FILE)
    for key in ("image_net", "allow_missing", "k", "lambdas", "beta", "anneal_steps"):
        del doc["model"][key]
    doc["model"].update(name="jmvae_kl", modalities=["audio", "image"], alpha=0.2)
    path = tmp_path / "first.yaml"
    path.write_text(yaml.safe_dump(doc))
    m = load_config(path).model
    assert (m.name, m.latent_dim, m.hidden, m.alpha, m.image_net) == ("jmvae_kl", 64, 16, 0.2, "cnn")


@pytest.mark.parametrize(("change", "shown", "default"), [
    ({"alpha_cm": 0.0}, "model.alpha_cm=0.0", "10.0"),
    ({"semantic_dim": 8}, "model.semantic_dim=8", "32"),
    ({"allow_missing": True}, "model.allow_missing=True", "False"),
    ({"alpha": 0}, "model.alpha=0", "0.1"),
])
def test_an_old_config_with_another_models_field_changed_is_refused(tmp_path, change, shown, default):
    path = _old_file(tmp_path, **change)
    msg = _error(path)
    assert msg.startswith(f"{path}: {shown}: does not apply to model 'mvae'")
    assert f"old default {default}" in msg and "delete the line" in msg and "'anneal_steps'" in msg


def test_an_old_default_counts_only_with_the_same_type(tmp_path):
    msg = _error(_old_file(tmp_path, allow_missing=0))  # 0 == False in Python, not in a config
    assert "model.allow_missing=0: does not apply to model 'mvae'" in msg


def test_the_old_leniency_needs_the_whole_old_section(tmp_path):
    """Without every field of the first flat ModelConfig a file is new: another model's key fails."""
    path = _old_file(tmp_path)
    text = path.read_text().replace("  style_dim: 32\n", "")
    path.write_text(text)
    assert "model.semantic_dim=32: not a field of model 'mvae'" in _error(path)


def test_overrides_get_no_old_leniency(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_FILE)
    msg = _error(path, ["model.alpha_cm=10.0"])
    assert msg.startswith("override 'model.alpha_cm=10.0': model.alpha_cm=10.0: not a field")


def test_every_shipped_config_loads_with_its_models_fields_only():
    for path in [*sorted((ROOT / "configs").glob("*.yaml")), ROOT / "dispart" / "demo.yaml",
                 ROOT / "tests" / "sample.yaml"]:
        cfg = load_config(path)
        own = set(cfg.to_dict()["model"]) - set(COMMON)
        fields = {f.name for f in dataclasses.fields(entry(cfg.model.name).config)}
        assert own == fields, path  # a new model's configs too (its dataclass, no table here)
        if cfg.model.name in OWN_DEFAULTS:
            assert own == set(OWN_DEFAULTS[cfg.model.name]), path


# --- 3. model_hparams from the registry ----------------------------------------------------------

@pytest.mark.parametrize("name", list(OWN_DEFAULTS))
def test_model_hparams_are_the_models_dataclass_fields(name):
    mods = MODALITIES.get(name, "[audio, image]")
    h = model_hparams(load_config(None, [f"model.name={name}", f"model.modalities={mods}"]))
    assert h.pop("name") == name
    assert [m["name"] for m in h.pop("modalities")] == mods.strip("[]").split(", ")
    assert h == OWN_DEFAULTS[name]


def test_model_hparams_on_the_shipped_configs():
    h = model_hparams(load_config(ROOT / "configs" / "mnist_label_jmvae.yaml"))
    assert h == {"name": "jmvae_kl", "modalities": [
        {"name": "image", "kind": "vector", "shape": [784], "likelihood": "bernoulli"},
        {"name": "label", "kind": "categorical", "shape": [10], "likelihood": "categorical"}],
        "latent_dim": 64, "hidden": 512, "alpha": 0.01}
    h = model_hparams(load_config(ROOT / "configs" / "pvae_no_cm.yaml"))
    assert (h["name"], h["alpha_cm"], h["semantic_dim"], "latent_dim" in h) == ("pvae", 0.0, 32, False)


def test_a_combination_the_model_refuses_is_a_config_error_before_training():
    with pytest.raises(ConfigError, match=r"^model \(vae, modalities \['audio', 'image'\]\): .*one"):
        model_hparams(load_config(None, ["model.name=vae"]))


def test_model_hparams_does_not_touch_the_random_state():
    import torch

    torch.manual_seed(0)
    model_hparams(load_config(None))
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


def test_a_new_registry_entry_needs_no_edit_in_config_or_training(monkeypatch):
    """One registry line: the config takes its fields and model_hparams its dataclass."""
    from dataclasses import dataclass

    import dispart.training.run as run
    from dispart.models.registry import REGISTRY, ModelEntry

    @dataclass(frozen=True)
    class ToyConfig:
        width: int = 3
        temperature: float = 0.5

    monkeypatch.setitem(REGISTRY, "toy", ModelEntry("toy", object, ToyConfig))
    built = []
    monkeypatch.setattr(run, "build_model", built.append)  # the toy has no network to build
    cfg = load_config(None, ["model.temperature=2", "model.name=toy", "model.modalities=[label]"])
    assert cfg.to_dict()["model"] == {"name": "toy", "display_name": "PVAE", "modalities": ["label"],
                                      "image_net": "cnn", "width": 3, "temperature": 2.0}
    expected = {"name": "toy", "modalities": [
        {"name": "label", "kind": "categorical", "shape": [10], "likelihood": "categorical"}],
        "width": 3, "temperature": 2.0}
    assert run.model_hparams(cfg) == expected and built == [expected]
    assert "not a field of model 'toy'" in _error(None, ["model.name=toy", "model.hidden=4"])
    assert "model.width='a': wrong type; expected an integer" in _error(
        None, ["model.name=toy", "model.width=a"])


def test_the_strategy_names_match_the_installed_lightning():
    """config.py lists Lightning's strategies itself (no Lightning import below training)."""
    from lightning.pytorch.strategies import StrategyRegistry

    from dispart.config import STRATEGIES

    assert sorted(STRATEGIES) == sorted(StrategyRegistry.available_strategies())
    assert load_config(None, ["train.strategy=ddp_spawn"]).train.strategy == "ddp_spawn"
    assert "train.strategy='telepathy': unknown strategy" in _error(None, ["train.strategy=telepathy"])
