"""DSAE Table 1 on Sprites: judges, a (budgeted) DSAE run, disagreement and KL.

    OMP_NUM_THREADS=1 python benchmarks/dsae_sprites.py [--max-minutes 12] [--epochs 100]
        [--run RUN_DIR] [--out-run runs/dsae_sprites_bench] [model.hidden=128 ...]

1. Renders the Sprites videos from the LPC sheets (``--sheets``; cached, reused when the sheets
   and settings are unchanged) into ``--data`` (default: the feature cache's ``sprites``).
2. Judges (dispart/evaluation/sprites.py) trained on the real training videos, kept in the cache
   folder ``sprite_judges`` keyed by the data; their test accuracy is reported.
3. Trains DSAE from ``--config`` (configs/dsae_sprites.yaml) with the overrides given (``a.b=v``)
   for ``--epochs`` or ``--max-minutes`` (Lightning's max_time), whichever ends first, into
   ``--out-run``; or evaluates an existing run folder (``--run``).
4. Table 1 on the first ``--eval-n`` test videos (all 2,664 by default): fix f / draw z_1:T
   (attribute disagreement and KL-recon), fix z_1:T / draw f (action disagreement and KL); and,
   not the paper's, the same judged with the other latent taken from another test video instead
   of the prior (``attribute_disagreement_swap_z``, ``action_disagreement_swap_f``) and plain
   reconstructions (``reconstruction_disagreement``).
Writes ``--out`` (benchmarks/results/dsae_sprites.json): the new run becomes its headline and the
runs scored before are kept under ``other_runs``. A run that did not do better is scored into a
file of its own (``--out``) and added with ``--merge FILE ...`` to ``other_runs``, the headline
kept (measuring nothing).
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

from dispart.batches.sprites import sprites_sets  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.data.sprites import render_sprites  # noqa: E402
from dispart.evaluation.sprites import (  # noqa: E402
    JudgeSettings,
    ensure_judge,
    sprite_labels,
    sprite_videos,
    table1,
)
from dispart.features.cache import default_cache_dir  # noqa: E402
from dispart.files import atomic_write_json, read_json  # noqa: E402
from dispart.runs import load_run  # noqa: E402

PAPER = {  # Li & Mandt 2018, Table 1 (factorised q): disagreement, KL-recon, KL-random
    "skin colour (body)": [0.0398, 0.7847, 8.8859], "pants (bottom)": [0.0182, 0.3565, 8.9293],
    "tops (top)": [0.0034, 0.0647, 8.9173], "hairstyle (hair)": [0.0006, 0.0126, 8.9566],
    "action (fix z)": [0.0811, 0.9027, 13.7510],
}


def _max_time(minutes: float) -> str:
    s = int(round(minutes * 60))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


OTHER_RUN_KEYS = ("attribute_disagreement_fix_f", "action_disagreement_fix_z", "attribute_kl_fix_f",
                  "reconstruction_disagreement", "attribute_disagreement_swap_z",
                  "action_disagreement_swap_f", "q", "train_minutes", "training", "model",
                  "weights_sha256", "commands")  # what other_runs keeps of a run


def earlier_runs(path: Path, new: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline numbers of the runs already in ``path`` (other weights than ``new``'s), kept
    beside the new result so that a better run does not erase what was tried before."""
    if not path.is_file():
        return []
    old = read_json(path)
    runs = [r for r in old.get("other_runs", []) if r.get("weights_sha256") != new["weights_sha256"]]
    if old.get("weights_sha256") != new["weights_sha256"] and "attribute_disagreement_fix_f" in old:
        runs.append({k: old.get(k) for k in OTHER_RUN_KEYS})
    return runs


