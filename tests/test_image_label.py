"""Image + label and three-modality runs, end to end on the embedded sample (real MNIST and FSDD
files): binarised data, weak supervision, training, evaluation from every subset, likelihoods."""

import json
import math

import numpy as np
import pytest
import torch

from dispart.batches.pipeline import binarize_images, load_experiment_data
from dispart.cli import main
from dispart.config import load_config
from dispart.errors import ConfigError
from dispart.evaluation.classifiers import DigitClassifier
from dispart.runs import load_run
from dispart.training.datamodule import ImageLabelDataModule
from dispart.training.run import modality_specs, train

FAST = ["model.hidden=32", "train.progress_bar=false", "train.log_every_n_steps=1"]


def test_binarized_images_are_a_fixed_draw_of_the_intensities():
    cfg = load_config("configs/mnist_label_mvae.yaml")
    data = load_experiment_data(cfg.data, speech=False)
    x = data.split("image", "train").examples
    assert set(np.unique(x)) == {0.0, 1.0} and "audio" not in data.sets and "audio" not in data.normalizers
    raw = load_experiment_data(load_config(None, ["model.modalities=[image]"]).data, speech=False)
    again = binarize_images(raw.split("image", "train").examples, "stochastic")
    assert np.array_equal(again, x)  # the same seed gives the same draw
    # Pixels are on about as often as their intensity says, never where the intensity is 0.
    p = raw.split("image", "train").examples
    assert x[p == 0].max() == 0.0 and abs(x.mean() - p.mean()) < 0.01
    thr = binarize_images(p, "threshold")
    assert np.array_equal(thr, (p > 0.5).astype(np.float32))
    with pytest.raises(ConfigError, match="data.binarize"):
        load_experiment_data(load_config(None, ["data.binarize=yes"]).data, speech=False)


def test_dynamic_binarisation_redraws_training_images_every_epoch_and_nothing_else():
    cfg = load_config("configs/mnist_label_mvae.yaml", ["data.binarize=dynamic"])
    data = load_experiment_data(cfg.data, speech=False)
    fixed = load_experiment_data(load_config("configs/mnist_label_mvae.yaml").data, speech=False)
    train_set = data.split("image", "train")
    # Evaluation sees the fixed draw of "stochastic" (train and test); training, new draws.
    for split in ("train", "test"):
        assert np.array_equal(data.split("image", split).examples, fixed.split("image", split).examples)
    assert "intensity" not in data.split("image", "test").meta
    p = np.stack(train_set.meta["intensity"])
    assert p.shape == (len(train_set), 28, 28) and 0 < p.mean() < 1 and set(np.unique(p)) > {0.0, 1.0}
    specs = modality_specs(cfg)
    assert specs["image"].likelihood == "bernoulli"
    dm = ImageLabelDataModule(data, [specs["image"], specs["label"]], batch_size=50, seed=3, redraw=True)
    dm.setup()
    first = np.stack([dm.dataset[i]["image"] for i in range(200)])
    again = np.stack([dm.dataset[i]["image"] for i in range(200)])
    assert first.shape == (200, 784) and set(np.unique(first)) == {0.0, 1.0}
    assert np.array_equal(first, again)  # a function of (seed, epoch, index): resumes draw the same
    assert [dm.dataset[i]["label"] for i in range(5)] == [int(y) for y in train_set.labels[:5]]
    draws = []
    for epoch in range(1, 41):
        dm.set_epoch(epoch)
        draws.append(np.stack([dm.dataset[i]["image"] for i in range(200)]))
    assert not np.array_equal(draws[0], first)
    # Over 41 draws a pixel is on about as often as its intensity, never where it is 0.
    on = np.mean([first, *draws], axis=0)
    p200 = p[:200].reshape(200, 784)
    assert on[p200 == 0].max() == 0.0 and on[p200 == 1].min() == 1.0
    assert np.abs(on - p200).mean() < 0.02
    # Without redraw (data.binarize=stochastic) the items are the fixed draw.
    plain = ImageLabelDataModule(data, [specs["image"], specs["label"]], batch_size=50)
    plain.setup()
    assert np.array_equal(plain.dataset[7]["image"], train_set.examples[7].reshape(784))
    with pytest.raises(ConfigError, match="data.binarize=dynamic"):
        ImageLabelDataModule(fixed, [specs["image"], specs["label"]], redraw=True).setup()


def test_dynamic_binarisation_is_refused_where_images_are_not_redrawn(tmp_path):
    with pytest.raises(ConfigError, match="data.binarize=dynamic .*image \\+ label"):
        train(load_config(None, ["data.binarize=dynamic", *FAST]), tmp_path / "p")
    with pytest.raises(ConfigError, match="data.binarize"):
        load_config(None, ["data.binarize=dynamically"])


def _counts(dm):
    dm.setup()
    rows = [dm.dataset[i] for i in range(len(dm.dataset))]
    both = sum(("image" in r) and ("label" in r) for r in rows)
    return both, sum("label" not in r for r in rows), sum("image" not in r for r in rows)


