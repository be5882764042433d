"""MDVAE on GRID (issue 11): denoising, probes and swaps vs the unimodal baselines.

    OMP_NUM_THREADS=1 python benchmarks/mdvae.py [--grid ../shared/data/grid_s1]
        [--runs-dir runs/mdvae_bench] [--n-test 0] [key=value ...]

1. Trains (or reuses when finished; resumes when interrupted) with the library's ``train``:
   ``RUNS/mdvae`` from configs/mdvae_grid.yaml (stage 1: a VQ-VAE per modality in
   ``RUNS/mdvae/stage1_{audio,video}``; stage 2: MDVAE on their frozen encodings), then the
   unimodal counterparts on the SAME VQ-VAEs (``model.stage1_dir=RUNS/mdvae``): V-DSAE
   (``model.modalities=[video]``, q(w | x_v)) in ``RUNS/v_dsae`` and A-DSAE (``[audio]``) in
   ``RUNS/a_dsae``. ``key=value`` overrides go to all three (e.g. ``train.epochs=30``).
2. **Denoising** (the slides' experiment): Gaussian noise (sigma 0.2 of the [0, 1] range, or each of
   ``--sigmas``, the first one being the headline) on the
   mouth or the eye region of the 6 central frames of every 10-frame test sequence, audio
   untouched; encode-decode with posterior means; PSNR and SSIM (scikit-image) on the corrupted
   region of the corrupted frames (``dispart.evaluation.denoising``), for MDVAE (noisy video +
   clean audio), the stage-1 video VQ-VAE alone, V-DSAE, and the noisy input itself; and, to see
   what the audio contributes, MDVAE given the audio of another test sequence
   (``mdvae_other_audio``, not part of the target). ``stage1_ceiling``: the VQ-VAE's own
   reconstruction of the clean videos (what any model decoding through it can reach) and each
   sequence's mean clean frame held for all frames (how far the face moves within a window), and the
   spread of its encodings within a window and over all frames (what stage 2's likelihood sees).
   ``clean_reconstruction``: each restorer on the clean test videos (all 10 frames), with how much
   its output moves in each region and how well that motion follows the clean video's;
   ``audio_explains_motion``: the R^2 of a ridge regression from the audio to each region's motion
   (how much any model could take from the audio there).
3. **Probes** (``dispart.evaluation.probe_curve``): multinomial logistic regression vs the labelled
   fraction of training sequences, on mu_w and on time-averaged mu_z_av (MDVAE), and on mu_w /
   mean mu_z of A-DSAE and V-DSAE, for two labels: the sentence's colour word (static over a
   sentence: w's job) and the word spoken at the window's centre frame (from the alignments;
   "sil" in pauses: the dynamic content z_av should carry).
4. **Swaps**: every test sequence decoded with z_av, z_v or both taken from another test sequence
   (a fixed derangement); what moved is measured as the mean absolute change of the decoded video
   against the target's own reconstruction in the mouth and in the eye region, relative to how
   much the source's and target's reconstructions differ there (0: nothing moved, 1: as far as the
   source), and, for the audio, the correlation of the decoded spectrogram with the source's and
   with the target's reconstruction.

Writes ``--out`` (benchmarks/results/mdvae.json) with the commands, the run folders' weight
hashes and the wall times.
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

from dispart.batches.batch import Sequences  # noqa: E402
from dispart.batches.pipeline import ExperimentData, load_experiment_data  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.data.grid import read_align  # noqa: E402
from dispart.evaluation.denoising import REGIONS, denoising_table, region_box, region_scores  # noqa: E402
from dispart.evaluation.probe_curve import probe_curve, time_average  # noqa: E402
from dispart.files import atomic_write_json, read_json  # noqa: E402
from dispart.runs import load_run  # noqa: E402

CONFIG = ROOT / "configs" / "mdvae_grid.yaml"
OUT = ROOT / "benchmarks" / "results" / "mdvae.json"
BATCH = 64


def train_or_load(cfg_overrides: list[str], run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Train ``run_dir`` unless it is a finished run folder; returns (model, info)."""
    from dispart.training.run import train_to_end

    t0 = time.perf_counter()
    trained = False
    if not (run_dir / "run.json").is_file():
        train_to_end(load_config(CONFIG, cfg_overrides), run_dir)
        trained = True
    run = load_run(run_dir)
    meta = read_json(run_dir / "run.json")
    info = {"run": str(run_dir), "trained_now": trained, "minutes": round((time.perf_counter() - t0) / 60, 2),
            "weights_sha256": meta.get("files", {}).get("model.safetensors"),
            "trained_by": meta.get("provenance", {}).get("command"),
            # a reused run was trained by ``trained_by`` (its own command), not with these overrides
            "overrides": cfg_overrides if trained else None}
    return run.model, info


