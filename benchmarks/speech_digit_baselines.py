"""How much of the digit do an utterance's global statistics hold, with no model? (issue 13, part 1)

    OMP_NUM_THREADS=1 python benchmarks/speech_digit_baselines.py --data-dir ../shared/data
        [--config configs/pvae_b64.yaml] [key=value ...]

A speech style latent z^a that holds the speaker's voice is expected to hold statistics of the
whole utterance (its level, its long-term spectrum, its length). This script fits the same linear
probe as ``dispart evaluate`` (``linear_probe_accuracy``: standardised features, logistic
regression, fitted on the training split, scored on test) on such statistics of the log-Mel
frames PVAE reads (the config's features and split: the official FSDD split by default):

* ``log_duration``: log of the number of frames;
* ``duration_and_level``: + mean and standard deviation of all log-Mel values;
* ``long_term_spectrum``: the mean log-Mel spectrum over the utterance (every bin);
* ``long_term_spectrum_and_duration``: both;
* the same probe of the speaker, for comparison.

Writes benchmarks/results/speech_digit_baselines.json (fractions in [0, 1]) with the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import machine  # noqa: E402

from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.data.locate import find_data  # noqa: E402
from dispart.evaluation.clustering import chance_accuracy, linear_probe_accuracy  # noqa: E402
from dispart.files import atomic_write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "speech_digit_baselines.json"


def utterance_statistics(examples: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per utterance (T, D) log-Mel frames: the feature sets named in the module docstring."""
    dur = np.array([[np.log(len(x))] for x in examples])
    level = np.array([[float(np.mean(x)), float(np.std(x))] for x in examples])
    spectrum = np.stack([np.asarray(x).mean(axis=0) for x in examples])
    return {"log_duration": dur, "duration_and_level": np.hstack([dur, level]),
            "long_term_spectrum": spectrum, "long_term_spectrum_and_duration": np.hstack([spectrum, dur])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "pvae_b64.yaml"))
    ap.add_argument("--data-dir", required=True, help="folder with fsdd/recordings and mnist/mnist.npz")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    base = [f"{k}={v}" for k, v in find_data(Path(args.data_dir)).items()]
    cfg = load_config(args.config, [*base, *args.overrides])
    data = load_experiment_data(cfg.data, progress=False)
    train, test = data.split("audio", "train"), data.split("audio", "test")
    f_tr = utterance_statistics([np.asarray(x) for x in train.examples])
    f_te = utterance_statistics([np.asarray(x) for x in test.examples])
    y_tr, y_te = np.asarray(train.labels), np.asarray(test.labels)
    digit = {name: round(linear_probe_accuracy(f_tr[name], y_tr, f_te[name], y_te), 4) for name in f_tr}
    out = {"what": "linear probe of the digit (and of the speaker) from an utterance's global "
                   "statistics, no model: training split -> test split",
           "units": "fractions in [0, 1]",
           "digit_from": digit, "digit_chance": round(chance_accuracy(y_te), 4),
           "n_train": len(y_tr), "n_test": len(y_te), "config": args.config, "overrides": args.overrides,
           "commands": [shlex.join(["python", "benchmarks/speech_digit_baselines.py", *sys.argv[1:]])],
           "machine": machine()}
    if train.speakers is not None and test.speakers is not None and set(test.speakers) <= set(train.speakers):
        s_tr, s_te = np.asarray(train.speakers), np.asarray(test.speakers)
        out["speaker_from"] = {name: round(linear_probe_accuracy(f_tr[name], s_tr, f_te[name], s_te), 4)
                               for name in f_tr}
        out["speaker_chance"] = round(chance_accuracy(s_te), 4)
    atomic_write_json(Path(args.out), out)
    shown = ("digit_from", "digit_chance", "speaker_from")
    print({k: out[k] for k in shown if k in out})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
