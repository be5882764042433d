"""Config loading/overrides, augmentation, DDP batch sharding, data-dir discovery."""

import os

import numpy as np
import pytest

from dispart.batches.paired import LengthBucketSampler
from dispart.batches.pipeline import load_experiment_data
from dispart.config import load_config
from dispart.data.locate import find_data
from dispart.errors import ConfigError
from dispart.features.augment import RandomShift, RandomWarp, shift_image, warp_features
from dispart.training.datamodule import ShardedBatchSampler
from dispart.training.run import _datamodule, model_hparams


def test_every_table1_config_builds_its_model():
    expected = {"pvae": ("pvae", 10.0), "pvae_no_cm": ("pvae", 0.0), "jmvae_kl": ("jmvae_kl", None),
                "vae_sp": ("vae", None), "vae_im": ("vae", None)}
    for name, (model, alpha_cm) in expected.items():
        cfg = load_config(f"configs/{name}.yaml")
        h = model_hparams(cfg)
        assert h["name"] == model
        if alpha_cm is not None:
            assert h["alpha_cm"] == alpha_cm and h["alpha_ch"] == 0.1 and h["margin"] == 0.5
    assert model_hparams(load_config("configs/jmvae_kl.yaml"))["latent_dim"] == 96
    assert [m["name"] for m in model_hparams(load_config("configs/vae_im.yaml"))["modalities"]] \
        == ["image"]
    paper = load_config("configs/pvae.yaml").train
    assert (paper.lr, list(paper.betas), paper.batch_size) == (1e-3, [0.95, 0.999], 256)