def stacked(data: ExperimentData, modality: str, split: str) -> np.ndarray:
    """(N, T, *frame) float32 array of one split's (fixed-length) sequences."""
    return np.stack([np.asarray(e, dtype=np.float32) for e in data.split(modality, split).examples])


def seqs(x: np.ndarray | torch.Tensor) -> Sequences:
    t = torch.as_tensor(x, dtype=torch.float32)
    return Sequences(t, torch.full((len(t),), t.shape[1], dtype=torch.long))


def batched(fn: Any, *arrays: np.ndarray) -> np.ndarray:
    """Apply ``fn`` to chunks of BATCH rows of ``arrays`` and concatenate its numpy outputs."""
    outs = [fn(*(a[i:i + BATCH] for a in arrays)) for i in range(0, len(arrays[0]), BATCH)]
    return np.concatenate([o.detach().cpu().numpy() if torch.is_tensor(o) else o for o in outs])


def centre_words(data: ExperimentData, split: str, grid: Path) -> list[str]:
    """The word spoken at the centre frame of each window (alignment of its clip; "sil" in pauses)."""
    mset = data.split("video", split)
    fps = data.spec("video").frame_rate or 25.0
    words = []
    cache: dict[str, list[Any]] = {}
    for clip, start, x in zip(mset.meta["clip"], mset.meta["start"], mset.examples, strict=True):
        if clip not in cache:
            cache[clip] = read_align(grid / "align" / f"{clip}.align")
        t = (int(start) + len(x) / 2) / fps
        word = next((w.word for w in cache[clip] if w.start <= t < w.end), "sil")
        words.append("sil" if word == "sp" else word)
    return words


def latents_of(model: Any, batch_fn: Any, n: int) -> dict[str, np.ndarray]:
    """Posterior means of every latent over ``n`` rows, static (N, D) and time-averaged (N, D)."""
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, n, BATCH):
        means = model.posterior_means(batch_fn(slice(i, min(i + BATCH, n))))
        for k, v in means.items():
            v = v.detach().cpu().numpy()
            out.setdefault(k, []).append(time_average(v) if v.ndim == 3 else v)
    return {k: np.concatenate(v) for k, v in out.items()}


def region_change(a: np.ndarray, b: np.ndarray, region: str) -> np.ndarray:
    """Per-sequence mean |a - b| inside ``region`` over all frames: (N,)."""
    left, top, right, bottom = region_box(region, a.shape[3], a.shape[4])
    return np.abs(a[..., top:bottom, left:right] - b[..., top:bottom, left:right]).mean(axis=(1, 2, 3, 4))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the Pearson correlation of two (N, ...) arrays' rows."""
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    return float(np.mean((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)))


