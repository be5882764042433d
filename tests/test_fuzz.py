"""Fuzzing the inputs a user controls: overrides, config files, data files, run folders, CSV rows.

The contract (issue 12, item 4): bad input is one DispartError line naming the input (exit code 2
from the CLI); anything accepted is valid (types, ranges, finite numbers). Never another exception
type, never a NaN in a model. Hypothesis runs derandomized (a fixed seed) on a small budget.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dispart.config import _SECTIONS, field_types, load_config, save_config, validate_config
from dispart.data.corpus import load_waveform, read_manifest
from dispart.data.mnist import load_mnist
from dispart.errors import ConfigError, DataError, DispartError, RunDirError
from dispart.files import read_json

ROOT = Path(__file__).resolve().parents[1]


def fuzz(n: int):
    """Hypothesis settings: fixed seed, ``n`` examples, no deadline, no example database."""
    return settings(derandomize=True, max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- (a) overrides and config files ---------------------------------------------------------------

FIELDS = [f"{s}.{k}" for s in _SECTIONS for k in field_types(s)]
TRICKY_YAML = ["", "null", "~", "true", "no", "[", "]", "{", "[0.9", "[0.9, 0.999]", "[0.9, 1.0]",
               "[1, 2, 3]", "{a: 1}", "'quoted", "!!python/object/apply:os.system [ls]", "&a [*a]",
               "- x", ": :", "0x1F", "1e3", "1.0e3", "1.0e400", ".nan", ".inf", "-.inf", "-5", "0",
               "2.5", "auto", "csv", "pvae", "official", "speaker:george", "speakers:", "00:00:10:00",
               "[audio, image]", "[audio, audio]", "{image: 1.0}", "{image: -1}", "9" * 30,
               "[" * 50, "2020-01-01", "'\n'", "\t", "é", "\x00"]
values = st.one_of(st.sampled_from(TRICKY_YAML), st.integers(-(10**20), 10**20).map(str),
                   st.floats().map(lambda f: yaml.safe_dump(f).split("\n")[0]), st.text(max_size=12))
overrides = st.one_of(
    st.builds(lambda f, v: f"{f}={v}",
              st.sampled_from([*FIELDS, "train.nope", "nope.x", "train", "a.b.c", "", " train.lr"]),
              values),
    st.text(max_size=24),
)


def _check_accepted(cfg, tmp: Path) -> None:
    """An accepted config is valid and survives a save/load round trip unchanged."""
    validate_config(cfg)
    save_config(cfg, tmp / "saved.yaml")
    assert load_config(tmp / "saved.yaml").to_dict() == cfg.to_dict()


@fuzz(150)
@given(item=overrides)
def test_random_override_is_one_line_naming_it_or_valid(item, scratch):
    try:
        cfg = load_config(None, [item])
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"override {item!r}")
    else:
        _check_accepted(cfg, scratch)


yaml_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(),
                      st.text(max_size=8), st.sampled_from(["pvae", "csv", "auto", "official"]))
yaml_value = st.recursive(yaml_leaf, lambda c: st.lists(c, max_size=3)
                          | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)
config_docs = st.one_of(
    st.dictionaries(st.sampled_from([*_SECTIONS, "optim"]),
                    st.one_of(st.none(), yaml_value,
                              st.dictionaries(st.sampled_from([k.split(".")[1] for k in FIELDS]),
                                              yaml_value, max_size=3)),
                    max_size=3),
    yaml_value,
)


@fuzz(150)
@given(doc=config_docs)
def test_random_config_document_is_one_line_naming_file_or_valid(doc, scratch):
    path = scratch / "random.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith(f"{path}: ")
    else:
        _check_accepted(cfg, scratch)


MODEL_KEYS = [k for k in FIELDS if k.startswith("model.") and k != "model.name"]
model_overrides = st.lists(st.builds(lambda f, v: f"{f}={v}", st.sampled_from(MODEL_KEYS),
                                     st.sampled_from(["0", "1", "2.5", "true", "null", "[image]",
                                                      "{image: 1.0}", "mlp", "x"])),
                           max_size=4)


@fuzz(100)
@given(name=st.sampled_from(["pvae", "jmvae_kl", "jmvae", "mvae", "mvae_q", "vae", "vqvae"]),
       items=model_overrides, at=st.integers(0, 4))
def test_model_name_anywhere_in_the_overrides_gives_the_same_config(name, items, at, scratch):
    """``model.name`` first or anywhere among the model overrides: the same config, or an error
    in both cases; every key accepted is a field of that model."""
    first = [f"model.name={name}", *items]
    anywhere = [*items[:at], f"model.name={name}", *items[at:]]
    outcomes = []
    for overrides in (first, anywhere):
        try:
            outcomes.append(load_config(None, overrides))
        except ConfigError as e:
            assert "\n" not in str(e) and str(e).startswith("override 'model.")
            outcomes.append(None)
    assert (outcomes[0] is None) == (outcomes[1] is None)
    if outcomes[0] is not None:
        assert outcomes[0] == outcomes[1] and outcomes[0].model.name == name
        assert {i.split("=")[0].split(".")[1] for i in items} <= set(field_types("model", name))
        _check_accepted(outcomes[0], scratch)


MAGIC = [b"", b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00", b"PK\x03\x04",
         b"\x93NUMPY\x01\x00v\x00", b"{", b'{"format": 2, ', b"\x00\x00\x08\x01", b"\x1f\x8b\x08",
         b"train:\n  epochs: ", b"\xef\xbb\xbf", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":"]
random_bytes = st.builds(lambda head, tail: head + tail, st.sampled_from(MAGIC), st.binary(max_size=300))


@fuzz(40)
@given(data=random_bytes)
def test_random_bytes_as_config_file(data, scratch):
    from dispart.cli import main

    path = scratch / "bytes.yaml"
    path.write_bytes(data)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith(f"{path}: ")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["train", str(path), "--out", str(scratch / "never")]) == 2
        assert err.getvalue() == f"dispart train: error: {e}\n"
        assert not (scratch / "never").exists()
    else:
        validate_config(cfg)


def _cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(ROOT)}


def _cli_error(item: str) -> str | None:
    """The line ``dispart train configs/pvae.yaml --out R ITEM`` must print, or None if accepted."""
    try:
        load_config("configs/pvae.yaml", [item])
    except ConfigError as e:
        return f"dispart train: error: {e}\n"
    return None


# argv cannot hold NUL; a leading '-' is an option (argparse's usage error, tested elsewhere)
bad_overrides = overrides.filter(lambda o: "\x00" not in o and not o.startswith("-")
                                 and _cli_error(o) is not None)


@fuzz(1)
@given(items=st.lists(bad_overrides, min_size=2, max_size=2))
def test_random_bad_overrides_through_the_real_cli(items, scratch):
    """A handful through ``python -m dispart.cli train`` in subprocesses: exit 2, one line."""
    outs = [scratch / f"cli-run-{i}" for i in range(len(items))]
    procs = [subprocess.Popen([sys.executable, "-m", "dispart.cli", "train", "configs/pvae.yaml",
                               "--out", str(out), item], cwd=ROOT, env=_cli_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for item, out in zip(items, outs, strict=True)]  # in parallel: each is mostly imports
    for proc, item, out in zip(procs, items, outs, strict=True):
        _, err = proc.communicate(timeout=300)
        assert (proc.returncode, err) == (2, _cli_error(item))
        assert not out.exists()


def test_a_valid_override_through_the_real_cli_starts_training(tmp_path):
    """The other branch: the CLI accepts it and starts (stopped once config.yaml is written)."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispart.cli", "train", "tests/sample.yaml", "--out", str(out),
         "train.betas=[0.5, 0.75]", "train.progress_bar=false", f"data.cache_dir={tmp_path / 'c'}"],
        cwd=ROOT, env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "config.yaml").is_file() and proc.poll() is None:
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert (out / "config.yaml").is_file(), err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["betas"] == [0.5, 0.75]