def with_other_run(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` (a results file) with ``new``'s headline numbers added to (or replaced in, for the
    same weights) its ``other_runs``; its own headline unchanged."""
    runs = [r for r in old.get("other_runs", []) if r.get("weights_sha256") != new["weights_sha256"]]
    return {**old, "other_runs": [*runs, {k: new.get(k) for k in OTHER_RUN_KEYS}]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="config overrides a.b=value (e.g. model.hidden=128)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "dsae_sprites.yaml"))
    ap.add_argument("--sheets", default=str(ROOT.parent / "shared" / "data" / "sprites_lpc"))
    ap.add_argument("--data", default=None, help="rendered folder (default: CACHE/sprites)")
    ap.add_argument("--run", default=None, help="evaluate this finished run folder instead of training")
    ap.add_argument("--out-run", default=str(ROOT / "runs" / "dsae_sprites_bench"))
    ap.add_argument("--max-minutes", type=float, default=12.0, help="DSAE training wall-time budget")
    ap.add_argument("--epochs", type=int, default=None, help="default: the config's")
    ap.add_argument("--judge-steps", type=int, default=JudgeSettings.steps)
    ap.add_argument("--judge-max-minutes", type=float, default=10.0)
    ap.add_argument("--eval-n", type=int, default=0, help="test videos scored (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dsae_sprites.json"))
    ap.add_argument("--merge", nargs="+", default=None, metavar="FILE",
                    help="add these scored results files to --out's other_runs and stop")
    args = ap.parse_args()
    if args.merge:
        result = read_json(args.out)
        for f in args.merge:
            result = with_other_run(result, read_json(f))
        atomic_write_json(args.out, result)
        print(f"added {len(args.merge)} runs to the other_runs of {args.out}")
        return 0
    torch.set_num_threads(args.threads)
    cache = default_cache_dir()
    data_dir = Path(args.data) if args.data else cache / "sprites"

    t0 = time.perf_counter()
    manifest = render_sprites(args.sheets, data_dir, log=print)
    print(f"sprites: {'rendered' if manifest['rendered'] else 'reused'} {data_dir} "
          f"({manifest['seconds']:.1f} s)", flush=True)
    sets = sprites_sets(data_dir)
    train_set, test_set = sets["train"], sets["test"]
    data_seconds = time.perf_counter() - t0

    settings = JudgeSettings(steps=args.judge_steps, seed=args.seed, max_seconds=args.judge_max_minutes * 60)
    t1 = time.perf_counter()
    judge, reused = ensure_judge(train_set, test_set, cache / "sprite_judges", settings,
                                 log=lambda m: print(m, flush=True))
    print(f"judge ({'reused' if reused else 'trained'}, {time.perf_counter() - t1:.0f} s): test accuracy "
          f"{judge.meta.get('test_accuracy')}", flush=True)

    train_minutes = None
    if args.run:
        run_dir = Path(args.run)
    else:
        run_dir = Path(args.out_run)
        from dispart.training.run import train

        overrides = [f"data.images={data_dir}", f"train.seed={args.seed}", "train.progress_bar=false",
                     f"train.max_time={_max_time(args.max_minutes)}", *args.overrides]
        if args.epochs is not None:
            overrides.append(f"train.epochs={args.epochs}")
        cfg = load_config(args.config, overrides)
        t2 = time.perf_counter()
        summary = train(cfg, run_dir, overwrite=True)
        train_minutes = round((time.perf_counter() - t2) / 60, 2)
        print(f"DSAE trained {train_minutes} min: {summary['epochs']} epochs, {summary['global_step']} steps",
              flush=True)
    run = load_run(run_dir)
    model = run.model
    videos = np.asarray(sprite_videos(test_set))
    labels = sprite_labels(test_set)
    if args.eval_n:
        videos, labels = videos[:args.eval_n], {h: v[:args.eval_n] for h, v in labels.items()}
    t3 = time.perf_counter()
    scores = table1(model, judge, videos, seed=args.seed, labels=labels)
    eval_seconds = time.perf_counter() - t3
    print(f"Table 1 ({scores['n']} test videos, {eval_seconds:.0f} s): {scores}", flush=True)

    summary_file = run_dir / "train_summary.json"
    # --run: the command that trained the run folder (its provenance), so the result says how it was made
    trained_by = (read_json(run_dir / "run.json").get("provenance", {}).get("command") if args.run else None)
    result = {
        "attribute_disagreement_fix_f": scores["attribute_disagreement_fix_f"],
        "attribute_kl_fix_f": scores["attribute_kl_fix_f"],
        "attribute_kl_random": scores["attribute_kl_random"],
        "action_disagreement_fix_z": scores["action_disagreement_fix_z"],
        "action_kl_fix_z": scores["action_kl_fix_z"],
        "action_kl_random": scores["action_kl_random"],
        "reconstruction_disagreement": scores["reconstruction_disagreement"],
        "attribute_disagreement_swap_z": scores["attribute_disagreement_swap_z"],
        "action_disagreement_swap_f": scores["action_disagreement_swap_f"],
        "judge_accuracy": judge.meta.get("test_accuracy"),
        "judge_accuracy_on_scored_sources": scores.get("judge_accuracy_on_sources"),
        "attribute_label_error_fix_f": scores.get("attribute_label_error_fix_f"),
        "action_label_error_fix_z": scores.get("action_label_error_fix_z"),
        "q": model.q,
        "train_minutes": train_minutes,
        "training": read_json(summary_file) if summary_file.is_file() else None,
        "model": model.hparams(),
        "run": str(run_dir),
        "weights_sha256": run.weights_sha256,
        "scored_test_videos": scores["n"],
        "eval_seconds": round(eval_seconds, 1),
        "judge": {"reused": reused, **{k: v for k, v in judge.meta.items() if k != "test_accuracy"}},
        "data": {"folder": str(data_dir), "settings_sha256": manifest["settings_sha256"],
                 "sequences": manifest["sequences"], "render_or_read_seconds": round(data_seconds, 1)},
        "paper_table1": {"columns": ["disagreement", "KL-recon", "KL-random"], "rows": PAPER},
        "protocol": "fix f: f = mean of q(f|x) of each test video, z_1:T ~ LSTM prior; fix z: z_1:T = mean "
                    "of q(z|x), f ~ N(0, I); one draw per test video; disagreement = argmax of the judge "
                    "on the generated video != argmax on the source; KL = mean KL[p_gen || p_source] (nats)",
        "commands": [*([trained_by] if trained_by else []),
                     "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/dsae_sprites.py "
                     + shlex.join(sys.argv[1:])],
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": cpu_model(), "threads": args.threads},
    }
    result["other_runs"] = earlier_runs(Path(args.out), result)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
