"""Does PVAE's partition hold? One setting trained on FSDD + MNIST and measured (issue 13, part 1).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/pvae_partition.py --data-dir ../shared/data
        [--config configs/pvae_b64.yaml] [--run runs/partition] [--tag NAME] [--threads 1] [key=value ...]

Trains the config with the library's ``train`` (official FSDD split unless overridden), then
``evaluate_run`` (k-means purities; linear probes of the digit and of the speaker per latent, fitted
on the training split) and ``quality_run`` (judged coherence both ways, content kept by style
transfer, image style correlations; judges trained inside the project on the training split).
Records, per setting:

* ``purity``: z^s / z^a / z^i k-means purity (k = 10) on the test split;
* ``probes``: ``digit_from_za`` / ``digit_from_zi`` and ``speaker_from_zs`` / ``speaker_from_za``
  with their chance levels (the issue's targets: <= 2x chance for digit_from_za and speaker_from_zs);
  ``speaker_from_zs_mlp``: the speaker from speech z^s by a one-hidden-layer probe (256 units);
* ``coherence``: image -> speech with z^a from a reference utterance and from the prior, speech ->
  image likewise, speech style transfer keeping the z^s source's digit (issue: >= 90 %);
* ``image_style``: slant / ink correlations of image style transfer when quality.json has them;
* ``style_content_xcorr``: on the training split, the mean squared correlation
  (``objectives.cross_correlation``) between each utterance's z^a mean and the z^s mean of an image
  of the same digit (drawn with seed 0), and with the images shuffled (the floor, about 1 / N):
  what ``model.alpha_xcorr`` penalises, measured on the whole split rather than a batch;
* ``minutes_to_99``: wall minutes of training until both z^s purities first reached 0.99 at an
  evaluation (``train.eval_every``), null if never.

Writes benchmarks/results/pvae_partition.json (an entry with the same ``--tag`` is replaced); every
number is a fraction in [0, 1] unless named ``minutes``/``seconds``.

``--resume-from TAG --run NEW --tag NAME train.epochs=N`` trains on from the run of the existing
entry TAG (constant learning rate: the same as one run of N epochs): its folder is copied into NEW
(which must not exist), the copy continues from its last checkpoint with TAG's config and the
overrides, and the entry records ``resumed_from`` (TAG, its command and training seconds).

``--erase-from TAG --run NEW --tag NAME`` runs ``dispart erase`` (the training speakers linearly
erased from z^s, dispart/training/erasure.py) on the run of entry TAG into NEW and measures it; the
entry records ``erased_from`` (TAG, its command and training seconds, the erasure's rank and the
speakers' mean gaps before / after) and its training record is TAG's.

``--score-only --tag NAME`` measures the run folder of the existing entry NAME again without
training (after the measures changed): its measures are replaced, its training record kept, and
the command is added as ``score_command``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import add_tagged_arguments, recorded_command, write_tagged_run  # noqa: E402

from dispart.batches.pipeline import ExperimentData, load_experiment_data  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.data.locate import find_data  # noqa: E402
from dispart.evaluation.clustering import mlp_probe_accuracy  # noqa: E402
from dispart.evaluation.evaluate import evaluate_run  # noqa: E402
from dispart.evaluation.latents import modality_latents  # noqa: E402
from dispart.files import read_json  # noqa: E402
from dispart.generation.quality import quality_run  # noqa: E402
from dispart.models.pvae import PVAE  # noqa: E402
from dispart.objectives import cross_correlation  # noqa: E402
from dispart.runs import load_run  # noqa: E402
from dispart.training.erasure import erase_speaker  # noqa: E402
from dispart.training.run import train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pvae_partition.json"
WHAT = ("PVAE on FSDD + MNIST: does the partition hold? purities, digit/speaker linear probes per "
        "latent, judged coherence and style transfer, per setting")
UNITS = "fractions in [0, 1] unless the key says minutes or seconds"
DEFAULTS = ["train.progress_bar=false", "train.eval_every=5"]


def _r(x: Any) -> Any:
    return None if x is None else round(float(x), 4)


def minutes_to(history: list[dict[str, Any]], level: float = 0.99) -> float | None:
    """Wall minutes until speech and image z^s purity first both reached ``level``."""
    for h in history:
        p = h.get("purity", {})
        if p.get("speech/z^s", 0) >= level and p.get("image/z^s", 0) >= level:
            return round(h["seconds"] / 60, 2)
    return None


def measures(result: dict[str, Any], quality: dict[str, Any]) -> dict[str, Any]:
    """The issue's partition measures from evaluation.json and quality.json payloads."""
    pur = {f"{r['modality']}/{r['latent']}": _r(r["purity"]) for r in result["rows"]}
    digit = result.get("label_probe_accuracy") or {}
    digit_chance = result.get("label_probe_chance") or {}
    spk = result.get("speaker_probe_accuracy") or {}
    coh = quality.get("coherence", {})
    keep = quality.get("content_preservation", {})
    return {
        "purity": pur,
        "probes": {"digit_from_za": _r(digit.get("z^a")), "digit_from_zs_speech": _r(digit.get("z^s")),
                   "digit_from_zi": _r(digit.get("image/z^i")), "digit_chance": _r(digit_chance.get("z^a")),
                   "speaker_from_zs": _r(spk.get("z^s")), "speaker_from_za": _r(spk.get("z^a")),
                   "speaker_chance": _r((result.get("speaker_probe_chance") or {}).get("z^s"))},
        "coherence": {
            "image_to_speech": _r(coh.get("image->audio", {}).get("reference_style")),
            "image_to_speech_prior_style": _r(coh.get("image->audio", {}).get("prior_style")),
            "image_to_speech_resynthesized": _r(coh.get("image->audio", {}).get("resynthesized")),
            "speech_to_image": _r(coh.get("audio->image", {}).get("reference_style")),
            "speech_to_image_prior_style": _r(coh.get("audio->image", {}).get("prior_style")),
            "speech_style_keeps_digit": _r(keep.get("audio", {}).get("semantic_digit")),
            "speech_style_takes_style_digit": _r(keep.get("audio", {}).get("style_source_digit")),
            "image_style_keeps_digit": _r(keep.get("image", {}).get("semantic_digit")),
            "reconstruction": {k: _r(v) for k, v in quality.get("reconstruction", {}).items()}},
        "image_style": quality.get("image_style"),
    }


