"""Crash-safe run folders and outputs: hashes in run.json, one-line errors for truncated or
tampered files (in process and through the CLI), stale outputs keyed by the weights' hash,
judge classifiers retrained when their files are corrupt, atomic writes that survive a crash."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import dispart.files
import dispart.runs
from dispart.batches.modality import ModalitySpec
from dispart.batches.pipeline import ExperimentData, ImageSet
from dispart.cli import main
from dispart.config import load_config
from dispart.errors import RunDirError
from dispart.evaluation.classifiers import DigitClassifier, run_classifiers, train_image_classifier
from dispart.evaluation.evaluate import evaluate_run
from dispart.evaluation.table import (
    EvaluationFileError,
    StaleOutputError,
    fresh_run_output,
    read_evaluation_of,
    read_run_output,
    write_evaluation_json,
    write_run_output,
)
from dispart.features.fbank import FbankConfig
from dispart.features.normalize import FeatureNormalizer
from dispart.runs import load_run, save_run

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).parents[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_last_byte(path: Path) -> None:
    """Change one byte of tensor data: still a valid safetensors file, different weights."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real MVAE image + label run, 1 epoch on the embedded MNIST sample (~4 s)."""
    run = tmp_path_factory.mktemp("runfiles") / "mvae"
    assert main(["train", str(ROOT / "configs/mnist_label_mvae.yaml"), "--out", str(run),
                 "train.epochs=1", "model.hidden=16", "train.progress_bar=false"]) == 0
    return run