def test_weak_supervision_keeps_a_fraction_paired_and_unpairs_the_rest():
    cfg = load_config("configs/mnist_label_mvae.yaml", ["data.paired_fraction=0.1"])
    data = load_experiment_data(cfg.data, speech=False)
    specs = modality_specs(cfg)
    n = len(data.split("image", "train"))
    dm = ImageLabelDataModule(data, [specs["image"], specs["label"]], batch_size=50,
                              paired_fraction=0.1)
    paired, image_only, label_only = _counts(dm)
    assert paired == round(0.1 * n) and image_only + label_only == n - paired
    assert abs(image_only - label_only) <= 1
    # A batch marks the rows that lack a modality.
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (784,) and batch["label"].dtype == torch.int64
    has = batch.get("image:present", torch.ones(len(batch["image"]), dtype=torch.bool))
    assert batch["image"][~has].abs().sum() == 0
    drop = ImageLabelDataModule(data, [specs["image"], specs["label"]], batch_size=50,
                                paired_fraction=0.1, unpaired="drop")
    assert _counts(drop) == (round(0.1 * n), 0, 0)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="data.unpaired=drop"):
        train(load_config("configs/mnist_label_jmvae.yaml", ["data.paired_fraction=0.5", *FAST]),
              tmp_path / "j")
    with pytest.raises(ConfigError, match="model.image_net"):
        modality_specs(load_config(None, ["model.image_net=transformer"]))
    with pytest.raises(ConfigError, match="paired_fraction"):
        train(load_config("configs/mnist_label_mvae.yaml", ["data.paired_fraction=2", *FAST]),
              tmp_path / "m")


@pytest.fixture(scope="module")
def mvae_run(tmp_path_factory, single_thread):
    run = tmp_path_factory.mktemp("il") / "mvae"
    assert main(["train", "configs/mnist_label_mvae.yaml", "--out", str(run), "train.epochs=30",
                 "data.paired_fraction=0.5", "model.anneal_steps=20", "train.batch_size=50",
                 *FAST, "model.hidden=64"]) == 0
    return run


def test_image_label_run_trains_evaluates_and_predicts_labels(mvae_run, capsys):
    info = json.loads((mvae_run / "run.json").read_text())
    assert info["normalizer"] is None and info["data"]["paired_fraction"] == 0.5
    assert info["model"]["modalities"][0] == {"name": "image", "kind": "vector", "shape": [784],
                                              "likelihood": "bernoulli"}
    assert main(["evaluate", str(mvae_run), "--no-curves"]) == 0
    out = capsys.readouterr().out
    assert "inference from each subset" in out
    result = json.loads((mvae_run / "evaluation.json").read_text())
    rows = {tuple(r["given"]): r for r in result["subsets"]["subsets"]}
    assert set(rows) == {("image", "label"), ("image",), ("label",)}
    # 30 short epochs on 1,200 images: z from image and label together clusters by digit, z
    # from the image alone far better than untrained encoders (~20% k-means purity).
    assert rows[("image", "label")]["purity"] > 0.9 and rows[("image",)]["purity"] > 0.3
    assert rows[("label",)]["purity"] == pytest.approx(1.0)  # z from the label alone: 10 points
    assert 0.0 <= rows[("label",)]["coherence"]["image"] <= 1.0
    assert 0.0 <= rows[("image",)]["coherence"]["label"] <= 1.0
    # Coherence recomputed here from the model and the run's image judge: the fraction of the
    # 400 MNIST test examples whose decoded label (argmax) / decoded image (judged) is their digit.
    run = load_run(mvae_run)
    data = load_experiment_data(run.config.data, speech=False)
    test = data.split("image", "test")
    y = np.asarray(test.labels, dtype=np.int64)
    model = run.model.eval()
    with torch.no_grad():
        z_image = model.encode({"image": torch.as_tensor(test.examples).reshape(-1, 784)})
        z_label = model.encode({"label": torch.as_tensor(y)})
        labels = model.decode({"z": z_image["z"].mean}, "label").argmax(-1).numpy()
        images = model.decode({"z": z_label["z"].mean}, "image").reshape(-1, 28, 28).numpy()
    judged = DigitClassifier.load(mvae_run / "classifiers" / "image").predict(list(images))
    one = 1 / len(y) + 1e-9  # at most one argmax tie may flip
    assert rows[("image",)]["coherence"]["label"] == pytest.approx(np.mean(labels == y), abs=one)
    assert rows[("label",)]["coherence"]["image"] == pytest.approx(
        np.mean([p == str(t) for p, t in zip(judged, y, strict=True)]), abs=one)
    # Images generated from the label are mostly the right digit (chance: 0.1; measured 0.59).
    assert rows[("label",)]["coherence"]["image"] > 0.3