def style_content_xcorr(model: PVAE, data: ExperimentData, speech: dict[str, np.ndarray],
                        max_images: int = 5000) -> dict[str, Any]:
    """Training-split cross-correlation of speech z^a with the z^s of same-digit images (above);
    ``speech``: the training utterances' latent means (``modality_latents``)."""
    audio, image = data.split("audio", "train"), data.split("image", "train")
    style = torch.as_tensor(speech["z_audio"])
    y_audio = np.asarray(audio.labels)
    n_img = min(max_images, len(image.labels))
    y_image = np.asarray(image.labels)[:n_img]
    content = modality_latents(model, "image", image.examples[:n_img])["z_s"]
    rng = np.random.default_rng(0)
    pair = np.array([rng.choice(np.flatnonzero(y_image == y)) for y in y_audio])
    paired = torch.as_tensor(content[pair])
    return {"paired": _r(cross_correlation(style, paired)),
            "shuffled": _r(cross_correlation(style, paired[rng.permutation(len(pair))])),
            "n": int(len(pair))}


def speaker_from_zs_mlp(model: PVAE, data: ExperimentData, speech: dict[str, np.ndarray]) -> float:
    """The speaker from speech z^s means by a one-hidden-layer probe (train split -> test split):
    what the linear probe's number does not see; ``speech`` as for :func:`style_content_xcorr`."""
    train, test = data.split("audio", "train"), data.split("audio", "test")
    z_test = modality_latents(model, "audio", test.examples)["z_s"]
    return _r(mlp_probe_accuracy(speech["z_s"], np.asarray(train.speakers), z_test,
                                 np.asarray(test.speakers)))