def swaps(model: Any, audio: np.ndarray, video: np.ndarray, seed: int) -> dict[str, Any]:
    """Transfer z_av, z_v and both from a derangement of the test sequences (see module doc)."""
    rng = np.random.default_rng(seed)
    n = len(video)
    perm = rng.permutation(n)
    perm = np.where(perm == np.arange(n), (perm + 1) % n, perm)  # no sequence is its own source

    def batch(rows: np.ndarray) -> dict[str, Sequences]:
        return {"audio": seqs(audio[rows]), "video": seqs(video[rows])}

    idx = np.arange(n)
    rec = {m: batched(lambda r, m=m: model.transfer(batch(r), batch(r), ())[m], idx)
           for m in ("audio", "video")}
    out: dict[str, Any] = {"pairs": int(n), "seed": seed}
    for name, moved in (("z_av", ("z_av",)), ("z_v", ("z_v",)), ("z_av+z_v", ("z_av", "z_v"))):
        dec = {m: batched(lambda r, m=m, moved=moved: model.transfer(batch(r), batch(perm[r]), moved)[m], idx)
               for m in ("audio", "video")}
        row: dict[str, float] = {}
        for region in REGIONS:
            gap = region_change(rec["video"][perm], rec["video"], region)
            moved_by = region_change(dec["video"], rec["video"], region)
            row[f"{region}_moved"] = float(np.mean(moved_by) / max(float(np.mean(gap)), 1e-12))
        row["audio_corr_source"] = corr(dec["audio"], rec["audio"][perm])
        row["audio_corr_target"] = corr(dec["audio"], rec["audio"])
        out[name] = row
    return out


def deviation(v: np.ndarray, region: str) -> np.ndarray:
    """A video's (N, T, 3, H, W) ``region`` minus its sequence's mean frame: (N, T, 3, h, w)."""
    left, top, right, bottom = region_box(region, v.shape[3], v.shape[4])
    return (v - v.mean(axis=1, keepdims=True))[..., top:bottom, left:right]


def motion(v: np.ndarray, region: str) -> float:
    """How much a video (N, T, 3, H, W) moves in ``region``: mean |frame - its sequence's mean frame|."""
    return float(np.abs(deviation(v, region)).mean())


def clean_reconstructions(recs: dict[str, np.ndarray], clean: np.ndarray) -> dict[str, Any]:
    """Each restorer's output on the *clean* test videos (``recs``: name -> (N, T, 3, H, W)), per
    region: PSNR / SSIM over all frames, how much it moves (:func:`motion`; the clean videos' in
    ``clean``) and the correlation of its frame-to-mean deviations with the clean ones (1: it
    follows the lips / eyes; 0: a still face)."""
    out: dict[str, Any] = {}
    for region in ("mouth", "eyes"):
        out[region] = {"clean": {"motion": motion(clean, region)}}
        frames = range(clean.shape[1])
        for name, rec in recs.items():
            out[region][name] = {**region_scores(clean, rec, region, frames=frames),
                                 "motion": motion(rec, region),
                                 "motion_corr": corr(deviation(clean, region), deviation(rec, region))}
    return out


