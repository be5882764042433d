"""Corpus scanning, manifests, waveform loading, splits and the embedded sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dispart.data.corpus import (
    Utterance,
    load_waveform,
    read_manifest,
    scan_audiomnist,
    scan_corpus,
    scan_fsdd,
)
from dispart.data.sample import (
    sample_audio_source,
    sample_fsdd_dir,
    sample_image_source,
    sample_mnist_path,
)
from dispart.data.splits import leave_speakers_out, official_split, split_utterances
from dispart.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def sample_wav() -> Path:
    return sample_fsdd_dir() / "3_jackson_5.wav"


def _tone(n: int = 4000, sr: int = 8000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)


# --- scanning ---------------------------------------------------------------------------------


def test_scan_full_fsdd(shared_fsdd: Path) -> None:
    utts = scan_fsdd(shared_fsdd)
    assert len(utts) == 2500
    assert len({u.speaker for u in utts}) == 5
    assert sorted({u.label for u in utts}, key=int) == [str(d) for d in range(10)]
    assert [str(u.path) for u in utts] == sorted(str(u.path) for u in utts)
    u = next(u for u in utts if u.path.name == "7_lucas_12.wav")
    assert (u.label, u.speaker, u.take) == ("7", "lucas", "12")
    # the parent folder (with recordings/) is accepted too, auto layout detects fsdd
    assert scan_corpus(shared_fsdd.parent) == utts


def test_embedded_sample_fsdd() -> None:
    utts = scan_corpus(sample_fsdd_dir())
    assert len(utts) == 400
    speakers = {u.speaker for u in utts}
    assert len(speakers) == 5
    assert sorted({int(u.take) for u in utts}) == [0, 1, 5, 6, 7, 8, 9, 10]
    for spk in speakers:  # every speaker has every digit
        assert {u.label for u in utts if u.speaker == spk} == {str(d) for d in range(10)}
    assert sample_mnist_path().is_file()


def test_embedded_large_sample_is_the_small_one_plus_more_takes() -> None:
    """`sample-large` (the demo's): the 400 wavs + takes 11-34 through a manifest; MNIST 10k / 1k."""
    small = scan_corpus(sample_audio_source("sample"))
    large = scan_corpus(sample_audio_source("sample-large"))
    assert len(large) == 1600 and {u.path.resolve() for u in small} <= {u.path.resolve() for u in large}
    for u in large:  # each row's label / speaker / take are the file's
        assert u.path.is_file() and u.path.name == f"{u.label}_{u.speaker}_{u.take}.wav"
    train, test = official_split(large)
    assert (len(train), len(test)) == (1500, 100)
    assert sorted({int(u.take) for u in train}) == [5, 6, 7, 8, 9, 10, *range(11, 35)]
    with np.load(sample_image_source("sample-large")) as big, np.load(sample_mnist_path()) as sm:
        assert big["x_train"].shape == (10_000, 28, 28) and big["x_test"].shape == (1_000, 28, 28)
        for k in ("x_train", "y_train", "x_test", "y_test"):  # the small sample is its head
            assert np.array_equal(big[k][: len(sm[k])], sm[k]), k
    assert sample_audio_source("/some/folder") is None and sample_image_source("x.npz") is None


def test_a_missing_embedded_sample_file_is_one_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("dispart.data.sample.sample_data_dir", lambda: tmp_path)
    for find, name in ((sample_mnist_path, "mnist_sample.npz"),
                       (lambda: sample_image_source("sample-large"), "mnist_large.npz"),
                       (lambda: sample_audio_source("sample-large"), "fsdd_large.csv")):
        with pytest.raises(DataError, match=rf"{name}: embedded .* is missing \(reinstall dispart"):
            find()


def test_bad_fsdd_filename_names_file(tmp_path: Path, sample_wav: Path) -> None:
    shutil.copy(sample_wav, tmp_path / "3_jackson_5.wav")
    shutil.copy(sample_wav, tmp_path / "three-jackson.wav")
    with pytest.raises(DataError, match="three-jackson.wav"):
        scan_fsdd(tmp_path)


def test_empty_folder_names_folder(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("no audio here")
    with pytest.raises(DataError, match=str(tmp_path)):
        scan_corpus(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        scan_corpus(tmp_path / "nope")
    with pytest.raises(DataError, match="unknown corpus layout"):
        scan_corpus(tmp_path, layout="timit")


def _make_audiomnist(root: Path) -> None:
    for spk in ("01", "02"):
        folder = root / "data" / spk
        folder.mkdir(parents=True)
        for digit in (0, 1, 2):
            for idx in (0, 1):
                sf.write(folder / f"{digit}_{spk}_{idx}.wav", _tone(800, 48000), 48000)
    (root / "data" / "audioMNIST_meta.txt").write_text("{}")


def test_audiomnist_layout(tmp_path: Path) -> None:
    _make_audiomnist(tmp_path)
    utts = scan_corpus(tmp_path)  # auto-detected
    assert utts == scan_audiomnist(tmp_path) == scan_audiomnist(tmp_path / "data")
    assert len(utts) == 12
    assert {u.speaker for u in utts} == {"01", "02"}
    assert {u.label for u in utts} == {"0", "1", "2"}
    assert utts[0] == Utterance(tmp_path / "data" / "01" / "0_01_0.wav", "0", "01", "0")
    # resampled from 48 kHz to 8 kHz on load
    assert load_waveform(utts[0].path, 8000).shape[0] == pytest.approx(800 / 6, abs=1)


def test_audiomnist_speaker_mismatch(tmp_path: Path) -> None:
    _make_audiomnist(tmp_path)
    shutil.copy(tmp_path / "data/01/0_01_0.wav", tmp_path / "data/02/5_01_0.wav")
    with pytest.raises(DataError, match="5_01_0.wav"):
        scan_audiomnist(tmp_path)


# --- manifests --------------------------------------------------------------------------------


def test_manifest_relative_paths(tmp_path: Path, sample_wav: Path) -> None:
    (tmp_path / "audio").mkdir()
    shutil.copy(sample_wav, tmp_path / "audio" / "a.wav")
    shutil.copy(sample_wav, tmp_path / "audio" / "b.wav")
    csv = tmp_path / "corpus.csv"
    csv.write_text(f"path,label,speaker,take\naudio/b.wav,4,bob,1\n{tmp_path}/audio/a.wav,3,ann,\n")
    utts = scan_corpus(csv)
    assert utts == read_manifest(csv)
    assert utts == [
        Utterance(tmp_path / "audio" / "a.wav", "3", "ann", ""),
        Utterance(tmp_path / "audio" / "b.wav", "4", "bob", "1"),
    ]


def test_manifest_errors_name_csv_line_field(tmp_path: Path, sample_wav: Path) -> None:
    shutil.copy(sample_wav, tmp_path / "a.wav")
    csv = tmp_path / "m.csv"
    csv.write_text("label,path\n3,a.wav\n")
    with pytest.raises(DataError, match=r"m\.csv, line 1: header lacks column 'speaker'"):
        read_manifest(csv)
    csv.write_text("label,speaker,path\n3,ann,a.wav\n4,ann,missing.wav\n")
    with pytest.raises(DataError, match=r"m\.csv, line 3: field 'path'.*missing\.wav"):
        read_manifest(csv)
    csv.write_text("label,speaker,path\n3,ann,a.wav\n,ann,a.wav\n")
    with pytest.raises(DataError, match=r"m\.csv, line 3: field 'label'"):
        read_manifest(csv)
    csv.write_text("label,speaker,path\n")
    with pytest.raises(DataError, match="no rows"):
        read_manifest(csv)


# --- waveforms --------------------------------------------------------------------------------


def test_load_waveform_real(sample_wav: Path) -> None:
    wave = load_waveform(sample_wav, 8000)
    info = sf.info(sample_wav)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape[0] == info.frames
    assert np.abs(wave).max() <= 1.0 and np.abs(wave).max() > 0.01


def test_load_waveform_stereo_16k(tmp_path: Path, sample_wav: Path) -> None:
    import librosa

    orig = load_waveform(sample_wav, 8000)
    up = librosa.resample(orig, orig_sr=8000, target_sr=16000)
    stereo = np.stack([up, 0.5 * up], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 16000, subtype="PCM_16")
    back = load_waveform(tmp_path / "s.wav", 8000)
    assert back.shape[0] == pytest.approx(orig.shape[0], abs=2)
    # downmix averages channels: 0.75 x the original
    n = min(len(back), len(orig))
    assert np.corrcoef(back[:n], orig[:n])[0, 1] > 0.99
    assert np.std(back) == pytest.approx(0.75 * np.std(orig), rel=0.05)


def test_load_waveform_bad_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x01garbage" * 10)
    with pytest.raises(DataError, match=r"junk\.wav: cannot read audio"):
        load_waveform(junk, 8000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 8000)
    with pytest.raises(DataError, match=r"empty\.wav: audio file is empty"):
        load_waveform(empty, 8000)
    nan = tmp_path / "nan.wav"
    x = _tone()
    x[100] = np.nan
    sf.write(nan, x, 8000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"nan\.wav: audio contains NaN"):
        load_waveform(nan, 8000)
    with pytest.raises(DataError, match=r"absent\.wav"):
        load_waveform(tmp_path / "absent.wav", 8000)


# --- splits -----------------------------------------------------------------------------------


def test_official_split_full(shared_fsdd: Path) -> None:
    utts = scan_fsdd(shared_fsdd)
    train, test = official_split(utts)
    assert len(test) == 250 and len(train) == 2250
    assert all(int(u.take) < 5 for u in test) and all(int(u.take) >= 5 for u in train)
    assert split_utterances(utts, "official") == (train, test)


def test_leave_speaker_out_full(shared_fsdd: Path) -> None:
    utts = scan_fsdd(shared_fsdd)
    speakers = sorted({u.speaker for u in utts})
    train, test = split_utterances(utts, f"speaker:{speakers[0]}")
    assert len(test) == 500 and len(train) == 2000
    assert {u.speaker for u in test} == {speakers[0]}
    assert speakers[0] not in {u.speaker for u in train}
    train2, test2 = split_utterances(utts, f"speakers:{speakers[1]}, {speakers[2]}")
    assert len(test2) == 1000 and len(train2) == 1500


def test_split_errors() -> None:
    utts = scan_corpus(sample_fsdd_dir())
    train, test = official_split(utts)
    assert len(test) == 100 and len(train) == 300
    with pytest.raises(DataError, match=r"unknown speaker\(s\) \['zed'\].*george"):
        leave_speakers_out(utts, ["zed"])
    bad = [Utterance(Path("x/1_a_one.wav"), "1", "a", "one")]
    with pytest.raises(DataError, match="1_a_one.wav.*not a number"):
        official_split(bad)
    with pytest.raises(ConfigError, match="random"):
        split_utterances(utts, "random")
    with pytest.raises(ConfigError):
        split_utterances(utts, "speakers:")
    only_train = [u for u in utts if int(u.take) >= 5]
    with pytest.raises(DataError, match="empty test set"):
        official_split(only_train)


# --- malformed manifests: one DataError naming the CSV, the line and the field -----------------


@pytest.mark.parametrize(("body", "fragment"), [
    ("label,speaker,path\n3,ann,a.wav\n4,bob,a.wav,extra\n",
     "line 3: 1 more non-empty cell(s) than the header has columns"),
    ("label,speaker,path\n3,ann\n", "line 2: field 'path' is empty or missing"),
    ("label,speaker,path\n3,,a.wav\n", "line 2: field 'speaker' is empty or missing"),
    ("label,speaker,path\n  ,ann,a.wav\n", "line 2: field 'label' is empty or missing"),
    ("speaker,path\n", "line 1: header lacks column 'label'"),
    ("", "line 1: header lacks column 'label'"),
    ("label,speaker,path\n3,ann,a.wav\n3,ann,\"" + "x" * 140_000 + "\"\n",
     "line 3: malformed CSV (field larger than field limit (131072))"),
    ("label,speaker,path\n3,ann," + "d/" * 3000 + "a.wav\n", "line 2: field 'path': file"),
    ("label,speaker,path\n3,ann,a\0b.wav\n", "line 2: field 'path': file"),
    ("label,speaker,path\n3,ann,\"a\nb.wav\"\n", "line 3: field 'path': file"),
], ids=["extra-cell", "short-row", "no-speaker", "blank-label", "no-label-column", "empty-file",
        "field-too-large", "path-too-long", "nul-in-path", "newline-in-path"])
def test_malformed_manifest_rows_name_csv_line_field(tmp_path: Path, sample_wav: Path, body: str,
                                                     fragment: str) -> None:
    shutil.copy(sample_wav, tmp_path / "a.wav")
    csv = tmp_path / "m.csv"
    csv.write_text(body)
    with pytest.raises(DataError) as e:
        read_manifest(csv)
    assert str(e.value).startswith(f"{csv}, {fragment}")


def test_manifest_encoding_bom_and_trailing_commas(tmp_path: Path, sample_wav: Path) -> None:
    shutil.copy(sample_wav, tmp_path / "a.wav")
    csv = tmp_path / "m.csv"
    csv.write_bytes(b"label,speaker,path\n3,ann,a\xff\xfe.wav\n")
    with pytest.raises(DataError, match=rf"^{csv}, line 2: not UTF-8 text \(invalid start byte at byte 26\)"):
        read_manifest(csv)
    csv.write_bytes("\ufefflabel,speaker,path\n3,ann,a.wav,,\n".encode())  # Excel's BOM and commas
    assert read_manifest(csv) == [Utterance(tmp_path / "a.wav", "3", "ann", "")]
    with pytest.raises(DataError, match="corpus source does not exist"):
        scan_corpus(tmp_path / ("x" * 300))  # ENAMETOOLONG is "does not exist", not an OSError


def test_cli_names_the_bad_manifest_row_in_one_line(tmp_path: Path, sample_wav: Path, capsys) -> None:
    from dispart.cli import main

    shutil.copy(sample_wav, tmp_path / "a.wav")
    csv = tmp_path / "m.csv"
    csv.write_text("label,speaker,path\n3,ann,a.wav\n,bob,a.wav\n")
    code = main(["train", "tests/sample.yaml", "--out", str(tmp_path / "r"), f"data.audio={csv}",
                 "train.progress_bar=false"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"dispart train: error: {csv}, line 3: field 'label' is empty or missing\n"
