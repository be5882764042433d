"""DSAE speaker verification on unseen speakers (Li & Mandt 2018, Table 2; issue 10, item 4, speech).

    OMP_NUM_THREADS=1 python benchmarks/dsae_speech.py [--config configs/dsae_speech.yaml]
        [--q factorised full] [--tag NAME] [--audio ../shared/data/arabic_speech_commands]
        [key=value ...]

Loads the "speech_segments" corpus of the config (Arabic Speech Commands: the publishers'
speaker-disjoint split, 17 train / 5 test speakers; 200 ms segments of a 200-bin log-magnitude
spectrum), trains DSAE with the library's ``train`` once per ``--q`` (the config plus the
``key=value`` overrides, e.g. ``train.epochs=40 model.f_dim=64``), then scores speaker
verification on the test speakers (``dispart.evaluation.verification.latent_verification``):
one embedding per utterance (posterior means averaged over its segments and, for z_1:T, frames),
cosine scores of all same/different-speaker utterance pairs, EER. Also scored:

* the trivial baseline: the mean raw log-magnitude frame of each utterance (same trials);
* ``word_eer_f``: the EER of mu_f when *same word* counts as genuine, a diagnostic of how much
  of the spoken content f holds (low = f encodes the word, not only the speaker).

Every run is appended to ``benchmarks/results/dsae_speech.json`` (a run with the same tag and q
is replaced), with the exact command; EERs are fractions in [0, 1].
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import cpu_model  # noqa: E402

from dispart.batches.pipeline import ExperimentData, load_experiment_data  # noqa: E402
from dispart.batches.sets import ModalitySet  # noqa: E402
from dispart.config import ExperimentConfig, load_config  # noqa: E402
from dispart.evaluation.latents import sequence_latents  # noqa: E402
from dispart.evaluation.verification import (  # noqa: E402
    latent_verification,
    pool_by_group,
    speaker_verification,
)
from dispart.features.normalize import FeatureNormalizer  # noqa: E402
from dispart.files import atomic_write_json, read_json  # noqa: E402
from dispart.models.base import MultimodalModel  # noqa: E402

MODALITY = "speech"
RESULTS = ROOT / "benchmarks" / "results" / "dsae_speech.json"
EER_NOTE = ("EERs are fractions in [0, 1] (0.05 = 5%); trials: all pairs of test utterances, genuine = "
            "same speaker, cosine score; embeddings = posterior means averaged over each utterance's "
            "segments (and frames for z)")


def baseline_eer(test: ModalitySet, normalizer: FeatureNormalizer | None = None) -> float:
    """EER of the mean raw log-magnitude frame of each utterance (cosine, all pairs).

    ``test``: segments (N, T, D) with speakers and meta["utterance"]; when its examples are
    normalised, ``normalizer`` undoes it (x * std + mean) so the baseline sees raw log-magnitudes.
    """
    frames = np.stack([np.asarray(e, dtype=np.float64).mean(axis=0) for e in test.examples])
    if normalizer is not None:
        frames = frames * normalizer.std + normalizer.mean
    utts, emb = pool_by_group(frames, test.meta["utterance"])
    speaker_of = dict(zip(test.meta["utterance"], test.speakers, strict=True))
    return speaker_verification(emb, [speaker_of[u] for u in utts]).eer


def word_eer(model: MultimodalModel, test: ModalitySet, latent: str = "f") -> float:
    """EER of ``latent``'s utterance embeddings when trials with the same word (label) are genuine."""
    means = sequence_latents(model, list(test.examples), MODALITY)[latent]
    utts, emb = pool_by_group(means, test.meta["utterance"])
    word_of = dict(zip(test.meta["utterance"], test.labels, strict=True))
    return speaker_verification(emb, [word_of[u] for u in utts]).eer