# --- (b) random bytes as data files and run folders ------------------------------------------------


def _names(e: DispartError, path: Path) -> bool:
    return str(path) in str(e)


@fuzz(60)
@given(data=random_bytes)
def test_random_bytes_as_wav(data, scratch):
    path = scratch / "random.wav"
    path.write_bytes(data)
    try:
        wave = load_waveform(path, 8000)
    except DataError as e:
        assert _names(e, path)
    else:
        assert wave.dtype == np.float32 and wave.ndim == 1 and wave.size > 0
        assert np.all(np.isfinite(wave)) and np.abs(wave).max() <= 1.0


@fuzz(30)
@given(rate=st.integers(1, 50_000), channels=st.integers(1, 3),
       subtype=st.sampled_from(["PCM_16", "FLOAT", "DOUBLE", "PCM_U8"]),
       samples=st.lists(st.floats(width=32), min_size=0, max_size=60))
def test_random_audio_content_as_wav(rate, channels, subtype, samples, scratch):
    import soundfile as sf

    path = scratch / "content.wav"
    frames = np.asarray(samples, dtype=np.float32)[: len(samples) // channels * channels]
    sf.write(path, frames.reshape(-1, channels), rate, subtype=subtype)
    try:
        wave = load_waveform(path, 8000)
    except DataError as e:
        assert _names(e, path)
    else:
        assert wave.dtype == np.float32 and np.all(np.isfinite(wave)) and np.abs(wave).max() <= 1.0


@fuzz(60)
@given(data=random_bytes)
def test_random_bytes_as_npz(data, scratch):
    path = scratch / "random.npz"
    path.write_bytes(data)
    with pytest.raises(DataError) as e:  # random bytes are never a valid MNIST archive
        load_mnist(path)
    assert _names(e.value, path) and "\n" not in str(e.value)


def _array(shape_x: bool):
    dtypes = st.sampled_from([np.uint8, np.int64, np.int8, np.float32, np.float64, np.bool_])
    shapes = (st.sampled_from([(2, 28, 28), (1, 28, 28), (2, 28), (0, 28, 28), (2, 27, 28)])
              if shape_x else st.sampled_from([(2,), (1,), (2, 1), (0,), ()]))
    return hnp.arrays(dtypes, shapes)


@st.composite
def _mnist_like(draw) -> dict[str, np.ndarray]:
    """Well-formed splits with random pixels and labels (-3..12): the value checks get exercised."""
    out = {}
    for split in ("train", "test"):
        n = draw(st.integers(1, 3))
        dtype = draw(st.sampled_from([np.uint8, np.float32]))
        out[f"x_{split}"] = draw(hnp.arrays(dtype, (n, 28, 28),
                                            elements=st.floats(-0.5, 1.5, width=32)
                                            if dtype == np.float32 else None))
        out[f"y_{split}"] = draw(hnp.arrays(np.int64, (n,), elements=st.integers(-3, 12)))
    return out


OBJECT_ARRAY = np.array(["a", None], dtype=object)  # np.savez pickles it; loading must refuse
random_arrays = st.fixed_dictionaries({"x_train": _array(True), "y_train": _array(False),
                                       "x_test": _array(True), "y_test": _array(False)})


@fuzz(60)
@given(arrays=st.one_of(_mnist_like(), random_arrays),
       swap=st.sampled_from([None, None, "drop:x_train", "drop:y_test", "object:y_train"]))
def test_random_arrays_as_mnist_npz(arrays, swap, scratch):
    path = scratch / "arrays.npz"
    if swap is not None:
        kind, key = swap.split(":")
        arrays = {k: v for k, v in arrays.items() if k != key}
        if kind == "object":
            arrays[key] = OBJECT_ARRAY
    np.savez(path, **arrays)
    try:
        data = load_mnist(path)
    except DataError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
    else:
        for x, y in data.values():
            assert x.dtype == np.float32 and x.shape[1:] == (28, 28) and len(x) == len(y) >= 1
            assert np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1
            assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= 9


@fuzz(60)
@given(data=random_bytes)
def test_random_bytes_as_json(data, scratch):
    path = scratch / "random.json"
    path.write_bytes(data)
    try:
        read_json(path)
    except RunDirError as e:
        assert _names(e, path) and "\n" not in str(e)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run folder of a tiny label VAE (written by save_run, no training)."""
    from dispart.features.fbank import FbankConfig
    from dispart.models import build_model
    from dispart.runs import save_run
    from dispart.training.run import model_hparams

    cfg = load_config(None, ["model.name=vae", "model.modalities=[label]", "model.hidden=4",
                             "model.latent_dim=2"])
    path = tmp_path_factory.mktemp("tiny") / "run"
    save_run(path, cfg, build_model(model_hparams(cfg)), None, FbankConfig(), {})
    return path


def _as_format_1(run: Path) -> None:
    """Drop run.json's hashes (format 1), so a changed file reaches its parser."""
    info = json.loads((run / "run.json").read_text())
    info["format"] = 1
    info.pop("files", None)
    (run / "run.json").write_text(json.dumps(info))


def _assert_loads_finite_or_refuses(run: Path, culprit: Path) -> None:
    from dispart.runs import load_run

    try:
        loaded = load_run(run)
    except DispartError as e:
        assert _names(e, culprit) and "\n" not in str(e), str(e)
    else:
        import torch

        assert all(torch.isfinite(v).all() for v in loaded.model.state_dict().values())


@fuzz(25)
@given(data=random_bytes, target=st.sampled_from(["model.safetensors", "run.json", "config.yaml"]),
       hashed=st.booleans())
def test_random_bytes_in_a_run_folder(data, target, hashed, tiny_run, scratch):
    run = scratch / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(tiny_run, run)
    if not hashed and target != "run.json":
        _as_format_1(run)
    (run / target).write_bytes(data)
    _assert_loads_finite_or_refuses(run, run / target)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_in_a_run_folder_are_refused(value, tiny_run, scratch):
    from safetensors.torch import load_file, save_file

    run = scratch / f"bad-weights-{value}"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(tiny_run, run)
    _as_format_1(run)
    weights = load_file(str(run / "model.safetensors"))
    first = sorted(weights)[0]
    weights[first].view(-1)[0] = value
    save_file(weights, str(run / "model.safetensors"))
    _assert_loads_finite_or_refuses(run, run / "model.safetensors")


# --- (c) random CSV rows ---------------------------------------------------------------------------

cells = st.one_of(st.sampled_from(["a.wav", "missing.wav", "", " ", "3", "ann", "sub/a.wav",
                                   "x" * 140_000]),  # beyond csv's field size limit
                  st.text(alphabet=st.sampled_from(list('ab3,"\n\r \t;\\/.é')), max_size=8))
headers = st.one_of(st.just(["label", "speaker", "path"]),
                    st.permutations(["label", "speaker", "path", "take"]),
                    st.lists(st.sampled_from(["label", "speaker", "path", "take", "x", ""]),
                             max_size=5))
rows = st.lists(st.lists(cells, max_size=5), max_size=6)
GOOD = {"label": "3", "speaker": "ann", "path": "a.wav", "take": "1"}


@st.composite
def _near_valid(draw) -> tuple[list[str], list[list[str]]]:
    """A valid manifest with a few rows broken one way: a blank, extra or random cell, a short row."""
    header = draw(st.permutations(["label", "speaker", "path", *draw(st.sampled_from([[], ["take"]]))]))
    body = []
    for _ in range(draw(st.integers(1, 4))):
        row = [GOOD[c] for c in header]
        fault = draw(st.sampled_from(["none", "none", "blank", "extra", "random", "short"]))
        i = draw(st.integers(0, len(row) - 1))
        if fault == "blank":
            row[i] = draw(st.sampled_from(["", "  "]))
        elif fault == "extra":
            row += draw(st.lists(st.sampled_from(["", "x", " ", "a.wav"]), min_size=1, max_size=2))
        elif fault == "random":
            row[i] = draw(cells)
        elif fault == "short":
            row = row[:i]
        body.append(row)
    return header, body


@fuzz(150)
@given(manifest=st.one_of(st.tuples(headers, rows), _near_valid()), quoted=st.booleans())
def test_random_csv_rows(manifest, quoted, scratch, sample_wav_copy):
    header, body = manifest
    folder = sample_wav_copy
    path = folder / "manifest.csv"
    if quoted:  # well-formed CSV with random cells
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *body])
        text = buf.getvalue()
    else:  # cells joined as they are: stray quotes, commas and line breaks
        text = "\n".join(",".join(r) for r in [header, *body])
    path.write_text(text)
    try:
        utts = read_manifest(path)
    except DataError as e:
        assert str(e).startswith(f"{path}: ") or str(e).startswith(f"{path}, line ")
    else:
        assert utts and all(u.label.strip() and u.speaker.strip() and u.path.is_file() for u in utts)
        # an independent parse: one utterance per non-blank row, no cell beyond the header
        parsed = [r for r in csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))]
        width = len(parsed[0])
        assert len(utts) == sum(1 for r in parsed[1:] if r)
        assert not any(c.strip() for r in parsed[1:] for c in r[width:])


@pytest.fixture(scope="module")
def sample_wav_copy(tmp_path_factory) -> Path:
    from dispart.data.sample import sample_fsdd_dir

    folder = tmp_path_factory.mktemp("csv")
    (folder / "sub").mkdir()
    shutil.copy(sample_fsdd_dir() / "3_jackson_5.wav", folder / "a.wav")
    shutil.copy(sample_fsdd_dir() / "3_jackson_5.wav", folder / "sub" / "a.wav")
    return folder
