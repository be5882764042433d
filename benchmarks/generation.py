"""Time to generate one 10 x 10 grid on CPU: images, and speech including Griffin-Lim and wavs.

    python benchmarks/generation.py [RUN_DIR] [--repeats 3] [--threads 1]

Without RUN_DIR a randomly initialised PVAE of the default size (hidden 512) on the embedded
sample is timed (generation cost does not depend on training). Prints the numbers and writes
benchmarks/results/generation.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import cpu_model  # noqa: E402

from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.files import atomic_write_json  # noqa: E402
from dispart.generation.audio import features_to_logmel, logmels_to_waveforms, write_wav  # noqa: E402
from dispart.generation.grids import (  # noqa: E402
    content_latent,
    decode_grid,
    infer_latents,
    pick_by_label,
    pick_styles,
    render_grid_png,
    style_latent,
)
from dispart.models import build_model  # noqa: E402
from dispart.runs import Run, load_run  # noqa: E402


def _run(run_dir: str | None) -> tuple[Run | None, object, object]:
    if run_dir:
        run = load_run(run_dir)
        return run, run.model, run.config
    cfg = load_config(ROOT / "dispart" / "demo.yaml")
    from dispart.training.run import model_hparams

    torch.manual_seed(0)
    return None, build_model(model_hparams(cfg)).eval(), cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--gl-iters", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run, model, cfg = _run(args.run_dir)
    data = load_experiment_data(cfg.data, progress=False, normalizer=run.normalizer if run else None)
    norm, fbank = data.normalizers.get("audio"), data.fbank
    te = data.split("audio", "test"), data.split("image", "test")
    sem_i = pick_by_label(te[1].labels, 10)
    sty_i = pick_styles(10, len(te[1].labels), seed=1)
    sem_a = pick_by_label(te[0].labels, 10)
    sty_a = pick_styles(10, len(te[0].labels), te[0].speakers, seed=1)
    times: dict[str, list[float]] = {k: [] for k in (
        "image_decode_s", "image_total_s", "audio_decode_s", "audio_griffin_lim_s", "audio_total_s")}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            sem = infer_latents(model, "image", [te[1].examples[i] for i in sem_i],
                                content_latent(model, "image"))
            sty = infer_latents(model, "image", [te[1].examples[i] for i in sty_i],
                                style_latent(model, "image"))
            grid = decode_grid(model, sem, sty, "image")
            t1 = time.perf_counter()
            render_grid_png(grid, out / "image.png")
            t2 = time.perf_counter()
            times["image_decode_s"].append(t1 - t0)
            times["image_total_s"].append(t2 - t0)

            t0 = time.perf_counter()
            sem = infer_latents(model, "audio", [te[0].examples[i] for i in sem_a],
                                content_latent(model, "audio"))
            sty = infer_latents(model, "audio", [te[0].examples[i] for i in sty_a],
                                style_latent(model, "audio"))
            grid = decode_grid(model, sem, sty, "audio")
            t1 = time.perf_counter()
            logmels = [features_to_logmel(f, norm) for row in grid.cells for f in row]
            waves = logmels_to_waveforms(logmels, fbank, args.gl_iters)
            t2 = time.perf_counter()
            for k, w in enumerate(waves):
                write_wav(out / f"{k}.wav", w, fbank.sample_rate)
            render_grid_png(grid, out / "audio.png", lambda f: features_to_logmel(f, norm))
            t3 = time.perf_counter()
            times["audio_decode_s"].append(t1 - t0)
            times["audio_griffin_lim_s"].append(t2 - t1)
            times["audio_total_s"].append(t3 - t0)
    frames = [int(f.shape[0]) for row in grid.cells for f in row]
    result = {
        "grid": "10x10", "run": args.run_dir or "untrained PVAE (hidden 512), embedded sample",
        "repeats": args.repeats, "torch_threads": args.threads, "griffin_lim_iters": args.gl_iters,
        "median": {k: round(float(np.median(v)), 3) for k, v in times.items()},
        "all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "audio_seconds_generated": round(sum(frames) * fbank.hop_ms / 1000, 2),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": cpu_model()},
    }
    for k, v in result["median"].items():
        print(f"{k:>22}: {v:.3f} s")
    print(f"{'speech generated':>22}: {result['audio_seconds_generated']:.1f} s of audio")
    target = ROOT / "benchmarks" / "results" / "generation.json"
    atomic_write_json(target, result)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