def score(model: MultimodalModel, test: ModalitySet) -> dict[str, Any]:
    """eer_f, eer_z (speaker trials), word_eer_f, and the trial counts of the test segments."""
    res = latent_verification(model, test, MODALITY, ["f", "z"])
    return {"eer_f": round(res["f"].eer, 5), "eer_z": round(res["z"].eer, 5),
            "word_eer_f": round(word_eer(model, test), 5),
            "trials": {"genuine": res["f"].n_genuine, "impostor": res["f"].n_impostor,
                       "utterances": res["f"].n_utterances, "speakers": res["f"].n_speakers}}


def final_terms(run_dir: Path) -> dict[str, float]:
    """The last logged training terms (-ELBO, rec, kl_f, kl_z) of a run folder's CSV log."""
    import csv

    path = run_dir / "logs" / "metrics.csv"
    if not path.is_file():
        return {}
    last: dict[str, float] = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            last.update({k.removeprefix("train/"): round(float(v), 2) for k, v in row.items()
                         if v and k.startswith("train/")})
    return last


def remove_segment_level(data: ExperimentData) -> FeatureNormalizer:
    """Benchmark-only preprocessing (``--level-norm``): subtract from every raw segment (T, D) its
    mean log-magnitude over frames and bins (the recording level), then re-standardise with
    statistics of the train split. Changes ``data`` in place; returns the new normaliser."""
    old = data.normalizers[MODALITY]
    raw = {s: [np.asarray(e) * old.std + old.mean for e in v.examples]
           for s, v in data.sets[MODALITY].items()}
    raw = {s: [r - r.mean() for r in v] for s, v in raw.items()}
    new = FeatureNormalizer().fit(raw["train"])
    for s, v in data.sets[MODALITY].items():
        v.examples = [new.transform(r) for r in raw[s]]
    data.normalizers[MODALITY] = new
    return new


def add_val_to_train(data: ExperimentData) -> int:
    """Benchmark-only (``--train-on-val``): the validation speakers' segments join the train split
    (the normaliser stays the one fitted on the train speakers). Returns the number of speakers added."""
    sets = data.sets[MODALITY]
    if "val" not in sets:
        raise SystemExit("dsae_speech: --train-on-val, but the corpus has no validation split")
    tr, va = sets["train"], sets.pop("val")
    sets["train"] = ModalitySet(list(tr.examples) + list(va.examples), tr.labels + va.labels,
                                tr.ids + va.ids, tr.speakers + va.speakers, tr.paths + va.paths,
                                {k: tr.meta[k] + va.meta[k] for k in tr.meta})
    return len(set(va.speakers))


