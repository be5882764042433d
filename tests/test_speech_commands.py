"""Speech-commands layout loader, the publishers' split, log-magnitude spectra and 200 ms segments."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dispart.batches.loaders import LOADERS, get_loader
from dispart.batches.segments import SEGMENT_FRAMES, cut_segments, load_segments, spectrum_config
from dispart.data.config import DataConfig
from dispart.data.speech_commands import (
    DIGIT_WORDS,
    is_speech_commands,
    official_split,
    scan_speech_commands,
    split_speech_commands,
)
from dispart.errors import ConfigError, DataError
from dispart.features.spectrum import SpectrumConfig, compute_spectra, log_spectrum

SHARED = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def arabic() -> Path:
    path = SHARED / "arabic_speech_commands"
    if not (path / "dataset").is_dir():
        pytest.skip(f"Arabic Speech Commands not available at {path} (development data only)")
    return path


def _tone(seconds: float, sr: int = 16000, hz: float = 440.0) -> np.ndarray:
    n = int(round(seconds * sr))
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(n) / sr)).astype(np.float32)


def _make_corpus(root: Path, speakers: tuple[str, ...] = ("aaaa0001", "bbbb0002", "cccc0003"),
                 words: tuple[str, ...] = DIGIT_WORDS, seconds: float = 0.73) -> Path:
    """A speech-commands folder of steady tones: {word}/{speaker}_NO_{n}.wav, two rounds each."""
    for w in words:
        (root / w).mkdir(parents=True)
        for s in speakers:
            for n in (1, 2):
                sf.write(root / w / f"{s}_NO_{n:02d}.wav", _tone(seconds), 16000, subtype="PCM_16")
    return root


# --- scanning real files and the publishers' split ------------------------------------------------


def _csv_speakers(path: Path) -> set[str]:
    """Speakers of a publishers' CSV, read independently of the loader (file name before '_')."""
    with path.open(newline="") as f:
        return {Path(row["file"]).name.split("_")[0] for row in csv.DictReader(f)}


def test_arabic_split_is_the_publishers_and_speaker_disjoint(arabic: Path) -> None:
    utts = scan_speech_commands(arabic)
    assert len(utts) == 2700
    assert {u.label for u in utts} == set(DIGIT_WORDS)
    u = next(u for u in utts if u.path.name == "00000014_NO_03.wav" and u.label == "eight")
    assert (u.speaker, u.take) == ("00000014", "03")
    split = split_speech_commands(arabic, utts)
    speakers = {k: {u.speaker for u in v} for k, v in split.items()}
    for k in ("train", "val", "test"):
        assert speakers[k] == _csv_speakers(arabic / f"{k}.csv")
    assert [len(speakers[k]) for k in ("train", "val", "test")] == [17, 5, 5]
    assert [len(split[k]) for k in ("train", "val", "test")] == [1700, 500, 500]
    assert not (speakers["train"] & speakers["val"] or speakers["train"] & speakers["test"]
                or speakers["val"] & speakers["test"])
    assert is_speech_commands(arabic) and not is_speech_commands(SHARED / "fsdd")


