"""What a PVAE run's image latents hold: z^i's KL to its prior per dimension, and the run's image
decoder judged from q's latents (speech + image, as in training) and from r_image's (issue 13).

    OMP_NUM_THREADS=1 python benchmarks/pvae_image_latents.py --run RUN [--run RUN2 ...] [--n 300]

For each run: the first ``--n`` test images of its own data (``load_experiment_data`` with the
run's config and normaliser), each paired with a test utterance of the same digit (seed 0);
``zi_kl_nats``: the mean over images of KL(r_image(z^i | x) || N(0, I)) per dimension (max, sum);
``judged_from_q`` / ``judged_from_r_image``: the run's image classifier (``RUN/classifiers/image``)
on the images decoded from the posterior means, with their mean squared error to the inputs.
Writes benchmarks/results/pvae_image_latents.json (entries keyed by run folder, with the command).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Normal, kl_divergence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import recorded_command, results_lock  # noqa: E402

from dispart.batches.batch import Sequences  # noqa: E402
from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.evaluation.classifiers import DigitClassifier  # noqa: E402
from dispart.files import atomic_write_json, read_json  # noqa: E402
from dispart.runs import load_run  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pvae_image_latents.json"


def measure(run_dir: Path, n: int) -> dict:
    run = load_run(run_dir)
    model = run.model.eval()
    data = load_experiment_data(run.config.data, progress=False, normalizer=run.normalizer)
    images, speech = data.split("image", "test"), data.split("audio", "test")
    x = np.asarray(images.examples, dtype=np.float32)[:n].reshape(-1, 1, 28, 28)
    y = np.asarray(images.labels)[:n]
    spoken, rng = np.asarray(speech.labels), np.random.default_rng(0)
    utts = [speech.examples[rng.choice(np.flatnonzero(spoken == d))] for d in y]
    batch = {"image": torch.from_numpy(x),
             "audio": Sequences.from_list([torch.as_tensor(u, dtype=torch.float32) for u in utts])}
    judge = DigitClassifier.load(run_dir / "classifiers" / "image")
    out: dict = {"n": len(y)}
    with torch.no_grad():
        q, r = model.inference.joint(batch), model.inference.unimodal["image"](batch["image"])
        zi = r["z_image"].base_dist
        kl = kl_divergence(zi, Normal(torch.zeros_like(zi.loc), torch.ones_like(zi.scale))).mean(0)
        out["zi_kl_nats"] = {"max_per_dim": round(float(kl.max()), 4), "sum": round(float(kl.sum()), 3)}
        for name, post in (("q", q), ("r_image", r)):
            z = {k: post[k].mean for k in ("z_s", "z_image")}
            decoded = model.decode(z, "image", None).numpy()
            out[f"judged_from_{name}"] = judge.accuracy(decoded.reshape(len(y), 28, 28), [str(d) for d in y])
            out[f"mse_from_{name}"] = round(float(((decoded - x) ** 2).mean()), 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="a PVAE run folder (repeatable)")
    ap.add_argument("--n", type=int, default=300, help="test images per run")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    command = recorded_command("pvae_image_latents.py", sys.argv[1:], 1)
    entries = {}
    for run in args.run:
        entries[str(run)] = {**measure(Path(run), args.n), "command": command}
        print(run, entries[str(run)])
    with results_lock(out):  # read-modify-write: a parallel call keeps its entries too
        results = read_json(out) if out.is_file() else {"runs": {}}
        results["runs"].update(entries)
        atomic_write_json(out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