def train_and_score(cfg: ExperimentConfig, data: ExperimentData, run_dir: Path) -> dict[str, Any]:
    """Train ``cfg`` on ``data`` into ``run_dir`` (overwritten) and score its test speakers."""
    from dispart.training.run import train

    t0 = time.perf_counter()
    summary = train(cfg, run_dir, data=data, overwrite=True)
    minutes = (time.perf_counter() - t0) / 60.0
    from dispart.runs import load_run

    model = load_run(run_dir).model
    out = score(model, data.split(MODALITY, "test"))
    return {**out, "epochs": int(summary["epochs"]), "steps": int(summary["global_step"]),
            "train_minutes": round(minutes, 2), "final_train_terms": final_terms(run_dir)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "dsae_speech.yaml"))
    ap.add_argument("--audio", default=str(ROOT.parent / "shared" / "data" / "arabic_speech_commands"))
    ap.add_argument("--q", nargs="+", default=["factorised", "full"], choices=["factorised", "full"])
    ap.add_argument("--tag", default="config", help="name of this setting in the results")
    ap.add_argument("--runs-dir", default="/tmp/dsae_speech_runs", help="run folders go here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--level-norm", action="store_true",
                    help="remove each segment's mean log-magnitude (recording level) before training")
    ap.add_argument("--train-on-val", action="store_true",
                    help="train on the validation speakers too (Arabic: 17 + 5 = 22 speakers)")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not Path(args.audio).is_dir():
        raise SystemExit(f"dsae_speech: no speech folder {args.audio} (--audio)")

    base = [f"data.audio={args.audio}", "train.progress_bar=false", *args.overrides]
    cfg0 = load_config(args.config, base)
    t0 = time.perf_counter()
    data = load_experiment_data(cfg0.data, progress=False, loaders=["speech_segments"])
    n_official = len(set(data.split(MODALITY, "train").speakers))
    if args.train_on_val:
        add_val_to_train(data)
    test = data.split(MODALITY, "test")
    train_set = data.split(MODALITY, "train")
    baseline = round(baseline_eer(test, data.normalizers.get(MODALITY)), 5)
    if args.level_norm:
        remove_segment_level(data)
    print(f"data: {len(train_set)} train / {len(test)} test segments, {len(set(train_set.speakers))} / "
          f"{len(set(test.speakers))} speakers ({time.perf_counter() - t0:.1f} s); "
          f"baseline EER {baseline:.4f}", flush=True)

    out_path = Path(args.out)
    old = read_json(out_path) if out_path.is_file() else {}
    runs = [r for r in old.get("runs", []) if not (r.get("tag") == args.tag and r.get("q") in args.q)]
    command = ("OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/dsae_speech.py "
               + shlex.join(sys.argv[1:]))
    for q in args.q:
        cfg = load_config(args.config, [*base, f"model.q={q}"])
        run_dir = Path(args.runs_dir) / f"{args.tag}_{q}"
        print(f"training {args.tag} q={q} -> {run_dir}", flush=True)
        result = train_and_score(cfg, data, run_dir)
        entry = {"tag": args.tag, "q": q, **result, "overrides": args.overrides,
                 "segment_level_removed": args.level_norm, "train_on_val": args.train_on_val,
                 "train_speakers": len(set(train_set.speakers)),
                 "config": str(Path(args.config).resolve().relative_to(ROOT)) if
                 Path(args.config).resolve().is_relative_to(ROOT) else args.config,
                 "model": {k: getattr(cfg.model, k) for k in ("f_dim", "z_dim", "hidden", "prior_hidden",
                                                               "frame_encoder", "frame_decoder")},
                 "train": {"lr": cfg.train.lr, "batch_size": cfg.train.batch_size, "seed": cfg.train.seed},
                 "command": command}
        print(f"  {q}: EER f {result['eer_f']:.4f}, z {result['eer_z']:.4f}, word-EER f "
              f"{result['word_eer_f']:.4f}; {result['epochs']} epochs, {result['train_minutes']} min; "
              f"{result['final_train_terms']}", flush=True)
        runs.append(entry)
        best = min(runs, key=lambda r: r["eer_f"])
        result_json = {
            "dataset": (f"Arabic Speech Commands ({args.audio}), the ten digit words, publishers' "
                        f"speaker-disjoint split: {n_official} train speakers (+ the validation speakers in "
                        f"runs with train_on_val), {len(set(test.speakers))} unseen test speakers; 200 ms "
                        f"segments (T = 20) of a 200-bin log-magnitude spectrum every 10 ms (16 kHz)"),
            "units": EER_NOTE,
            "targets": {"eer_f_max": 0.05, "eer_z_over_eer_f_min": 3.0,
                        "paper_timit": {"eer_f": [0.0478, 0.0556], "eer_z": [0.175, 0.192]}},
            "baseline_eer_mean_log_spectrum": baseline,
            "runs": runs,
            "best": {k: best[k] for k in ("tag", "q", "eer_f", "eer_z")},
            "commands": sorted({r["command"] for r in runs}),
            "machine": {"python": platform.python_version(), "torch": torch.__version__,
                        "processor": cpu_model(), "threads": args.threads},
        }
        atomic_write_json(out_path, result_json)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