def test_likelihood_cli_writes_tables_2_and_3(mvae_run, capsys):
    out = mvae_run / "lk.json"
    assert main(["likelihood", str(mvae_run), "--k", "50", "--k-given", "100", "--n", "40",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 40 and res["k"] == 50 and res["x1"] == "image" and res["x2"] == "label"
    for key in ("log_p_x1", "log_p_x1_x2", "log_p_x1_given_x2"):
        assert np.isfinite(res[key]) and res[key] < 0 and res[key + "/log_w_var"] >= 0
    # log p(x1, x2) <= log p(x1) up to estimator noise (a label has probability <= 1).
    assert res["log_p_x1_x2"] < res["log_p_x1"] + 1.0
    # log p(x1 | x2) = log p(x1, x2) - log p(x2): the implied log p(label) is about log(1/10)
    # (balanced digits; measured -2.39), and the conditional reports its joint term's variance.
    assert res["log_p_x1_x2"] - res["log_p_x1_given_x2"] == pytest.approx(math.log(0.1), abs=0.5)
    assert res["log_p_x1_given_x2/log_w_var"] == res["log_p_x1_x2/log_w_var"] > 0
    assert "log_p_x1_given_x2" in capsys.readouterr().out
    assert main(["likelihood", str(mvae_run), "--x2", "audio"]) == 2
    assert main(["likelihood", str(mvae_run), "--proposal", "image,speech"]) == 2
    assert main(["likelihood", str(mvae_run), "--k", "5", "--k-given", "5", "--n", "10",
                 "--proposal", "image,label", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["proposals"]["log_p_x1"] == "q(z|image,label)"
    assert main(["likelihood", str(mvae_run), "--k", "5", "--n", "10", "--x2", "", "--out",
                 str(out)]) == 0  # log p(x1) only
    only = json.loads(out.read_text())
    assert only["x2"] is None and "log_p_x1_x2" not in only and np.isfinite(only["log_p_x1"])


def test_three_modalities_with_each_missing_at_test(tmp_path, single_thread):
    run = tmp_path / "pvae3"
    assert main(["train", "tests/sample.yaml", "--out", str(run), "train.epochs=2",
                 "model.modalities=[audio,image,label]", "model.allow_missing=true",
                 "train.batch_size=64", f"data.cache_dir={tmp_path / 'cache'}", *FAST]) == 0
    assert main(["evaluate", str(run), "--no-curves"]) == 0
    res = json.loads((run / "evaluation.json").read_text())["subsets"]
    given = [tuple(r["given"]) for r in res["subsets"]]
    assert len(given) == 7 and ("audio", "image") in given and ("label",) in given
    row = next(r for r in res["subsets"] if r["given"] == ["audio", "image"])
    assert set(row["coherence"]) == {"label"} and row["latent"] == "z_s"
    row = next(r for r in res["subsets"] if r["given"] == ["label"])
    assert set(row["coherence"]) == {"audio", "image"}
    assert res["n"] == 100  # every test utterance of the sample, paired with a test image


def test_subsets_a_model_cannot_encode_are_reported_not_crashed():
    from dispart.evaluation.subsets import evaluate_subsets, label_judge
    from dispart.models import build_model

    torch.manual_seed(0)
    mods = [{"name": "a", "kind": "vector", "shape": [5], "likelihood": "gaussian"},
            {"name": "b", "kind": "vector", "shape": [4], "likelihood": "gaussian"},
            {"name": "label", "kind": "categorical", "shape": [3], "likelihood": "categorical"}]
    model = build_model({"name": "jmvae_kl", "modalities": mods, "latent_dim": 4, "hidden": 8,
                         "alpha": 0.1})
    y = torch.arange(30) % 3
    batch = {"a": torch.randn(30, 5), "b": torch.randn(30, 4), "label": y}
    res = evaluate_subsets(model, batch, y.numpy(), {"label": label_judge}, n_clusters=3)
    done = {tuple(r["given"]) for r in res["subsets"]}
    refused = {tuple(r["given"]) for r in res["unsupported"]}
    assert done == {("a", "b", "label"), ("a",), ("b",), ("label",)}
    assert refused == {("a", "b"), ("a", "label"), ("b", "label")}
    assert all(r["reason"] for r in res["unsupported"])
    for r in res["unsupported"]:  # the reason names the subset and why
        assert f"cannot infer from modalities {r['given']}" in r["reason"]
        assert "no encoder for other subsets" in r["reason"]
    a_only = next(r for r in res["subsets"] if r["given"] == ["a"])
    assert set(a_only["coherence"]) == {"label"} and a_only["latent"] == "z"
    # Coherence is the fraction of rows judged to be their own label: a judge right on exactly
    # the first 20 of the 30 rows scores 2/3.
    def judge(decoded):
        assert len(decoded) == 30
        pred = y.numpy().copy()
        pred[20:] = (pred[20:] + 1) % 3
        return pred

    res = evaluate_subsets(model, batch, y.numpy(), {"label": judge}, n_clusters=3, subsets=[("a",)])
    assert res["subsets"][0]["coherence"] == {"label": pytest.approx(2 / 3)}


def test_generate_and_report_explain_what_an_image_label_run_lacks(mvae_run, capsys):
    for command in ("generate", "report"):
        assert main([command, str(mvae_run)]) == 2
        err = capsys.readouterr().err
        assert "missing ['audio']" in err and "dispart likelihood" in err
        # One line, naming the command and the run, not a traceback.
        assert err.count("\n") == 1 and f"dispart {command}: error: {mvae_run}:" in err
        assert "Traceback" not in err