def measure_run(run_dir: Path) -> dict[str, Any]:
    """Every measure of a trained run folder (evaluation, quality, style_content_xcorr, the MLP
    speaker probe), the run's data loaded once for all."""
    run = load_run(run_dir)
    data = load_experiment_data(run.config.data, progress=False, normalizers=run.normalizers)
    result = evaluate_run(run_dir, progress=False, data=data)
    quality = quality_run(run_dir, data=data)
    speech = modality_latents(run.model, "audio", data.split("audio", "train").examples)
    out = {**measures(result, quality), "style_content_xcorr": style_content_xcorr(run.model, data, speech)}
    out["probes"]["speaker_from_zs_mlp"] = speaker_from_zs_mlp(run.model, data, speech)
    return out


def tagged_entry(out: Path, tag: str, why: str) -> dict[str, Any]:
    """The entry ``tag`` of the results file ``out``; SystemExit naming ``why`` if there is none."""
    runs = read_json(out).get("runs", []) if out.is_file() else []
    entry = next((r for r in runs if r.get("tag") == tag), None)
    if entry is None:
        raise SystemExit(f"pvae_partition: no entry with tag {tag!r} in {out} {why}")
    return entry


def score_again(out: Path, tag: str, command: str) -> int:
    """Evaluate the run folder of entry ``tag`` in ``out`` again and replace its measures."""
    entry = tagged_entry(out, tag, "to score again")
    run = Path(entry["run"])
    if not (run / "model.safetensors").is_file():
        raise SystemExit(f"pvae_partition: the run folder {run} of tag {tag!r} holds no trained model")
    t0 = time.perf_counter()
    entry.update(measure_run(run))
    entry["score_command"] = command
    seconds = round(time.perf_counter() - t0, 1)
    entry["wall_seconds"] = {**entry.get("wall_seconds", {}), "score_again": seconds}
    write_tagged_run(out, entry, what=WHAT, units=UNITS)
    print({k: entry[k] for k in ("tag", "purity", "probes", "coherence", "image_style",
                                 "style_content_xcorr")})
    print(f"wrote {out}")
    return 0


def source_record(entry: dict[str, Any]) -> dict[str, Any]:
    """What a resumed or erased entry keeps of the entry it came from."""
    return {"tag": entry["tag"], "run": entry["run"], "command": entry["command"], "epochs": entry["epochs"],
            "train_seconds": entry["wall_seconds"]["train"]}


def erase_from(out: Path, tag: str, run: Path, new_tag: str, command: str, method: str) -> int:
    """``dispart erase`` on the run of entry ``tag`` into ``run`` (new), measured as entry ``new_tag``."""
    entry = tagged_entry(out, tag, "to erase from")
    t0 = time.perf_counter()
    record = erase_speaker(entry["run"], run, method=method)
    t_erase = time.perf_counter() - t0
    t0 = time.perf_counter()
    measured = measure_run(run)
    new = {"tag": new_tag, "command": command, "config": entry["config"], "overrides": entry["overrides"],
           **measured, "minutes_to_99": None, "epochs": entry["epochs"], "steps": entry["steps"],
           "erased_from": {**source_record(entry),
                           **{k: record[k] for k in ("method", "rank", "speaker_mean_gap_before",
                                                     "speaker_mean_gap_after")}},
           "wall_seconds": {"erase": round(t_erase, 1),
                            "evaluate_and_quality": round(time.perf_counter() - t0, 1)},
           "run": str(run), "threads": int(torch.get_num_threads())}
    write_tagged_run(out, new, what=WHAT, units=UNITS)
    print({k: new[k] for k in ("tag", "purity", "probes", "coherence", "image_style")})
    print(f"wrote {out}")
    return 0


