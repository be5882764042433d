"""`dispart evaluate RUN --audio CSV` on recordings of speakers the run never heard (issue 13): any
number of files, any speakers, label,speaker,path manifests and the publishers' file,class split files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dispart.cli import main
from dispart.data.speech_commands import DIGIT_WORDS
from dispart.evaluation.evaluate import evaluate_run

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).parents[1]
ARABIC = ROOT.parent / "shared" / "data" / "arabic_speech_commands"


@pytest.fixture(scope="module")
def run_dir(tiny_pvae_run: Path) -> Path:
    """A real PVAE run (conftest: 2 epochs on the embedded sample, small networks)."""
    return tiny_pvae_run


def _tone(hz: float, seconds: float = 0.5, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "speaker", "path"])
        w.writerows(rows)
    return path


@pytest.mark.parametrize("n_files", [2, 4, 30])
def test_any_number_of_new_speakers_recordings(run_dir: Path, tmp_path: Path, n_files: int) -> None:
    """New speakers, a 16 kHz stereo-free corpus the run never saw, 2 to 30 files: no error; k-means
    uses at most as many clusters as the CSV has labels, inertia curves only when k = 1..3 fit."""
    rows = []
    for i in range(n_files):
        label, speaker = str(i % 2), f"newspeaker{i % 3}"
        p = tmp_path / f"u{i}.wav"
        sf.write(p, _tone(300.0 + 200.0 * (i % 2) + 7 * i), 16000)
        rows.append((label, speaker, p.name))  # relative to the CSV
    csv_path = _manifest(tmp_path / "new.csv", rows)
    res = evaluate_run(run_dir, audio=csv_path, out=tmp_path / "ev", progress=False)
    assert res["n_test"] == {"audio": n_files}
    assert {r["modality"] for r in res["rows"]} == {"speech"}
    assert res["eval"]["n_clusters"] == 2  # two labels in the CSV (the run's config says 10)
    assert res["eval"]["k_max"] == (None if n_files < 3 else min(20, n_files))
    assert bool(res["inertia"]) == (n_files >= 3)
    assert res["speaker_probe_accuracy"] == {} and res["label_probe_accuracy"] == {}  # no training split
    assert res["source"] == {"audio": str(csv_path), "split": "all utterances"}
    saved = json.loads((tmp_path / "ev.json").read_text())
    assert saved["rows"] == res["rows"] and (tmp_path / "ev.md").is_file()


@pytest.fixture(scope="module")
def arabic() -> Path:
    if not (ARABIC / "dataset").is_dir():
        pytest.skip(f"Arabic Speech Commands not available at {ARABIC} (development data only)")
    return ARABIC


def test_real_arabic_test_speakers_through_the_cli(run_dir: Path, arabic: Path, tmp_path: Path,
                                                   capsys) -> None:
    """12 real recordings of the publishers' unseen test speakers, as a label,speaker,path CSV and as
    a file,class split file, through `dispart evaluate RUN --audio CSV`."""
    with (arabic / "test.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["file"].endswith(("_01.wav", "_02.wav"))]
    chosen = rows[::len(rows) // 12][:12]
    speakers = {Path(r["file"]).name.split("_")[0] for r in chosen}
    assert len(chosen) == 12 and len(speakers) >= 2
    manifest = _manifest(tmp_path / "arabic.csv", [
        (str(DIGIT_WORDS.index(r["class"])), Path(r["file"]).name.split("_")[0], str(arabic / r["file"]))
        for r in chosen])
    assert main(["evaluate", str(run_dir), "--audio", str(manifest), "--out", str(tmp_path / "m")]) == 0
    assert "| PVAE | z^s |" in capsys.readouterr().out
    res = json.loads((tmp_path / "m.json").read_text())
    labels = {r["class"] for r in chosen}
    assert res["n_test"] == {"audio": 12} and res["eval"]["n_clusters"] == min(10, len(labels))
    assert res["eval"]["k_max"] == 12

    split_file = tmp_path / "split.csv"  # the publishers' format, paths made absolute
    split_file.write_text("file,class\n" + "".join(f"{arabic / r['file']},{r['class']}\n" for r in chosen))
    res2 = evaluate_run(run_dir, audio=split_file, out=tmp_path / "s", progress=False)
    assert res2["rows"] == res["rows"]  # same files, same clusters: words or digits as labels alike


def test_a_speech_commands_folder_of_new_speakers(run_dir: Path, tmp_path: Path) -> None:
    """`--audio FOLDER` in the speech-commands layout ({word}/{speaker}_{tag}_{n}.wav): its digit words,
    labelled "0"-"9" (the run's labels), other words left out."""
    root = tmp_path / "commands"
    for i, word in enumerate(["zero", "one", "zero", "one", "yes"]):
        folder = root / word
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"spk{i % 2}_nohash_{i}.wav", _tone(300.0 + 150.0 * i), 16000)
    res = evaluate_run(run_dir, audio=root, out=tmp_path / "ev", progress=False)
    assert res["n_test"] == {"audio": 4}  # "yes" is not a digit word: listed, not silently dropped
    assert res["eval"]["n_clusters"] == 2
    assert res["skipped_files"] == [{"path": str(root / "yes" / "spk0_nohash_4.wav"),
                                     "reason": "word 'yes' is not a digit word"}]


def test_audio_evaluation_keeps_the_runs_own(run_dir: Path, tmp_path: Path, capsys) -> None:
    """Without --out, `evaluate RUN --audio new.csv` writes RUN/evaluation_audio_new.json beside the
    run's test-split evaluation.json, which stays as it was."""
    assert main(["evaluate", str(run_dir), "--no-curves"]) == 0
    own = (run_dir / "evaluation.json").read_bytes()
    rows = []
    for i in range(4):
        p = tmp_path / f"n{i}.wav"
        sf.write(p, _tone(250.0 + 150.0 * (i % 2) + 5 * i), 16000)
        rows.append((str(i % 2), f"spk{i % 2}", p.name))
    csv_path = _manifest(tmp_path / "new take.csv", rows)
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--audio", str(csv_path), "--no-curves"]) == 0
    out = capsys.readouterr().out
    written = run_dir / "evaluation_audio_new_take.json"
    assert f"wrote {written}" in out
    assert (run_dir / "evaluation.json").read_bytes() == own
    saved = json.loads(written.read_text())
    assert saved["n_test"] == {"audio": 4} and saved["source"]["audio"] == str(csv_path)
    assert (run_dir / "evaluation_audio_new_take.md").is_file()