@pytest.fixture
def run_copy(run_dir, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    return copy


def _rewrite_info(run: Path, **changes) -> None:
    info = json.loads((run / "run.json").read_text())
    info.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del info[key]
    (run / "run.json").write_text(json.dumps(info))


# --------------------------------------------------------------------------- run folders


def test_run_json_records_the_hashes_and_load_run_reuses_them(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    assert info["format"] == 2
    assert info["files"] == {"config.yaml": _sha(run_dir / "config.yaml"),
                             "model.safetensors": _sha(run_dir / "model.safetensors")}
    assert load_run(run_dir).weights_sha256 == _sha(run_dir / "model.safetensors")
    assert _temp_files(run_dir) == []


def _as_format_1(run: Path) -> None:
    _rewrite_info(run, format=1, files=None)


def _drop_a_tensor(run: Path) -> None:
    state = load_file(str(run / "model.safetensors"))
    del state["generative.decoders.image.net.0.bias"]
    save_file(state, str(run / "model.safetensors"))


DAMAGE = {
    # name: (damage, expected message; {run} is the run folder)
    "truncated config.yaml": (
        lambda r: _truncate(r / "config.yaml"),
        r"{run}/config\.yaml: SHA-256 [0-9a-f]{{16}}\.\.\. does not match [0-9a-f]{{16}}\.\.\. "
        r"recorded in run\.json \(the file is truncated, corrupt or was changed after training\)"),
    "truncated model.safetensors": (
        lambda r: _truncate(r / "model.safetensors"),
        r"{run}/model\.safetensors: SHA-256 [0-9a-f]{{16}}\.\.\. does not match"),
    "tampered model.safetensors": (
        lambda r: _flip_last_byte(r / "model.safetensors"),
        r"{run}/model\.safetensors: SHA-256 [0-9a-f]{{16}}\.\.\. does not match"),
    "truncated run.json": (
        lambda r: _truncate(r / "run.json"),
        r"{run}/run\.json: not a readable JSON file \(JSONDecodeError: "),
    "run.json without hashes": (
        lambda r: _rewrite_info(r, files=None),
        r"{run}/run\.json: 'files' must record the SHA-256 of config\.yaml and "
        r"model\.safetensors; got None"),
    "run.json not an object": (
        lambda r: (r / "run.json").write_text("[1, 2]"),
        r"{run}/run\.json: not a run description \(top level is list, not an object\)"),
    "format 1, truncated model.safetensors": (
        lambda r: (_as_format_1(r), _truncate(r / "model.safetensors")),
        r"{run}/model\.safetensors: not a readable safetensors file \(Error while deserializing "
        r"header: "),
    "format 1, a tensor missing": (
        lambda r: (_as_format_1(r), _drop_a_tensor(r)),
        r"{run}/model\.safetensors: tensors do not match the model of run\.json \(missing: "
        r"\['generative\.decoders\.image\.net\.0\.bias'\]; unexpected: \[\]\)"),
    "format 1, config.yaml with an unknown field": (
        lambda r: (_as_format_1(r), (r / "config.yaml").write_text("model:\n  nope: 1\n")),
        r"{run}/config\.yaml: unknown field 'model\.nope'; model( '\w+')? has \["),
    "format 1, unknown model hyper-parameter": (
        lambda r: (_as_format_1(r), _rewrite_info(r, model={"name": "nope"})),
        r"{run}/run\.json: invalid model hyper-parameters \("),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_run_folder_is_one_error_line_naming_the_file(run_copy, case, capsys):
    damage, pattern = DAMAGE[case]
    damage(run_copy)
    with pytest.raises(RunDirError) as info:
        load_run(run_copy)
    message = str(info.value)
    assert re.match(pattern.format(run=run_copy), message), message
    assert "\n" not in message
    assert main(["evaluate", str(run_copy), "--no-curves"]) == 2
    assert capsys.readouterr().err == f"dispart evaluate: error: {message}\n"
    assert not (run_copy / "evaluation.json").exists()


@pytest.mark.parametrize("name", ["config.yaml", "model.safetensors", "run.json"])
def test_cli_subprocess_exit_2_and_one_line_no_traceback(run_copy, name):
    _truncate(run_copy / name)
    done = subprocess.run([sys.executable, "-m", "dispart.cli", "evaluate", str(run_copy)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"dispart evaluate: error: {run_copy / name}: ")
    assert done.stdout == ""


def test_an_old_format_1_run_folder_still_loads(run_copy):
    _as_format_1(run_copy)
    run = load_run(run_copy)
    assert run.info["format"] == 1 and "files" not in run.info
    assert run.weights_sha256 == _sha(run_copy / "model.safetensors")


def test_every_modalitys_normaliser_is_stored_and_old_runs_fall_back_to_audio(run_copy):
    run = load_run(run_copy)  # image + label: nothing standardised
    assert run.normalizer is None and run.normalizers == {}
    audio = FeatureNormalizer().fit([np.array([[0.0], [4.0]], np.float32)])
    other = FeatureNormalizer().fit([np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)])
    save_run(run_copy, run.config, run.model, audio, run.fbank, run.info["data"],
             normalizers={"audio": audio, "speech": other})
    again = load_run(run_copy)
    assert again.normalizers["speech"].mean.tolist() == [2.0, 4.0]
    assert again.normalizers["speech"].std.tolist() == [1.0, 2.0]
    assert again.normalizers["audio"].mean.tolist() == [2.0] == again.normalizer.mean.tolist()
    info = json.loads((run_copy / "run.json").read_text())
    del info["normalizers"]  # a run.json written before "normalizers" existed: "audio" only
    (run_copy / "run.json").write_text(json.dumps(info))
    old = load_run(run_copy)
    assert set(old.normalizers) == {"audio"} and old.normalizers["audio"].mean.tolist() == [2.0]


# Weight names of MVAE runs and checkpoints written before the generative/inference split.
OLD_MVAE_PREFIXES = {"inference.experts.": "experts.", "generative.decoders.": "decoders."}


def _old_names(state: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in state.items():
        rest = k[len(prefix):]
        for new, old in OLD_MVAE_PREFIXES.items():
            if rest.startswith(new):
                rest = old + rest[len(new):]
        out[prefix + rest] = v
    return out


def test_a_run_folder_with_old_weight_names_still_loads(run_copy):
    new = load_file(str(run_copy / "model.safetensors"))
    old = _old_names(new)
    assert "experts.image.pre.net.0.weight" in old and "decoders.label.net.0.bias" in old
    assert "anneal_step" in old and not any(k.startswith(("inference.", "generative.")) for k in old)
    save_file(old, str(run_copy / "model.safetensors"))
    files = json.loads((run_copy / "run.json").read_text())["files"]
    _rewrite_info(run_copy, files={**files, "model.safetensors": _sha(run_copy / "model.safetensors")})
    run = load_run(run_copy)
    got = run.model.state_dict()
    assert set(got) == set(new)
    assert all(torch.equal(got[k], new[k]) for k in new)


def test_a_checkpoint_with_old_weight_names_resumes(run_dir, tmp_path):
    from dispart.training.resume import load_checkpoint, resume_checkpoint

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    new = dict(ckpt["state_dict"])
    assert any(k.startswith("model.inference.experts.") for k in new)
    ckpt["state_dict"] = _old_names(new, prefix="model.")
    assert "model.experts.image.pre.net.0.weight" in ckpt["state_dict"]
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save(ckpt, folder / "last.ckpt")
    loaded = load_checkpoint(folder / "last.ckpt")
    assert set(loaded["state_dict"]) == set(new)
    assert all(torch.equal(loaded["state_dict"][k], new[k]) for k in new)
    assert resume_checkpoint(folder, new, quiet=True) == folder / "last.ckpt"


def test_an_unfinished_save_leaves_the_old_weights_and_no_finished_run(run_copy, monkeypatch):
    """A crash while model.safetensors is written: the old file is intact, no temp file is
    left, and the folder is not a finished run (run.json is written last)."""
    before = (run_copy / "model.safetensors").read_bytes()
    run = load_run(run_copy)

    def crash_midway(state, filename):
        Path(filename).write_bytes(before[:100])  # part of a file, then the process "dies"
        raise OSError("simulated crash")

    monkeypatch.setattr(dispart.runs, "save_file", crash_midway)
    with pytest.raises(OSError, match="simulated crash"):
        save_run(run_copy, run.config, run.model, run.normalizer, run.fbank, run.info["data"])
    assert (run_copy / "model.safetensors").read_bytes() == before
    assert _temp_files(run_copy) == []
    with pytest.raises(RunDirError, match=r"is not a finished dispart run: run\.json is missing "
                                          r"\(training may not have finished"):
        load_run(run_copy)


# --------------------------------------------------------------------------- outputs


def test_evaluation_json_records_the_weights_and_goes_stale_when_they_change(run_copy):
    result = evaluate_run(run_copy, progress=False, curves=False)
    sha = _sha(run_copy / "model.safetensors")
    saved = json.loads((run_copy / "evaluation.json").read_text())
    assert saved["weights_sha256"] == sha == result["weights_sha256"]
    assert read_evaluation_of(run_copy)["rows"] == saved["rows"]
    assert fresh_run_output(run_copy / "evaluation.json", sha) == saved
    # New weights (e.g. after --resume): the output no longer belongs to the run.
    run = load_run(run_copy)
    with torch.no_grad():
        next(run.model.parameters()).add_(1.0)
    save_run(run_copy, run.config, run.model, run.normalizer, run.fbank, run.info["data"])
    new = load_run(run_copy).weights_sha256
    assert new != sha
    with pytest.raises(StaleOutputError) as info:
        read_run_output(run_copy / "evaluation.json", new)
    assert str(info.value) == (f"{run_copy / 'evaluation.json'}: stale output: it was computed "
                               f"from weights {sha[:16]}..., not the current {new[:16]}... "
                               f"(compute it again)")
    assert fresh_run_output(run_copy / "evaluation.json", new) is None
    with pytest.raises(StaleOutputError, match=rf"\(run `dispart evaluate {run_copy}` again\)"):
        read_evaluation_of(run_copy)


def test_outputs_without_a_weights_record_are_stale_and_corrupt_ones_are_named(tmp_path, capsys):
    old = tmp_path / "evaluation.json"
    write_evaluation_json(old, {"rows": []})  # as written before weights_sha256 existed
    with pytest.raises(StaleOutputError, match="it records no weights_sha256"):
        read_run_output(old, "a" * 64)
    assert fresh_run_output(old, "a" * 64) is None
    assert fresh_run_output(tmp_path / "missing.json", "a" * 64) is None
    out = tmp_path / "likelihood.json"
    write_run_output(out, {"log_p_x1": -90.5, "k_given": None}, "b" * 64)
    assert json.loads(out.read_text()) == {"k_given": None, "log_p_x1": -90.5,
                                           "weights_sha256": "b" * 64}
    assert capsys.readouterr().err == ""
    _truncate(out)
    assert fresh_run_output(out, "b" * 64) is None
    err = capsys.readouterr().err
    assert err.startswith(f"dispart: warning: malformed evaluation JSON {out}: ")
    assert err.endswith("; computing it again\n") and err.count("\n") == 1
    with pytest.raises(EvaluationFileError, match="malformed evaluation JSON"):
        read_run_output(out, "b" * 64)


def test_a_crash_while_writing_an_output_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "quality.json"
    write_run_output(out, {"accuracy": 0.5}, "c" * 64)
    before = out.read_bytes()

    def crash(fd):
        raise OSError("simulated crash before the data reached the disk")

    monkeypatch.setattr(dispart.files.os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_run_output(out, {"accuracy": 0.9}, "c" * 64)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quality.json"]


# --------------------------------------------------------------------------- judge classifiers


def _tiny_data() -> ExperimentData:
    rng = np.random.default_rng(0)
    labels = [str(i % 3) for i in range(30)]
    images = np.zeros((30, 28, 28), np.float32)
    for i, y in enumerate(labels):  # one bright band per class, plus noise
        images[i, 9 * int(y): 9 * int(y) + 9] = 1.0
    images += 0.1 * rng.random(images.shape, dtype=np.float32)
    train, test = ImageSet(images[:24], labels[:24]), ImageSet(images[24:], labels[24:])
    return ExperimentData({"image": {"train": train, "test": test}},
                          {"image": ModalitySpec("image", "image", (1, 28, 28))}, {}, FbankConfig(),
                          "example")


def _fake_run(path: Path) -> SimpleNamespace:
    return SimpleNamespace(path=path, normalizer=None,
                           config=load_config(ROOT / "configs/mnist_label_mvae.yaml"))


def _damage_classifier(kind: str, stem: Path) -> Path:
    target = stem.with_suffix(".json" if kind == "truncated json" else ".safetensors")
    if kind == "tampered weights":
        _flip_last_byte(target)
    else:
        _truncate(target)
    return target


@pytest.fixture(scope="module")
def judges(tmp_path_factory) -> tuple[Path, DigitClassifier]:
    """A run folder holding the image judge run_classifiers trained and saved, and the same
    judge trained independently (the reference a retrained judge must equal exactly)."""
    folder = tmp_path_factory.mktemp("judges")
    first = run_classifiers(_fake_run(folder), _tiny_data())["image"]
    data = _tiny_data()
    train = data.split("image", "train")
    reference = train_image_classifier(train.examples, train.labels)
    for k, v in reference.net.state_dict().items():
        assert torch.equal(first.net.state_dict()[k], v), k
    return folder, reference


def test_a_judge_of_other_speech_frames_is_retrained(judges, tmp_path):
    """A cached judge carries the data signature it was trained on; features with another frame
    timing (data.hop_ms / win_ms) do not match it, so it is trained again, and its signature says so."""
    shutil.copytree(judges[0] / "classifiers", tmp_path / "classifiers")
    run = _fake_run(tmp_path)
    stem = tmp_path / "classifiers" / "image"
    kept = run_classifiers(run, _tiny_data())["image"]  # same signature: loaded, not retrained
    assert "hop_ms" not in kept.meta["data"] and kept.meta == DigitClassifier.load(stem).meta
    before = stem.with_suffix(".json").stat().st_mtime_ns
    run.config.data.hop_ms, run.config.data.win_ms = 20.0, 40.0
    again = run_classifiers(run, _tiny_data())["image"]
    assert (again.meta["data"]["hop_ms"], again.meta["data"]["win_ms"]) == (20.0, 40.0)
    assert stem.with_suffix(".json").stat().st_mtime_ns != before
    assert json.loads(stem.with_suffix(".json").read_text())["meta"]["data"]["hop_ms"] == 20.0


@pytest.mark.parametrize("kind", ["truncated weights", "tampered weights", "truncated json"])
def test_a_corrupt_judge_is_named_in_one_warning_and_retrained(judges, tmp_path, kind, capsys):
    shutil.copytree(judges[0] / "classifiers", tmp_path / "classifiers")
    data, run, stem = _tiny_data(), _fake_run(tmp_path), tmp_path / "classifiers" / "image"
    target = _damage_classifier(kind, stem)
    with pytest.raises(RunDirError) as info:
        DigitClassifier.load(stem)
    assert str(info.value).startswith(f"{target}: ")
    assert "\n" not in str(info.value)
    again = run_classifiers(run, data)["image"]
    assert capsys.readouterr().err == f"dispart: warning: {info.value}; retraining the judge\n"
    for k, v in judges[1].net.state_dict().items():
        assert torch.equal(again.net.state_dict()[k], v), k
    reloaded = DigitClassifier.load(stem)  # the retrained judge was saved again, intact
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert saved["weights_sha256"] == _sha(stem.with_suffix(".safetensors"))
    test = data.split("image", "test").examples
    assert reloaded.predict(test) == again.predict(test)
    assert _temp_files(tmp_path) == []


def test_an_intact_judge_is_reused_without_training(judges, monkeypatch, capsys):
    import dispart.evaluation.classifiers as classifiers

    def no_training(*args, **kwargs):
        raise AssertionError("an intact judge was trained again")

    monkeypatch.setattr(classifiers, "train_image_classifier", no_training)
    clf = run_classifiers(_fake_run(judges[0]), _tiny_data())["image"]
    for k, v in judges[1].net.state_dict().items():
        assert torch.equal(clf.net.state_dict()[k], v), k
    assert capsys.readouterr().err == ""