def copy_for_resume(out: Path, tag: str, run: Path) -> dict[str, Any]:
    """Copy the run folder of entry ``tag`` into ``run`` (must not exist); the entry's record."""
    entry = tagged_entry(out, tag, "to resume from")
    source = Path(entry["run"])
    if not (source / "checkpoints").is_dir():
        raise SystemExit(f"pvae_partition: --resume-from {tag!r}: {source} has no checkpoints folder")
    if run.exists():
        raise SystemExit(f"pvae_partition: --resume-from: --run {run} exists; name a new folder")
    shutil.copytree(source, run)
    return source_record(entry)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="default configs/pvae_b64.yaml (with --resume-from: "
                    "the resumed run's own config)")
    ap.add_argument("--data-dir", required=True, help="folder with fsdd/recordings and mnist/mnist.npz")
    ap.add_argument("--run", default=str(ROOT / "runs" / "partition"), help="run folder (overwritten)")
    ap.add_argument("--resume-from", metavar="TAG",
                    help="continue the run of the existing entry TAG in a copy at --run")
    ap.add_argument("--erase-from", metavar="TAG",
                    help="`dispart erase` the run of the existing entry TAG into --run (new) and measure it")
    ap.add_argument("--erase-method", default="leace", choices=["leace", "orth"],
                    help="with --erase-from: the eraser (default leace)")
    ap.add_argument("--score-only", action="store_true",
                    help="measure the run of the existing --tag entry again, without training")
    add_tagged_arguments(ap, RESULTS)
    args = ap.parse_args()
    if args.resume_from and args.config:
        ap.error("--resume-from continues with the resumed run's config; drop --config")
    if args.erase_from and (args.overrides or args.config or args.resume_from or args.score_only):
        ap.error("--erase-from takes the erased run as it is: no --config, --resume-from, --score-only "
                 "or overrides")
    args.config = args.config or str(ROOT / "configs" / "pvae_b64.yaml")
    torch.set_num_threads(args.threads)
    command = recorded_command("pvae_partition.py", sys.argv[1:], args.threads)
    if args.score_only:
        return score_again(Path(args.out), args.tag, command)
    if args.erase_from:
        return erase_from(Path(args.out), args.erase_from, Path(args.run), args.tag, command,
                          args.erase_method)
    base = [f"{k}={v}" for k, v in find_data(Path(args.data_dir)).items()]
    resumed = None
    if args.resume_from:
        resumed = copy_for_resume(Path(args.out), args.resume_from, Path(args.run))
        cfg = load_config(Path(args.run) / "config.yaml", [*base, *DEFAULTS, *args.overrides])
    else:
        cfg = load_config(args.config, [*base, *DEFAULTS, *args.overrides])
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = train(cfg, args.run, overwrite=resumed is None, resume=resumed is not None)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    measured = measure_run(Path(args.run))
    t_eval = time.perf_counter() - t0
    history = summary.get("history", [])
    entry = {"tag": args.tag, "command": command, "config": args.config, "overrides": args.overrides,
             **measured, "minutes_to_99": minutes_to(history),
             "epochs": int(summary["epochs"]), "steps": int(summary["global_step"]),
             "purity_during_training": history,
             "wall_seconds": {"train": round(t_train, 1), "evaluate_and_quality": round(t_eval, 1)},
             "load_average": {"before": load_before, "after": os.getloadavg()[0], "cores": os.cpu_count()},
             "run": str(args.run), "threads": args.threads}
    if resumed is not None:
        entry["resumed_from"] = resumed
        entry["config"] = str(Path(args.run) / "config.yaml")  # the resumed run's, with the overrides
    out = Path(args.out)
    write_tagged_run(out, entry, what=WHAT, units=UNITS)
    print({k: entry[k] for k in ("tag", "purity", "probes", "coherence", "image_style", "minutes_to_99")})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