def test_overrides_are_typed_and_unknown_fields_named(tmp_path):
    cfg = load_config("configs/pvae.yaml", ["train.epochs=7", "data.cache_dir=null",
                                            "model.alpha_cm=0"])
    assert cfg.train.epochs == 7 and cfg.data.cache_dir is None and cfg.model.alpha_cm == 0
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config("configs/pvae.yaml", ["train.epoch=7"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  nme: pvae\n")
    with pytest.raises(ConfigError, match="model.nme"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown model"):
        model_hparams(load_config(None, ["model.name=vqvae"]))


def test_warp_moves_mel_energy_and_changes_length():
    x = np.zeros((50, 80), dtype=np.float32)
    x[:, 40] = 1.0
    up = warp_features(x, 1.1, 1.0)  # bin k takes the value at k / 1.1: the peak moves up to 44
    assert int(np.argmax(up[0])) == 44 and up.shape == (50, 80)
    assert warp_features(x, 1.0, 0.8).shape == (40, 80)
    np.testing.assert_array_equal(warp_features(x, 1.0, 1.0), x)
    w = RandomWarp(0.1, 0.1, seed=3)
    np.testing.assert_array_equal(w(x, 2, 5), w(x, 2, 5))
    assert any(w(x, e, 5).shape != x.shape or not np.array_equal(w(x, e, 5), x) for e in range(3))


def test_sharded_batches_cover_each_index_once_across_ranks():
    lengths = np.random.default_rng(0).integers(10, 70, size=103)
    base = LengthBucketSampler(lengths, batch_size=8, seed=1)
    shards = [list(ShardedBatchSampler(base, r, 2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(base) // 2
    seen = [i for shard in shards for batch in shard for i in batch]
    assert len(seen) == len(set(seen))  # disjoint across ranks


def test_find_data_locates_fsdd_and_mnist(tmp_path):
    (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    (tmp_path / "fsdd" / "recordings" / "0_a_0.wav").write_bytes(b"")
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist.npz").write_bytes(b"")
    found = find_data(tmp_path)
    assert found == {"data.audio": str(tmp_path / "fsdd" / "recordings"),
                     "data.images": str(tmp_path / "mnist" / "mnist.npz")}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="found neither"):
        find_data(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not a folder"):
        find_data(tmp_path / "missing")


def test_mvae_and_plain_jmvae_build_from_config_and_take_a_step():
    import torch

    from dispart.batches.batch import Sequences
    from dispart.models import build_model

    batch = {"audio": Sequences.from_list([torch.randn(5, 80), torch.randn(3, 80)]),
             "image": torch.rand(2, 1, 28, 28)}
    for name in ("mvae", "mvae_q", "jmvae"):
        mvae_only = ["model.k=1", "model.anneal_steps=10"] if name.startswith("mvae") else []
        cfg = load_config(None, [f"model.name={name}", "model.hidden=8", *mvae_only])
        h = model_hparams(cfg)
        model = build_model(h)
        assert model.name == name or (name == "mvae_q" and model.name.startswith("mvae"))
        loss = model.loss(batch).loss
        loss.backward()
        assert torch.isfinite(loss)


# --- validation: every field, override syntax, config files, flags; one line, exit code 2 ------

BAD_OVERRIDES = [  # (override, field named in the message, value as the message shows it)
    ("train.epochs=abc", "train.epochs", "'abc'"),
    ("train.epochs=0", "train.epochs", "0"),
    ("train.epochs=2.5", "train.epochs", "2.5"),
    ("train.batch_size=-5", "train.batch_size", "-5"),
    ("train.lr=0", "train.lr", "0"),
    ("train.lr=-0.001", "train.lr", "-0.001"),
    ("train.lr=.nan", "train.lr", "nan"),
    ("train.betas=[0.9]", "train.betas", "[0.9]"),
    ("train.betas=[0.9, 1.0]", "train.betas", "[0.9, 1.0]"),
    ("train.betas=[-0.1, 0.9]", "train.betas", "[-0.1, 0.9]"),
    ("train.betas=[a, b]", "train.betas", "['a', 'b']"),
    ("train.betas=0.9", "train.betas", "0.9"),
    ("data.paired_fraction=1.5", "data.paired_fraction", "1.5"),
    ("data.paired_fraction=-0.1", "data.paired_fraction", "-0.1"),
    ("data.warp_freq=1", "data.warp_freq", "1"),
    ("data.layout=timit", "data.layout", "'timit'"),
    ("data.normalize=none", "data.normalize", "'none'"),
    ("data.split=random", "data.split", "'random'"),
    ("data.num_workers=-1", "data.num_workers", "-1"),
    ("data.audio=''", "data.audio", "''"),
    ("model.name=vqvae", "model.name", "'vqvae'"),
    ("model.modalities=[audio, smell]", "model.modalities", "['audio', 'smell']"),
    ("model.modalities=[]", "model.modalities", "[]"),
    ("model.hidden=0", "model.hidden", "0"),
    ("model.alpha_cm=-1", "model.alpha_cm", "-1"),
    ("model.allow_missing=maybe", "model.allow_missing", "'maybe'"),
    ("model.lambdas={image: -1}", "model.lambdas", "{'image': -1}"),
    ("model.lambdas=[1, 2]", "model.lambdas", "[1, 2]"),
    ("train.seed=-1", "train.seed", "-1"),
    ("train.max_steps=0", "train.max_steps", "0"),
    ("train.accelerator=quantum", "train.accelerator", "'quantum'"),
    ("train.devices=0", "train.devices", "0"),
    ("train.strategy=telepathy", "train.strategy", "'telepathy'"),
    ("train.precision=33", "train.precision", "33"),
    ("train.logger=wandb", "train.logger", "'wandb'"),
    ("train.progress_bar=1", "train.progress_bar", "1"),
    ("train.max_time=10", "train.max_time", "10"),
    ("train.stop_at_purity=1.5", "train.stop_at_purity", "1.5"),
    ("train.gradient_clip_val=-1", "train.gradient_clip_val", "-1"),
    ("eval.n_clusters=0", "eval.n_clusters", "0"),
    ("eval.seed=99999999999", "eval.seed", "99999999999"),
]


@pytest.mark.parametrize(("override", "field", "shown"), BAD_OVERRIDES)
def test_bad_value_is_one_line_naming_override_field_and_value(override, field, shown):
    with pytest.raises(ConfigError) as e:
        load_config("configs/pvae.yaml", [override])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"override {override!r}: {field}={shown}: ")
    assert "expected " in msg


def test_every_field_is_checked_and_defaults_and_configs_are_valid():
    import glob

    from dispart.config import _SECTIONS, MODEL_NAMES, RULES, ExperimentConfig, field_types, validate_config
    from dispart.models import MODELS

    validate_config(ExperimentConfig())
    for path in glob.glob("configs/*.yaml") + ["dispart/demo.yaml", "tests/sample.yaml"]:
        validate_config(load_config(path), path)
    assert tuple(MODEL_NAMES) == tuple(MODELS)
    # the model section: the fields of every registered model (config.field_types)
    fields = {f"{s}.{k}" for s in _SECTIONS for k in field_types(s)}
    assert set(RULES) <= fields
    # only booleans, free-text names and the optional per-field lists go without a rule
    assert fields - set(RULES) == {"model.display_name", "model.allow_missing", "train.progress_bar"}
    cfg = ExperimentConfig()
    cfg.train.epochs = "3"  # set in Python, checked on demand
    with pytest.raises(ConfigError, match=r"^config: train\.epochs='3': wrong type"):
        validate_config(cfg)


def test_good_overrides_are_typed():
    cfg = load_config(None, ["model.alpha_cm=0", "train.betas=[0, 0.5]", "train.precision=32",
                             "train.devices=auto", "train.max_time='00:00:10:00'",
                             "data.split=speakers:a,b"])
    mvae = load_config(None, ["model.name=mvae", "model.lambdas={label: 50}"])  # an mvae field
    assert isinstance(cfg.model.alpha_cm, float) and cfg.model.alpha_cm == 0.0
    assert cfg.train.betas == [0.0, 0.5] and all(isinstance(b, float) for b in cfg.train.betas)
    assert mvae.model.lambdas == {"label": 50.0} and cfg.train.devices == "auto"


@pytest.mark.parametrize(("override", "fragment"), [
    ("train.betas=[0.9", "override 'train.betas=[0.9': value '[0.9' is not valid YAML"),
    ("train.epochs", "override 'train.epochs' must look like section.field=value"),
    ("epochs=3", "override 'epochs=3': 'epochs' is not a field"),
    ("optim.lr=3", "override 'optim.lr=3': 'optim.lr' is not a field"),
    ("train.lr.x=3", "override 'train.lr.x=3': 'train.lr.x' is not a field"),
    ("train.epoch=3", "override 'train.epoch=3': unknown field 'train.epoch'"),
    ("model.lambdas={a: [1", "override 'model.lambdas={a: [1': value '{a: [1' is not valid YAML"),
])
def test_override_syntax_errors_are_one_line(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(fragment) and "\n" not in str(e.value)


@pytest.mark.parametrize(("text", "fragment"), [
    ("- a\n- b\n", "top level must be a mapping of sections, got list"),
    ("train: [1, 2]\n", "section 'train' must be a mapping of fields, got list"),
    ("optim:\n  lr: 1\n", "unknown section 'optim'"),
    ("train:\n  epochs: ten\n", "train.epochs='ten': wrong type; expected an integer >= 1"),
    ("train:\n  betas: [0.9, 2]\n", "train.betas=[0.9, 2]: out of range"),
    ("model:\n  nme: pvae\n", "unknown field 'model.nme'"),
    ("train:\n  epochs: [1\n", "not valid YAML: expected ',' or ']'"),
    ("train: {epochs: 1}\n\tbad", "not valid YAML"),
])
def test_config_file_errors_are_one_line_naming_file_and_field(tmp_path, text, fragment):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert str(e.value).startswith(f"{bad}: ") and fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_config_file_not_text_and_empty_sections(tmp_path):
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\x93NUMPY\xff\xfe")
    with pytest.raises(ConfigError, match=rf"^{bad}: cannot read config \(UnicodeDecodeError"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("train:\n")
    assert load_config(empty).train.epochs == 100


def _cli(argv, capsys):
    from dispart.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(("override", "field"), [
    ("train.epochs=abc", "train.epochs"), ("train.batch_size=-5", "train.batch_size"),
    ("train.betas=[0.9", "train.betas"), ("train.lr=0", "train.lr"), ("nope", "nope"),
])
def test_cli_train_bad_override_exits_2_with_one_line(tmp_path, capsys, override, field):
    code, err = _cli(["train", "configs/pvae.yaml", "--out", str(tmp_path / "r"), override], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"dispart train: error: override '{field}")
    assert not (tmp_path / "r").exists()  # refused before anything was written


@pytest.mark.parametrize(("argv", "line"), [
    (["likelihood", "RUN", "--k", "0"], "dispart likelihood: error: --k must be >= 1, got 0"),
    (["likelihood", "RUN", "--k-given", "-3"], "dispart likelihood: error: --k-given must be >= 1, got -3"),
    (["likelihood", "RUN", "--n", "-1"], "dispart likelihood: error: --n must be >= 0, got -1"),
    (["likelihood", "RUN", "--batch-size", "0"],
     "dispart likelihood: error: --batch-size must be >= 1, got 0"),
    (["likelihood", "RUN", "--seed", "-2"],
     "dispart likelihood: error: --seed must be in [0, 4294967295], got -2"),
    (["generate", "RUN", "--griffin-lim-iters", "0"],
     "dispart generate: error: --griffin-lim-iters must be >= 1, got 0"),
    (["report", "RUN", "--rows", "0"], "dispart report: error: --rows must be >= 1, got 0"),
    (["evaluate", "RUN/nope"], "dispart evaluate: error: run folder not found: RUN/nope"),
    (["likelihood", "RUN/nope"], "dispart likelihood: error: run folder not found: RUN/nope"),
])
def test_cli_bad_flags_exit_2_with_one_line(tmp_path, capsys, argv, line):
    argv = [a.replace("RUN", str(tmp_path)) for a in argv]
    code, err = _cli(argv, capsys)
    assert (code, err) == (2, line.replace("RUN", str(tmp_path)) + "\n")


def test_cli_argparse_errors_exit_2_with_usage(tmp_path, capsys):
    from dispart.cli import main

    for argv, fragment in ((["likelihood", str(tmp_path), "--k", "abc"], "argument --k: invalid int"),
                           (["train", "configs/pvae.yaml"], "the following arguments are required: --out"),
                           (["train", "configs/pvae.yaml", "--out", "r", "--bogus"],
                            "unrecognized arguments: --bogus"),
                           (["frobnicate"], "invalid choice: 'frobnicate'")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("usage: dispart") and fragment in err
        assert "Traceback" not in err


def test_cli_missing_audio_names_the_source_precisely(tmp_path, capsys):
    """The audit's `"missing" in err` passed because the path itself contains "missing"."""
    audio = tmp_path / "absent_corpus"
    code, err = _cli(["train", "tests/sample.yaml", "--out", str(tmp_path / "r"),
                      f"data.audio={audio}", "train.progress_bar=false"], capsys)
    assert code == 2
    assert err == f"dispart train: error: {audio}: corpus source does not exist\n"


def test_cli_error_with_line_break_in_a_path_stays_one_line(tmp_path, capsys):
    code, err = _cli(["train", str(tmp_path / "a\nb.yaml"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err.count("\n") == 1 and "a\\nb.yaml" in err


def test_cli_refuses_a_bad_config_before_importing_the_trainer(tmp_path):
    """check_args validates train/demo configs first: no Lightning import, no folder, one line."""
    import subprocess
    import sys

    code = ("import sys\nfrom dispart.cli import main\n"
            f"rc = [main(['train', 'configs/pvae.yaml', '--out', {str(tmp_path / 'r')!r}, "
            "'train.lr=-1']), main(['demo', '--out', " f"{str(tmp_path / 'd')!r}, 'train.epochs=abc'])]\n"
            "print(rc, 'dispart.training.run' in sys.modules, 'lightning' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout == "[2, 2] False False\n", proc.stderr
    assert proc.stderr.splitlines() == [
        "dispart train: error: override 'train.lr=-1': train.lr=-1: out of range; expected a number > 0",
        "dispart demo: error: override 'train.epochs=abc': train.epochs='abc': wrong type; expected an "
        "integer >= 1"]
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


def test_image_shift_moves_pixels_and_fills_zeros():
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4)  # no zero pixels: a fill shows
    down_left = shift_image(x, 1, -2)
    np.testing.assert_array_equal(down_left[0, 0], 0)  # row 0 entered from above
    np.testing.assert_array_equal(down_left[0, 1:, :2], x[0, :3, 2:])  # rows 0-2, cols 2-3 moved
    np.testing.assert_array_equal(down_left[0, :, 2:], 0)
    np.testing.assert_array_equal(shift_image(x, 0, 0), x)
    with pytest.raises(ValueError, match="does not fit"):
        shift_image(x, 4, 0)
    s = RandomShift(2, seed=1)
    np.testing.assert_array_equal(s(x, 3, 7), s(x, 3, 7))
    shifts = {tuple(np.argwhere(s(np.pad(x, ((0, 0), (2, 2), (2, 2))), e, 7) == 1)[0]) for e in range(40)}
    assert len(shifts) > 5 and all(abs(r - 2) <= 2 and abs(c - 2) <= 2 for _, r, c in shifts)
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)


def test_image_shift_reaches_the_training_batches_of_a_speech_image_run():
    """data.image_shift on the embedded sample: every training image is its paired original moved
    as RandomShift says for (seed, epoch, index); the speech is untouched; image + label runs and
    vector images refuse it."""
    cfg = load_config(None, ["data.image_shift=2", "train.seed=4"])
    data = load_experiment_data(cfg.data, progress=False)
    dm = _datamodule(cfg, data)
    dm.setup()
    plain = _datamodule(load_config(None, ["train.seed=4"]), data)
    plain.setup()
    dm.set_epoch(1)
    plain.set_epoch(1)
    shift, moved = RandomShift(2, seed=4), 0
    for i in range(20):
        got, base = dm.dataset[i], plain.dataset[i]
        np.testing.assert_array_equal(got["audio"], base["audio"])
        np.testing.assert_array_equal(got["image"], shift(base["image"], 1, i))
        moved += not np.array_equal(got["image"], base["image"])
    assert moved >= 10
    image_label = load_experiment_data(load_config("configs/mnist_label_mvae.yaml").data,
                                       progress=False, speech=False)
    with pytest.raises(ConfigError, match="vectors of shape \\(784,\\)"):
        _datamodule(load_config("configs/mnist_label_mvae.yaml", ["data.image_shift=1"]), image_label)
    with pytest.raises(ConfigError, match="image \\+ label runs take neither"):
        cnn = ["data.image_shift=1", "model.image_net=cnn"]
        _datamodule(load_config("configs/mnist_label_mvae.yaml", cnn), image_label)
    with pytest.raises(ConfigError, match="data.augment=warp augments the 'audio' modality"):
        _datamodule(load_config("configs/mnist_label_mvae.yaml", ["data.augment=warp"]), image_label)
    with pytest.raises(ConfigError, match="data.image_shift"):
        load_config(None, ["data.image_shift=-1"])