def audio_explains_motion(audio: dict[str, np.ndarray], video: dict[str, np.ndarray], seed: int = 0
                          ) -> dict[str, Any]:
    """How much of each region's motion the audio can tell, with no model in between: a ridge
    regression (alpha by cross-validation) from the audio frames t-1, t, t+1 (each minus its
    window's mean; PCA to 64 dimensions) to the region's pixels at t minus the window's mean frame,
    fitted on the training windows; R^2 on the test windows (0: the audio predicts none of it)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV

    def context(a: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=1, keepdims=True)
        p = np.concatenate([a[:, :1], a, a[:, -1:]], axis=1)
        return np.concatenate([p[:, :-2], p[:, 1:-1], p[:, 2:]], axis=-1).reshape(-1, 3 * a.shape[-1])

    pca = PCA(64, random_state=seed).fit(context(audio["train"]))
    x = {s: pca.transform(context(audio[s])) for s in ("train", "test")}
    out: dict[str, Any] = {"features": "audio frames t-1, t, t+1 minus the window mean, PCA 64",
                           "target": "region pixels at t minus the window's mean frame"}
    for region in ("mouth", "eyes"):
        y = {s: deviation(v, region).reshape(v.shape[0] * v.shape[1], -1) for s, v in video.items()}
        fit = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(x["train"], y["train"])
        err = ((y["test"] - fit.predict(x["test"])) ** 2).sum()
        out[region] = {"r2": float(1 - err / ((y["test"] - y["test"].mean(axis=0)) ** 2).sum()),
                       "alpha": float(fit.alpha_)}
    return out


def stage1_ceiling(vq_video: Any, clean: np.ndarray, rec: np.ndarray | None = None
                   ) -> dict[str, dict[str, Any]]:
    """What any restorer decoding through the stage-1 VQ-VAE can reach: its reconstruction of the
    clean videos (N, T, 3, H, W; ``rec`` when already made), against holding each sequence's mean
    clean frame for all frames (the lips' motion scale), per region; and how much its
    reconstructions move in the mouth (mean |frame - the sequence's mean frame|) next to the clean
    videos'."""
    if rec is None:
        rec = batched(lambda x: vq_video.reconstruct({"video": seqs(x)}), clean)
    held = np.repeat(clean.mean(axis=1, keepdims=True), clean.shape[1], axis=1)
    out: dict[str, dict[str, Any]] = {r: {"vqvae_clean": region_scores(clean, rec, r),
                                          "sequence_mean_frame": region_scores(clean, held, r)}
                                      for r in ("mouth", "eyes")}
    out["mouth"]["motion"] = {"clean": motion(clean, "mouth"), "vqvae_clean": motion(rec, "mouth")}
    # the scale of what stage 2 models: per-dimension standard deviation of the pre-quantisation
    # encodings within each window and over all frames (both averaged over dimensions)
    with torch.no_grad():
        enc = batched(lambda x: vq_video.encode_frames(seqs(x)), clean)  # (N, T, E)
    out["encodings"] = {"within_window_std": float(enc.std(axis=1).mean()),
                        "across_frames_std": float(enc.reshape(-1, enc.shape[-1]).std(axis=0).mean())}
    return out


def score_stage1(stage1: Path, base: list[str], out: Path, n_test: int) -> int:
    """--stage1-only: the stage-1 ceiling of ``stage1``/stage1_video, written to ``out``."""
    run = stage1 / "stage1_video"
    vq_video = load_run(run).model
    data = load_experiment_data(load_config(CONFIG, base).data, progress=False)
    clean = stacked(data, "video", "test")[: n_test or None]
    ceiling = stage1_ceiling(vq_video, clean)
    print("ceiling", ceiling, flush=True)
    meta = read_json(run / "run.json")
    atomic_write_json(out, {
        "stage1_ceiling": ceiling, "stage1_video": str(run), "test_sequences": len(clean),
        "trained": read_json(run / "train_summary.json"),
        "commands": [c for c in (meta.get("provenance", {}).get("command"),) if c]
        + ["OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/mdvae.py "
           + shlex.join(sys.argv[1:])],
    })
    print(f"wrote {out}")
    return 0


def other_runs(path: Path, tag: str) -> list[dict[str, Any]]:
    """Summaries (tag, denoising, swap, target, runs, commands) of the other settings in ``path``."""
    if not path.is_file():
        return []
    old = read_json(path)
    keep = ("tag", "denoising", "swap", "target", "runs", "commands")
    runs = [r for r in old.get("other_runs", []) if r.get("tag") != tag]
    if old.get("tag", "paper_objective") != tag and "denoising" in old:
        runs.append({k: old.get(k, "paper_objective") if k == "tag" else old.get(k) for k in keep})
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default=str(ROOT.parent / "shared" / "data" / "grid_s1"))
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "mdvae_bench"))
    ap.add_argument("--n-test", type=int, default=0, help="test sequences scored (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.2],
                    help="noise standard deviations; the first is the headline (denoising, target), "
                         "every one is reported under denoising_by_sigma")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--tag", default="config",
                    help="name of this setting; other settings' summaries in --out are kept under other_runs")
    ap.add_argument("--stage1-dir", default=None, help="finished stage-1 runs (stage1_audio, stage1_video) "
                    "for all three models (default: RUNS/mdvae, trained there by its first stage)")
    ap.add_argument("--stage1-only", action="store_true",
                    help="only score the stage-1 video VQ-VAE of --stage1-dir on the clean test windows "
                         "(stage1_ceiling; nothing is trained) and write that to --out")
    ap.add_argument("overrides", nargs="*", help="config overrides a.b=value, for all three models")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = Path(args.grid)
    if not (grid / "video").is_dir():
        raise SystemExit(f"mdvae benchmark: no GRID folder {grid} (--grid; it needs video/ and align/)")
    runs = Path(args.runs_dir)
    base = [f"data.audio={grid}", "train.progress_bar=false", *args.overrides]
    t0 = time.perf_counter()
    stage1 = Path(args.stage1_dir) if args.stage1_dir else runs / "mdvae"
    if args.stage1_only:
        return score_stage1(stage1, base, Path(args.out), args.n_test)
    external = [f"model.stage1_dir={stage1}"] if args.stage1_dir else []
    mdvae, i_md = train_or_load([*base, *external], runs / "mdvae")
    shared = [*base, f"model.stage1_dir={stage1}"]
    vdsae, i_v = train_or_load([*shared, "model.modalities=[video]", "model.display_name=V-DSAE"],
                               runs / "v_dsae")
    adsae, i_a = train_or_load([*shared, "model.modalities=[audio]", "model.display_name=A-DSAE"],
                               runs / "a_dsae")
    vq_video = load_run(stage1 / "stage1_video").model
    train_minutes = round((time.perf_counter() - t0) / 60, 2)

    cfg = load_config(CONFIG, base)
    data = load_experiment_data(cfg.data, progress=False, normalizers=load_run(runs / "mdvae").normalizers)
    audio = {s: stacked(data, "audio", s) for s in ("train", "test")}
    video = {s: stacked(data, "video", s) for s in ("train", "test")}
    if args.n_test:
        audio["test"], video["test"] = audio["test"][: args.n_test], video["test"][: args.n_test]
    n_test = len(video["test"])
    print(f"data: {len(video['train'])} train / {n_test} test sequences; training {train_minutes} min",
          flush=True)

    t1 = time.perf_counter()
    a_test = audio["test"]

    def with_audio(v: np.ndarray) -> np.ndarray:
        return batched(lambda a, x: mdvae.reconstruct({"audio": seqs(a), "video": seqs(x)}), a_test, v)

    # the same MDVAE given the audio of another test sequence (a fixed derangement): how much of
    # its restoration comes from the sequence's own audio
    other = np.random.default_rng(args.seed + 1).permutation(n_test)
    other = np.where(other == np.arange(n_test), (other + 1) % n_test, other)

    def with_other_audio(v: np.ndarray) -> np.ndarray:
        return batched(lambda a, x: mdvae.reconstruct({"audio": seqs(a), "video": seqs(x)}), a_test[other], v)

    restorers = {
        "mdvae": with_audio,
        "mdvae_other_audio": with_other_audio,
        "vqvae": lambda v: batched(lambda x: vq_video.reconstruct({"video": seqs(x)}), v),
        "v_dsae": lambda v: batched(lambda x: vdsae.reconstruct({"video": seqs(x)}), v),
    }
    by_sigma = {}
    for sigma in args.sigmas:
        by_sigma[str(sigma)] = denoising_table(restorers, video["test"], sigma=sigma, seed=args.seed)
        for region, row in by_sigma[str(sigma)].items():
            print(f"sigma {sigma}", region, {k: (round(v["psnr"], 2), round(v["ssim"], 4))
                                             for k, v in row.items()}, flush=True)
    denoising = by_sigma[str(args.sigmas[0])]
    recs = {k: fn(video["test"]) for k, fn in restorers.items() if k != "mdvae_other_audio"}
    clean_rec = clean_reconstructions(recs, video["test"])
    print("clean reconstructions", clean_rec, flush=True)
    audio_motion = audio_explains_motion(audio, video, args.seed)
    print("audio explains motion", audio_motion, flush=True)
    ceiling = stage1_ceiling(vq_video, video["test"], rec=recs["vqvae"])
    print("ceiling", ceiling, flush=True)
    denoise_s = time.perf_counter() - t1

    t2 = time.perf_counter()
    src = {"audio": audio, "video": video}
    lat = {}
    for name, model, mods in (("mdvae", mdvae, ("audio", "video")), ("a_dsae", adsae, ("audio",)),
                              ("v_dsae", vdsae, ("video",))):
        lat[name] = {s: latents_of(model, lambda sl, s=s, mods=mods: {m: seqs(src[m][s][sl]) for m in mods},
                                   len(video[s]))
                     for s in ("train", "test")}
    labels = {"colour": {s: list(data.split("video", s).meta["colour"]) for s in ("train", "test")},
              "centre_word": {s: centre_words(data, s, grid) for s in ("train", "test")}}
    if args.n_test:
        labels = {k: {**v, "test": v["test"][: args.n_test]} for k, v in labels.items()}
    probes: dict[str, Any] = {}
    for label, ys in labels.items():
        for name, by_split in lat.items():
            for latent in by_split["train"]:
                curve = probe_curve(by_split["train"][latent], ys["train"], by_split["test"][latent],
                                    ys["test"], too_few="one_per_class")
                probes.setdefault(label, {})[f"{name}:{latent}"] = curve
                print(f"probe {label} {name}:{latent}: " + ", ".join(
                    f"{r['fraction']:.2f}->{r['mean']:.3f}" for r in curve["rows"]), flush=True)
    probe_s = time.perf_counter() - t2

    t3 = time.perf_counter()
    swap = swaps(mdvae, audio["test"], video["test"], args.seed)
    print("swaps", swap, flush=True)
    swap_s = time.perf_counter() - t3

    mouth = denoising["mouth"]
    gain = {r: {m: denoising[r]["mdvae"][m] - max(denoising[r]["vqvae"][m], denoising[r]["v_dsae"][m])
                for m in ("psnr", "ssim")} for r in ("mouth", "eyes")}
    result = {
        "denoising": denoising,
        "denoising_by_sigma": by_sigma,
        "stage1_ceiling": ceiling,
        "clean_reconstruction": clean_rec,
        "audio_explains_motion": audio_motion,
        "denoising_setup": {"sigma": args.sigmas[0], "frames": "central 6 of 10",
                            "regions": {r: list(REGIONS[r]) for r in ("mouth", "eyes")},
                            "test_sequences": n_test,
                            "metric": "PSNR (dB) and SSIM (scikit-image, data_range 1) on the corrupted "
                                      "region of the corrupted frames, mean over frames and sequences"},
        "target": {
            "mdvae_beats_both_on_mouth": all(mouth["mdvae"][m] > max(mouth["vqvae"][m], mouth["v_dsae"][m])
                                             for m in ("psnr", "ssim")),
            "mouth_gap_larger_than_eyes": all(gain["mouth"][m] > gain["eyes"][m] for m in ("psnr", "ssim")),
            "mdvae_minus_best_baseline": gain,
        },
        "probe": probes,
        "swap": swap,
        "runs": {"mdvae": i_md, "v_dsae": i_v, "a_dsae": i_a},
        "seconds": {"training_or_loading": round(train_minutes * 60, 1), "denoising": round(denoise_s, 1),
                    "probes": round(probe_s, 1), "swaps": round(swap_s, 1)},
        "data": {"grid": str(grid), "train_sequences": len(video["train"]), "test_sequences": n_test},
        "commands": [*dict.fromkeys(i["trained_by"] for i in (i_md, i_v, i_a)
                                    if i["trained_by"] and not i["trained_now"]),
                     "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/mdvae.py "
                     + shlex.join(sys.argv[1:])],
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
    }
    result["target"]["met"] = (result["target"]["mdvae_beats_both_on_mouth"]
                               and result["target"]["mouth_gap_larger_than_eyes"])
    result = {"tag": args.tag, **result, "other_runs": other_runs(Path(args.out), args.tag)}
    atomic_write_json(Path(args.out), result)
    print(f"target met: {result['target']['met']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
