"""Which centring of the log-Mel frames lets a digit reader generalise to a voice it never heard?

    python benchmarks/centring_probe.py --data-dir ../shared/data [--n-mels 24] [--chunks 8]

No model: each FSDD utterance's log-Mel frames (``dispart.features.fbank``, 10 / 25 ms frames),
centred as ``data.normalize`` would (``dispart.features.normalize.centre_as``: none, per
utterance, per speaker, per speaker with each band's variance divided out as well), are
pooled into ``--chunks`` equal stretches of time (the mean frame of each, concatenated), and a
scikit-learn logistic regression (standardised inputs, C = 0.1) trained on four speakers reads the
digit of the fifth, for each speaker held out in turn (the speakers are read from the data). A
quick check of an idea before training PVAE on it (docs/results.md, "Per-speaker normalisation").

Writes ``benchmarks/results/centring_probe.json`` (accuracies are fractions in [0, 1]).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from dispart.data.corpus import scan_fsdd  # noqa: E402
from dispart.features.fbank import FbankConfig, fbank_from_file  # noqa: E402
from dispart.features.normalize import centre_as  # noqa: E402
from dispart.files import atomic_write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "centring_probe.json"


def pooled(x: np.ndarray, chunks: int) -> np.ndarray:
    """(T, D) frames -> (chunks * D,) mean frame of each of ``chunks`` equal stretches of time."""
    parts = np.array_split(np.arange(len(x)), chunks)
    return np.concatenate([x[p].mean(0) if len(p) else x[-1] for p in parts])


def centred(feats: list[np.ndarray], speakers: list[str], mode: str) -> list[np.ndarray]:
    """``mode``: "none" or a ``data.normalize`` mode ("utterance", "speaker", "speaker_var"), as
    dispart's centre_as does it."""
    return centre_as(feats, "global" if mode == "none" else mode, speakers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="folder with fsdd/recordings")
    ap.add_argument("--n-mels", type=int, default=24)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    t0 = time.time()
    utts = scan_fsdd(Path(args.data_dir) / "fsdd" / "recordings")
    cfg = FbankConfig(sample_rate=8000, n_mels=args.n_mels)
    feats = [fbank_from_file(u.path, cfg) for u in utts]
    speakers = [u.speaker for u in utts]
    digits = np.array([u.label for u in utts])
    spk = np.array(speakers)
    result: dict[str, dict] = {}
    for mode in ("none", "utterance", "speaker", "speaker_var"):
        x = np.stack([pooled(f, args.chunks) for f in centred(feats, speakers, mode)])
        folds = {}
        for held in sorted(set(speakers)):
            train, test = spk != held, spk == held
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
            folds[held] = float(clf.fit(x[train], digits[train]).score(x[test], digits[test]))
        result[mode] = {"by_held_out_speaker": folds, "mean": float(np.mean(list(folds.values())))}
        print(f"{mode:12s} mean {100 * result[mode]['mean']:.1f} %  "
              + "  ".join(f"{k} {100 * v:.1f}" for k, v in folds.items()), flush=True)
    atomic_write_json(Path(args.out), {
        "what": "FSDD digit accuracy of a logistic regression on chunk-pooled log-Mel frames, trained "
                "on all speakers but one, read on that one; per centring of the frames",
        "units": "fractions in [0, 1]", "n_mels": args.n_mels, "chunks": args.chunks,
        "results": result, "seconds": round(time.time() - t0, 1),
        "command": shlex.join(["python", "benchmarks/centring_probe.py", *sys.argv[1:]])})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
