"""Is the speech judge or the speech decoder what keeps generated speech from saying the digit?

    OMP_NUM_THREADS=2 python benchmarks/speech_judge_check.py --run RUN [--out JSON]

For a trained PVAE-style run with an "audio" modality (its judge classifiers are trained or reused
as ``quality.json`` does, dispart/evaluation/classifiers.py), the speech judge's accuracy on the
run's test utterances:

* ``real``: the real normalised log-Mel features (the judge's own test accuracy);
* ``real_smoothed``: the same features under a moving average over ``w`` frames (w = 3, 5, 9, 15):
  is the judge thrown by the smoothness of decoded means?
* ``reconstruction``: each utterance decoded from its own unimodal latents (posterior means) at its
  own length, as ``quality.json``'s ``reconstruction.audio``;
* ``reconstruction_std_matched``: those reconstructions with their per-utterance temporal spread
  rescaled to the source utterance's (mean over time kept);
* ``temporal_std``: mean over utterances of the per-dimension standard deviation over time, real
  and reconstructed.

If the judge reads smoothed and rescaled speech nearly as well as real speech, but reconstructions
much worse, the digit is lost in the decoder, not in the judging. Writes ``--out`` (default
benchmarks/results/speech_judge_check.json; an entry per run folder, replaced on a re-run).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import uniform_filter1d

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.evaluation.classifiers import run_classifiers  # noqa: E402
from dispart.evaluation.latents import modality_latents  # noqa: E402
from dispart.files import atomic_write_json, read_json  # noqa: E402
from dispart.generation.quality import decode_batch  # noqa: E402
from dispart.runs import load_run  # noqa: E402

WINDOWS = (3, 5, 9, 15)


def std_matched(generated: list[np.ndarray], sources: list[np.ndarray]) -> list[np.ndarray]:
    """Each (T, D) generated utterance with its deviations from its time mean scaled so that its
    mean per-dimension temporal std equals its source's."""
    out = []
    for g, s in zip(generated, sources, strict=True):
        scale = s.std(0).mean() / max(float(g.std(0).mean()), 1e-6)
        out.append(g.mean(0) + (g - g.mean(0)) * scale)
    return out


def check(run_dir: str | Path) -> dict:
    run = load_run(run_dir)
    data = load_experiment_data(run.config.data, progress=False, normalizers=run.normalizers)
    if "audio" not in data.sets:
        raise SystemExit(f"{run_dir}: the run has no 'audio' modality to judge")
    judge = run_classifiers(run, data)["audio"]
    test = data.split("audio", "test")
    x, y = list(test.examples), list(test.labels)
    latents = modality_latents(run.model, "audio", x)
    rec = decode_batch(run.model, latents, "audio", np.asarray([len(u) for u in x]))
    return {
        "n": len(y),
        "real": judge.accuracy(x, y),
        "real_smoothed": {str(w): judge.accuracy([uniform_filter1d(u, w, axis=0) for u in x], y)
                          for w in WINDOWS},
        "reconstruction": judge.accuracy(rec, y),
        "reconstruction_std_matched": judge.accuracy(std_matched(rec, x), y),
        "temporal_std": {"real": round(float(np.mean([u.std(0).mean() for u in x])), 4),
                         "reconstruction": round(float(np.mean([r.std(0).mean() for r in rec])), 4)},
        "weights_sha256": run.weights_sha256,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained run folder with an audio modality")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speech_judge_check.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    result = check(args.run)
    result["command"] = ("OMP_NUM_THREADS=2 python benchmarks/speech_judge_check.py "
                         + shlex.join(sys.argv[1:]))
    out = Path(args.out)
    doc = read_json(out) if out.is_file() else {
        "what": "speech judge accuracy on real, smoothed, reconstructed and std-matched utterances",
        "units": "fractions in [0, 1]", "runs": {}}
    doc["runs"][str(Path(args.run))] = result
    atomic_write_json(out, doc)
    print({k: v for k, v in result.items() if k != "command"})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