def _real_subset(arabic: Path, root: Path) -> dict[str, str]:
    """Copy 60 real wavs (10 words x the first speaker of each split x rounds 1-2) to ``root`` with the
    publishers' CSVs cut to them; returns file (relative to the root) -> split."""
    keep: dict[str, str] = {}
    for split in ("train", "val", "test"):
        with (arabic / f"{split}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        first = Path(rows[0]["file"]).name.split("_")[0]
        chosen = [r for r in rows if Path(r["file"]).name.split("_")[0] == first
                  and Path(r["file"]).stem.endswith(("_01", "_02"))]
        for r in chosen:
            dst = root / r["file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(arabic / r["file"], dst)
            keep[r["file"]] = split
        with (root / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "class"])
            w.writerows([[r["file"], r["class"]] for r in chosen])
    assert len(keep) == 60
    return keep


def test_loader_on_real_files(arabic: Path, tmp_path: Path) -> None:
    """The loader on 60 real wavs (10 words x one speaker per split x 2 rounds) with the CSVs cut to them."""
    root = tmp_path / "asc"
    keep = _real_subset(arabic, root)
    cfg = DataConfig(audio=str(root), sample_rate=16000, cache_dir=str(tmp_path / "cache"))
    corpus = get_loader("speech_segments")(cfg, False)
    sets, spec = corpus.sets["speech"], corpus.specs["speech"]
    assert (spec.kind, spec.shape, spec.frame_rate) == ("sequence", (200,), 100.0)
    assert corpus.normalize == ("speech",) and corpus.skipped == []
    for split, s in sets.items():
        assert all(x.shape == (SEGMENT_FRAMES, 200) for x in s.examples)
        assert {p.split("asc/")[1] for p in s.paths} == {f for f, k in keep.items() if k == split}
        assert len(set(s.speakers)) == 1 and set(s.labels) == set(DIGIT_WORDS)
    assert len({s.speakers[0] for s in sets.values()}) == 3


# --- bad inputs ----------------------------------------------------------------------------------


def test_missing_folder_and_unknown_word(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere: speech-commands folder does not exist"):
        scan_speech_commands(tmp_path / "nowhere")
    root = _make_corpus(tmp_path / "c", words=("zero", "one"))
    msg = r"c/two: no folder for word 'two' \(word folders here: \['one', 'zero'\]"
    with pytest.raises(DataError, match=msg):
        scan_speech_commands(root)  # the ten digit words by default
    assert len(scan_speech_commands(root, ("zero", "one"))) == 12
    assert len(scan_speech_commands(root, None)) == 12
    (root / "zero" / "badname.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"zero/badname.wav: file name does not match"):
        scan_speech_commands(root, None)


def test_unreadable_wav_is_one_error_or_a_counted_skip(tmp_path: Path) -> None:
    root = _make_corpus(tmp_path / "c")
    bad = root / "three" / "bbbb0002_NO_07.wav"
    bad.write_bytes(b"RIFF not really a wav")
    cfg = DataConfig(audio=str(root), sample_rate=16000, split="speakers:cccc0003",
                     cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"three/bbbb0002_NO_07.wav: cannot read audio"):
        load_segments(root, cfg)
    corpus = load_segments(root, replace(cfg, on_error="skip"))
    assert [p for p, _ in corpus.skipped] == [str(bad)]
    assert len(corpus.sets["speech"]["train"]) + len(corpus.sets["speech"]["test"]) == 60 * 3


def test_split_files_are_checked(tmp_path: Path) -> None:
    root = _make_corpus(tmp_path / "c", words=("zero",))
    utts = scan_speech_commands(root, ("zero",))
    assert official_split(root, utts) is None
    with pytest.raises(DataError, match="no publishers' split"):
        split_speech_commands(root, utts)

    def write(name: str, rows: list[str]) -> None:
        (root / name).write_text("file,class\n" + "".join(f"{r},zero\n" for r in rows))

    files = sorted(f"zero/{u.path.name}" for u in utts)
    write("train.csv", files[:2])
    write("val.csv", files[2:4])
    write("test.csv", files[4:])
    split = official_split(root, utts)
    assert [len(split[k]) for k in ("train", "val", "test")] == [2, 2, 2]
    write("test.csv", files[4:5])
    with pytest.raises(DataError, match=r"cccc0003_NO_02.wav: file is in none of"):
        official_split(root, utts)
    write("test.csv", files[4:] + ["zero/dddd_NO_01.wav"])
    with pytest.raises(DataError, match=r"test.csv: lists .*zero/dddd_NO_01.wav, which does not exist"):
        official_split(root, utts)
    write("val.csv", files[1:4])
    write("test.csv", files[4:])
    with pytest.raises(DataError, match=r"aaaa0001_NO_02.wav is listed in train.csv too"):
        official_split(root, utts)
    write("val.csv", files[3:4])
    write("test.csv", files[2:3] + files[4:])  # aaaa0001 is train, bbbb0002 in val and test
    with pytest.raises(DataError, match="speaker 'bbbb0002' is in both the val and the test split"):
        official_split(root, utts)
    (root / "val.csv").write_text("path,label\nzero/x.wav,zero\n")
    with pytest.raises(DataError, match=r"val.csv, line 1: header must have columns 'file,class'"):
        official_split(root, utts)


def test_google_layout_and_lists(tmp_path: Path) -> None:
    root = tmp_path / "gsc"
    for w in ("yes", "zero"):
        (root / w).mkdir(parents=True)
        for s in ("0a7c2a8d", "1b2c3d4e", "9f8e7d6c"):
            sf.write(root / w / f"{s}_nohash_0.wav", _tone(0.3), 16000)
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white_noise.wav", _tone(0.3), 16000)
    (root / "validation_list.txt").write_text("yes/1b2c3d4e_nohash_0.wav\nzero/1b2c3d4e_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/9f8e7d6c_nohash_0.wav\nzero/9f8e7d6c_nohash_0.wav\n")
    assert is_speech_commands(root)
    (tmp_path / "am" / "01").mkdir(parents=True)  # AudioMNIST: numbered speaker folders
    (tmp_path / "am" / "02").mkdir()
    sf.write(tmp_path / "am" / "01" / "3_01_0.wav", _tone(0.3), 16000)
    assert not is_speech_commands(tmp_path / "am") and not is_speech_commands(tmp_path / "none")
    utts = scan_speech_commands(root, None)
    assert {u.label for u in utts} == {"yes", "zero"} and len(utts) == 6
    split = split_speech_commands(root, utts)
    assert {k: sorted({u.speaker for u in v}) for k, v in split.items()} == {
        "train": ["0a7c2a8d"], "val": ["1b2c3d4e"], "test": ["9f8e7d6c"]}


def test_fsdd_needs_a_speaker_split(tmp_path: Path) -> None:
    cfg = DataConfig(audio="sample", sample_rate=8000, cache_dir=None)
    with pytest.raises(ConfigError, match="data.split=official.*speaker-disjoint"):
        get_loader("speech_segments")(cfg, False)
    assert "speech_segments" in LOADERS


# --- spectrum and segments -------------------------------------------------------------------------


@pytest.mark.parametrize("sr,hz,bins", [(16000, 1000.0, 200), (16000, 440.0, 200), (8000, 1000.0, 100)])
def test_spectrum_of_a_sine_matches_numpy(sr: int, hz: float, bins: int) -> None:
    cfg = SpectrumConfig(sample_rate=sr, vad_top_db=None)
    assert (cfg.n_bins, cfg.win_length, cfg.hop_length, cfg.bin_hz) == (bins, bins * 2, sr // 100, 40.0)
    wave = _tone(0.5, sr, hz)
    spec = log_spectrum(wave, cfg)
    assert spec.shape == (1 + len(wave) // cfg.hop_length, bins)
    t, n, hop = 10, cfg.win_length, cfg.hop_length  # an interior frame: centred at t * hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann
    ref = np.abs(np.fft.rfft(wave[t * hop - n // 2: t * hop + n // 2] * window))[:bins]
    np.testing.assert_allclose(spec[t], np.log(np.maximum(ref, 1e-5)), atol=2e-4)
    assert int(np.argmax(spec[t])) == round(hz / 40.0)


def test_segments_count_and_length(tmp_path: Path) -> None:
    feats = np.arange(74 * 3, dtype=np.float32).reshape(74, 3)
    segs = cut_segments(feats)
    assert segs.shape == (3, 20, 3)  # 74 frames -> 3 whole segments, 14 frames dropped
    np.testing.assert_array_equal(segs[1, 0], feats[20])
    assert cut_segments(feats[:19]).shape == (0, 20, 3)
    # 0.73 s at 16 kHz = 11,680 samples -> 1 + 11680 // 160 = 74 frames -> 3 segments per file
    root = _make_corpus(tmp_path / "c")
    cfg = DataConfig(audio=str(root), sample_rate=16000, split="speakers:cccc0003,bbbb0002",
                     cache_dir=str(tmp_path / "cache"))
    corpus = load_segments(root, cfg)
    train, test = corpus.sets["speech"]["train"], corpus.sets["speech"]["test"]
    assert set(corpus.sets["speech"]) == {"train", "test"}
    assert (len(train), len(test)) == (20 * 3, 40 * 3)
    assert set(train.speakers) == {"aaaa0001"} and set(test.speakers) == {"bbbb0002", "cccc0003"}
    assert all(x.shape == (20, 200) for x in train.examples)
    assert train.meta["segment"][:3] == [0, 1, 2] and len(set(train.meta["utterance"])) == 20
    assert train.ids[1] == train.meta["utterance"][1] + "#1"
    # too short for one segment (0.15 s = 16 frames): left out and listed
    sf.write(root / "zero" / "aaaa0001_NO_09.wav", _tone(0.15), 16000)
    short = load_segments(root, cfg).skipped
    assert len(short) == 1 and "16 frames after VAD, shorter than one 20-frame segment" in short[0][1]


def test_spectrum_cache(tmp_path: Path) -> None:
    root = _make_corpus(tmp_path / "c", words=("zero",))
    utts = scan_speech_commands(root, ("zero",))
    cfg = spectrum_config(DataConfig(sample_rate=16000))
    kept, feats, _ = compute_spectra(utts, cfg, tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("spectrum-*.npz")
    again = compute_spectra(utts, cfg, tmp_path / "cache")[1]
    assert all(np.array_equal(a, b) for a, b in zip(feats, again, strict=True))
    cache.write_bytes(b"garbage")  # a damaged cache is recomputed
    assert all(np.array_equal(a, b) for a, b in
               zip(feats, compute_spectra(utts, cfg, tmp_path / "cache")[1], strict=True))


# --- the "speech" loader (PVAE's log-Mel utterances, paired with MNIST by digit) ---------------------


def _tone_corpus(root: Path, speakers: dict[str, float], splits: dict[str, str] | None) -> Path:
    """A speech-commands folder of the ten digit words, one tone per speaker (its frequency), two
    rounds each; with ``splits`` (speaker -> train/val/test) the publishers' three CSVs."""
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for w in DIGIT_WORDS:
        (root / "dataset" / w).mkdir(parents=True)
        for s, hz in speakers.items():
            for n in (1, 2):
                name = f"{s}_NO_{n:02d}.wav"
                sf.write(root / "dataset" / w / name, _tone(0.4, hz=hz), 16000, subtype="PCM_16")
                if splits:
                    rows[splits[s]].append(f"dataset/{w}/{name},{w}\n")
    if splits:
        for k, r in rows.items():
            (root / f"{k}.csv").write_text("file,class\n" + "".join(r))
    return root


def test_speech_loader_reads_the_speech_commands_layout_with_digit_labels(tmp_path: Path) -> None:
    speakers = {"aaaa0001": 300.0, "aaaa0002": 500.0, "bbbb0003": 700.0, "cccc0004": 900.0}
    splits = {"aaaa0001": "train", "aaaa0002": "train", "bbbb0003": "val", "cccc0004": "test"}
    root = _tone_corpus(tmp_path / "asc", speakers, splits)
    cfg = DataConfig(audio=str(root), images="sample", sample_rate=16000, cache_dir=str(tmp_path / "cache"))
    corpus = get_loader("speech")(cfg, False)
    sets = corpus.sets["audio"]
    assert list(sets) == ["train", "val", "test"]
    assert corpus.specs["audio"].shape == (80,) and corpus.pairing == "label"
    for split, s in sets.items():
        assert sorted(set(s.speakers)) == sorted(k for k, v in splits.items() if v == split)
        assert sorted(set(s.labels)) == [str(d) for d in range(10)]  # MNIST's labels
        for label, path in zip(s.labels, s.paths, strict=True):
            assert DIGIT_WORDS[int(label)] == Path(path).parent.name  # "three" -> "3"
    assert len(sets["train"]) == 40 and len(sets["val"]) == len(sets["test"]) == 20

    # merged with MNIST: every audio split normalised with the training speakers' statistics only
    from dispart.batches.pipeline import load_experiment_data

    data = load_experiment_data(cfg, progress=False)
    assert list(data.sets["audio"]) == ["train", "val", "test"]
    assert list(data.sets["image"]) == ["train", "test"]
    raw = np.concatenate(list(sets["train"].examples))
    np.testing.assert_allclose(data.normalizers["audio"].mean, raw.mean(axis=0), rtol=1e-4, atol=1e-4)
    norm = data.normalizers["audio"]
    np.testing.assert_allclose(data.split("audio", "val").examples[0],
                               norm.transform(sets["val"].examples[0]), rtol=1e-5, atol=1e-5)

    # speakers:A,B holds those out instead (no val); without the CSVs, official is an error
    held = get_loader("speech")(replace(cfg, split="speakers:aaaa0001,cccc0004"), False).sets["audio"]
    assert list(held) == ["train", "test"]
    assert set(held["test"].speakers) == {"aaaa0001", "cccc0004"}
    bare = _tone_corpus(tmp_path / "bare", {"aaaa0001": 300.0, "bbbb0002": 600.0}, None)
    with pytest.raises(DataError, match="no publishers' split"):
        get_loader("speech")(replace(cfg, audio=str(bare)), False)
    assert len(get_loader("speech")(replace(cfg, audio=str(bare), split="speaker:bbbb0002"),
                                    False).sets["audio"]["test"]) == 20


def test_a_second_corpus_joins_each_split_with_its_official_split(tmp_path: Path) -> None:
    """data.audio_extra: the embedded FSDD wavs (real) + a speech-commands folder; the extra corpus
    keeps its publishers' split whatever data.split says, and a shared speaker name is refused."""
    from dispart.data.sample import sample_fsdd_dir

    fsdd = sorted(p.name for p in sample_fsdd_dir().glob("*.wav"))
    speakers = {"aaaa0001": 300.0, "bbbb0003": 700.0, "cccc0004": 900.0}
    splits = {"aaaa0001": "train", "bbbb0003": "val", "cccc0004": "test"}
    root = _tone_corpus(tmp_path / "asc", speakers, splits)
    cfg = DataConfig(audio="sample", audio_extra=str(root), sample_rate=8000, split="speaker:george",
                     cache_dir=str(tmp_path / "cache"))
    sets = get_loader("speech")(cfg, False).sets["audio"]
    assert list(sets) == ["train", "test", "val"]
    george = [n for n in fsdd if n.split("_")[1] == "george"]
    assert set(sets["test"].speakers) == {"george", "cccc0004"}
    assert len(sets["test"]) == len(george) + 20
    assert set(sets["val"].speakers) == {"bbbb0003"} and len(sets["val"]) == 20
    assert len(sets["train"]) == len(fsdd) - len(george) + 20
    assert "aaaa0001" in sets["train"].speakers and "george" not in sets["train"].speakers
    assert sorted(set(sets["train"].labels)) == [str(d) for d in range(10)]  # "three" is "3" as in FSDD
    # the pipeline normalises both corpora with the joint training statistics
    from dispart.batches.pipeline import load_experiment_data

    data = load_experiment_data(cfg, progress=False)
    assert len(data.split("audio", "train")) == len(sets["train"])
    # a speaker in both corpora: one error naming the folder and the speaker
    clash = _tone_corpus(tmp_path / "clash", {"george": 300.0, "dddd0005": 500.0},
                         {"george": "train", "dddd0005": "test"})
    with pytest.raises(ConfigError, match=r"audio_extra: .*clash.*george"):
        get_loader("speech")(replace(cfg, audio_extra=str(clash)), False)
    with pytest.raises(DataError, match="missing"):
        get_loader("speech")(replace(cfg, audio_extra=str(tmp_path / "missing")), False)


def test_speech_loader_on_real_arabic_files(arabic: Path, tmp_path: Path) -> None:
    root = tmp_path / "asc"
    keep = _real_subset(arabic, root)
    cfg = DataConfig(audio=str(root), sample_rate=16000, cache_dir=str(tmp_path / "cache"))
    corpus = get_loader("speech")(cfg, False)
    sets = corpus.sets["audio"]
    assert list(sets) == ["train", "val", "test"] and corpus.skipped == []
    for split, s in sets.items():
        assert {p.split("asc/")[1] for p in s.paths} == {f for f, k in keep.items() if k == split}
        assert len(set(s.speakers)) == 1 and sorted(set(s.labels)) == [str(d) for d in range(10)]
        assert all(DIGIT_WORDS[int(y)] == Path(p).parent.name for y, p in zip(s.labels, s.paths, strict=True))
        assert all(x.ndim == 2 and x.shape[1] == 80 and 10 <= len(x) <= 101 for x in s.examples)
    assert len({s.speakers[0] for s in sets.values()}) == 3


def test_digit_labels_and_split_files_as_manifests(tmp_path: Path) -> None:
    from dispart.data.corpus import Utterance, scan_corpus
    from dispart.data.speech_commands import digit_labels

    u = Utterance(Path("x/seven/a_NO_01.wav"), "seven", "a", "01")
    assert digit_labels([u]) == [Utterance(u.path, "7", "a", "01")]
    with pytest.raises(DataError, match=r"a_NO_01.wav: word 'yes' is not a digit word"):
        digit_labels([Utterance(u.path, "yes", "a", "01")])
    # a publishers' split file (file,class) reads as a manifest: the speaker from the file name
    root = _tone_corpus(tmp_path / "asc", {"aaaa0001": 300.0, "cccc0004": 900.0},
                       {"aaaa0001": "train", "cccc0004": "test"})
    utts = scan_corpus(root / "test.csv")
    assert len(utts) == 20 and {u.speaker for u in utts} == {"cccc0004"}
    assert {u.label for u in utts} == set(DIGIT_WORDS) and {u.take for u in utts} == {"01", "02"}
    (tmp_path / "bad.csv").write_text("file,class\nasc/dataset/one/aaaa0001_NO_01.wav,one\n"
                                      "asc/dataset/one/nospeaker.wav,one\n")
    (tmp_path / "asc" / "dataset" / "one" / "nospeaker.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"bad.csv, line 3: field 'file': nospeaker.wav does not match"):
        scan_corpus(tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("file,class\nasc/dataset/one/zzzz_NO_01.wav,one\n")
    with pytest.raises(DataError, match=r"gone.csv, line 2: field 'file': file .*zzzz_NO_01.wav does not"):
        scan_corpus(tmp_path / "gone.csv")
    (tmp_path / "neither.csv").write_text("file,word\nasc/dataset/one/aaaa0001_NO_01.wav,one\n")
    with pytest.raises(DataError, match=r"neither.csv, line 1: header lacks column 'label'.*'file,class'"):
        scan_corpus(tmp_path / "neither.csv")


def test_loso_benchmark_trains_on_a_second_corpus_but_holds_out_and_scores_only_the_first(
        tmp_path: Path) -> None:
    """benchmarks/pvae_loso.py with data.audio_extra: the folds are the speakers of data.audio
    (the extra corpus only adds training data), and a fold is scored on the held-out speaker's
    utterances alone, not on the extra corpus's own test speakers."""
    import sys

    from dispart.batches.pipeline import load_experiment_data
    from dispart.config import load_config
    from dispart.data.corpus import scan_corpus
    from dispart.data.sample import sample_fsdd_dir
    from dispart.evaluation.evaluate import evaluate_run
    from dispart.runs import load_run
    from dispart.training.run import train

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from pvae_loso import corpus_speakers, held_out_data

    root = _tone_corpus(tmp_path / "asc", {"aaaa0001": 300.0, "cccc0004": 900.0},
                       {"aaaa0001": "train", "cccc0004": "test"})
    extra = [f"data.audio_extra={root}", f"data.cache_dir={tmp_path / 'cache'}"]
    fsdd = sorted({u.speaker for u in scan_corpus(sample_fsdd_dir())})
    assert corpus_speakers(load_config(None, extra)) == fsdd
    run = tmp_path / "run"
    sample = Path(__file__).resolve().parent / "sample.yaml"
    overrides = ["train.epochs=1", "model.hidden=32", "train.progress_bar=false",
                 "data.split=speaker:george", *extra]
    # as the benchmark does: the fold's data is loaded once, trains the run and is evaluated on
    loaded = load_experiment_data(load_config(str(sample), overrides).data, progress=False)
    assert train(load_config(str(sample), overrides), run, data=loaded)["epochs"] == 1
    data = held_out_data(loaded, "george")
    assert data is not None
    test = data.split("audio", "test")
    n_george = sum(1 for p in sample_fsdd_dir().glob("*.wav") if p.name.split("_")[1] == "george")
    assert set(test.speakers) == {"george"} and len(test) == n_george
    assert "aaaa0001" in data.split("audio", "train").speakers  # still trained on
    assert len(data.split("image", "test")) > 0  # the other modality untouched
    with pytest.raises(SystemExit, match="no test utterance of 'nobody'"):
        held_out_data(loaded, "nobody")
    # the same features as loading the run again with its saved normalisers (what evaluate_run
    # would do without the data), and the same evaluation
    again = held_out_data(load_experiment_data(load_run(run).config.data, progress=False,
                                               normalizers=load_run(run).normalizers), "george")
    for name in ("train", "test"):
        a, b = data.split("audio", name), again.split("audio", name)
        assert a.speakers == b.speakers
        assert all(np.array_equal(x, y) for x, y in zip(a.examples, b.examples, strict=True))
    purity = {r["latent"]: r["purity"] for r in evaluate_run(run, progress=False, data=data)["rows"]}
    assert purity == {r["latent"]: r["purity"]
                      for r in evaluate_run(run, progress=False, data=again)["rows"]}
