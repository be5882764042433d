"""DSAE Figure 8: missing-frame prediction error of DSAE, LSTM-f and LSTM-c on bouncing balls.

    python benchmarks/dsae_ball.py [--max-seconds 600] [--steps 20000] [--hidden 512] ...

Generates (or reads from the cache) the paper's bouncing-ball set (5,000 sequences of 30 binary
32x32 frames, 1,000 test; dispart/data/ball.py) and trains, each with Adam for ``--steps`` steps
or ``--max-seconds``, whichever comes first, on the same batch size and learning rate:

- LSTM-f and LSTM-c (dispart/models/predictors.py; paper sizes by default: dim z 64, LSTM 512);
- DSAE (the registered "dsae" model built from ``--dsae-config``, configs/dsae_ball.yaml: z_t 16
  as in the paper, Bernoulli pixels, small conv frame nets; ``--dsae-set model.q=full`` etc.),
  trained on its ELBO over whole sequences; it predicts by inferring f and z_1:t from the
  observed frames and rolling its LSTM prior forward from them, decoding with f
  (dispart/evaluation/dsae_prediction.py): the "dsae" curve uses posterior means and the prior's
  mean at each step; ``--dsae-samples N`` adds "dsae_sample" (N draws of q and of the prior,
  probabilities averaged).

then scores the paper's protocol on the test split: observe the first 30 - k frames, predict the
last k, fraction of wrong pixels (dispart/evaluation/prediction.py). Two references are scored
too: all pixels off ("blank") and the last observed frame repeated ("last_frame"). Writes
benchmarks/results/dsae_ball.json with the command that made it.

Models can be trained in separate processes (one core each) and their files merged:

    python benchmarks/dsae_ball.py --models lstm_f --out A.json ...   # (and lstm_c, dsae)
    python benchmarks/dsae_ball.py --combine benchmarks/results/dsae_ball.json A.json B.json

``--combine`` copies (it does not measure): later files replace the curves and training records
of the models they trained; every model keeps the settings and command of the run that trained it
(``ball.by_model``); the files must score the same data and test sequences.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import cpu_model  # noqa: E402

from dispart.batches.ball import BALL_MODALITY  # noqa: E402
from dispart.batches.batch import Sequences  # noqa: E402
from dispart.batches.modality import ModalitySpec  # noqa: E402
from dispart.config import load_config, model_params  # noqa: E402
from dispart.data.ball import BallConfig, ensure_ball_dataset  # noqa: E402
from dispart.evaluation.dsae_prediction import dsae_predictor  # noqa: E402
from dispart.evaluation.prediction import (  # noqa: E402
    blank_predictor,
    last_frame_predictor,
    prediction_error,
)
from dispart.features.cache import default_cache_dir  # noqa: E402
from dispart.files import atomic_write_json  # noqa: E402
from dispart.models import DSAE, build_model  # noqa: E402
from dispart.models.predictors import DeterministicDynamicsVAE  # noqa: E402

MISSING = (1, 2, 4, 6, 8, 10, 15, 20, 25, 29)
MODELS = ("lstm_f", "lstm_c", "dsae")
DSAE_CONFIG = ROOT / "configs" / "dsae_ball.yaml"


def build_dsae(config: str | Path, overrides: list[str], frame_shape: tuple[int, int, int]) -> DSAE:
    """The DSAE of a config file's model section (``a.b=value`` overrides checked as ``dispart
    train`` checks them) over a "video" modality of binary frames with a Bernoulli likelihood."""
    cfg = load_config(config, overrides)
    if cfg.model.name != "dsae":
        raise SystemExit(f"--dsae-config {config}: model.name must be 'dsae', got {cfg.model.name!r}")
    spec = ModalitySpec(BALL_MODALITY, "frames", frame_shape, likelihood="bernoulli")
    hparams = {"name": "dsae", "modalities": [spec.to_dict()], **dataclasses.asdict(model_params(cfg.model))}
    model = build_model(hparams)
    assert isinstance(model, DSAE)
    return model


def dsae_loss(model: DSAE, frames: np.ndarray, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """-ELBO (batch mean, nats per sequence) of whole sequences; terms as the baselines log them."""
    x = torch.from_numpy(frames[idx.numpy()]).float()[:, :, None]
    out = model.loss({BALL_MODALITY: Sequences(x, torch.full((len(x),), x.shape[1]))})
    t = out.terms
    return out.loss, {"loss": float(out.loss.detach()), "rec": float(t[f"rec_{BALL_MODALITY}"].detach()),
                      "kl_z": float(t["kl_z"].detach()), "kl_f": float(t["kl_f"].detach())}


def curriculum_length(step: int, t_total: int, steps: int, start: int = 5) -> int:
    """Frames per training sequence at ``step`` (0-based): ``start`` at step 0, rising linearly to
    ``t_total`` at step ``steps`` and staying there (``steps`` 0: always ``t_total``)."""
    if steps <= 0 or start >= t_total:
        return t_total
    return min(t_total, start + (t_total - start) * step // steps)


def train(model: DeterministicDynamicsVAE | DSAE, frames: np.ndarray, args: argparse.Namespace) -> dict:
    """Adam on random batches. LSTM-f/-c: each row's encoder sees all frames, or with probability
    ``args.prefix_fraction`` a random prefix of 1 .. T frames (the decoder always rebuilds all T),
    the KL terms weighted up from 0 over the first ``args.kl_warmup`` steps (if > 0); with
    ``args.length_curriculum`` > 0, T itself grows from 5 frames (the first frames of each
    sequence) to all 30 over that many steps (:func:`curriculum_length`);
    DSAE: its ELBO on whole sequences (q(z_s | .) is per frame, so a prefix is inferred alike)."""
    name = model.dynamics if isinstance(model, DeterministicDynamicsVAE) else f"dsae ({model.q} q)"
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    n, t_total = frames.shape[:2]
    start, losses, step = time.perf_counter(), [], 0
    model.train()
    while step < args.steps and time.perf_counter() - start < args.max_seconds:
        idx = torch.randint(0, n, (args.batch_size,), generator=gen)
        if isinstance(model, DSAE):
            t_now = t_total
            loss, terms = dsae_loss(model, frames, idx)
        else:
            t_now = curriculum_length(step, t_total, args.length_curriculum)
            x = torch.from_numpy(frames[idx.numpy(), :t_now]).float()[:, :, None]
            observed = torch.full((args.batch_size,), t_now)
            cut = torch.rand(args.batch_size, generator=gen) < args.prefix_fraction
            observed[cut] = torch.randint(1, t_now + 1, (int(cut.sum()),), generator=gen)
            warm = min(1.0, (step + 1) / args.kl_warmup) if args.kl_warmup > 0 else 1.0
            loss, terms = model.loss(x, observed, kl_weight=warm)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(terms["loss"]))
        step += 1
        if step % args.log_every == 0:
            print(f"  {name} step {step}: -ELBO {np.mean(losses[-args.log_every:]):.1f} "
                  f"(rec {float(terms['rec']):.1f}, kl_z {float(terms['kl_z']):.2f}, "
                  f"kl_f {float(terms['kl_f']):.2f}), T {t_now}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    model.eval()
    seconds = time.perf_counter() - start
    return {"steps": step, "seconds": round(seconds, 1), "steps_per_second": round(step / seconds, 3),
            "neg_elbo_first_50": round(float(np.mean(losses[:50])), 1),
            "neg_elbo_last_50": round(float(np.mean(losses[-50:])), 1),
            **({"length_curriculum_steps": args.length_curriculum}
               if args.length_curriculum and not isinstance(model, DSAE) else {})}


def combine(parts: list[dict], command: str) -> dict:
    """One results dict from several of this script's results (later parts win per model).

    The scored data, test sequences, metric and k's must agree, and so must the deterministic
    references ("blank", "last_frame"); raises ValueError naming the first part that differs."""
    if not parts:
        raise ValueError("combine: no results given")
    first = parts[0]["ball"]
    same = ("metric", "missing")
    data_keys = [k for k in first["data"] if k != "generate_or_read_seconds"]
    refs = {r: first["curves"][r] for r in first["references"]}
    out = {k: first[k] for k in same} | {"curves": {}, "references": list(refs), "training": {},
                                         "by_model": {}, "data": dict(first["data"])}
    commands: list[str] = []
    for i, part in enumerate(parts):
        ball = part["ball"]
        for k in same:
            if ball[k] != first[k]:
                raise ValueError(f"combine: part {i} has {k}={ball[k]!r}, part 0 {first[k]!r}")
        for k in data_keys:
            if ball["data"].get(k) != first["data"][k]:
                raise ValueError(f"combine: part {i} scored data.{k}={ball['data'].get(k)!r}, "
                                 f"part 0 {first['data'][k]!r}")
        for ref, curve in refs.items():
            if ball["curves"][ref] != curve:
                raise ValueError(f"combine: part {i}'s reference {ref!r} differs from part 0's "
                                 "(not the same test sequences?)")
        by_model = ball.get("by_model") or {
            m: {"settings": ball["settings"], "command": part["commands"][0]}
            for m in ball["settings"]["models"].split(",") if m}
        for name, source in by_model.items():
            out["training"][name] = ball["training"][name]
            out["by_model"][name] = source
            for curve in [c for c in ball["curves"] if c == name or c.startswith(name + "_")]:
                out["curves"][curve] = ball["curves"][curve]
            if name == "dsae":
                out["dsae_model"] = ball["dsae_model"]
                out["dsae_rollout"] = ball["dsae_rollout"]
        commands += [c for c in part["commands"] if c not in commands]
    out["curves"].update(refs)
    return {"ball": out, "commands": commands + [command], "machine": parts[-1]["machine"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--max-seconds", type=float, default=600.0, help="training time per model")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--z-dim", type=int, default=64)
    ap.add_argument("--f-dim", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--frame-hidden", type=int, default=256)
    ap.add_argument("--prefix-fraction", type=float, default=0.5)
    ap.add_argument("--kl-warmup", type=int, default=0,
                    help="LSTM-f/-c: KL weight rises linearly from 0 to 1 over this many steps (0: none)")
    ap.add_argument("--length-curriculum", type=int, default=0,
                    help="LSTM-f/-c: train on the first 5 frames, growing to all 30 over this many "
                         "steps (0: all 30 from the start). On all 30 at once they were still on "
                         "the blank plateau after 1,000 steps; on 5 they leave it in ~300")
    ap.add_argument("--eval-n", type=int, default=1000, help="test sequences scored (first N)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    ap.add_argument("--dsae-config", default=str(DSAE_CONFIG), help="a dsae config (its model section)")
    ap.add_argument("--dsae-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override in the DSAE config, e.g. model.q=full (repeatable)")
    ap.add_argument("--dsae-samples", type=int, default=0,
                    help="> 0: also score the sampled rollout averaged over this many draws")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--cache-dir", default=None, help="default: the feature cache folder /ball")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dsae_ball.json"))
    ap.add_argument("--combine", nargs="+", metavar="JSON",
                    help="merge these results files of this script into --out (no training)")
    args = ap.parse_args()
    if args.combine:
        parts = []
        for path in args.combine:
            try:
                parts.append(json.loads(Path(path).read_text()))
            except (OSError, json.JSONDecodeError) as exc:
                raise SystemExit(f"--combine: cannot read {path}: {exc}") from exc
            if "ball" not in parts[-1]:
                raise SystemExit(f"--combine: {path} is not a dsae_ball.py result (no 'ball' key)")
        try:
            result = combine(parts, "python benchmarks/dsae_ball.py " + shlex.join(sys.argv[1:]))
        except (KeyError, ValueError) as exc:
            raise SystemExit(f"--combine: {exc}") from exc
        atomic_write_json(args.out, result)
        print(f"wrote {args.out} from {len(parts)} files: curves {sorted(result['ball']['curves'])}")
        return 0
    models = [m for m in args.models.split(",") if m]
    if not models or any(m not in MODELS for m in models):
        ap.error(f"--models: choose from {MODELS}, got {args.models!r}")
    if args.dsae_samples < 0:
        ap.error(f"--dsae-samples must be >= 0, got {args.dsae_samples}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = BallConfig()
    t0 = time.perf_counter()
    folder = Path(args.cache_dir) if args.cache_dir else default_cache_dir() / "ball"
    data, path = ensure_ball_dataset(folder, cfg)
    data_seconds = time.perf_counter() - t0
    train_frames, test_frames = data.frames[data.split("train")], data.frames[data.split("test")]
    test = torch.from_numpy(test_frames[: args.eval_n]).float()[:, :, None]
    print(f"ball data: {len(train_frames)} train, {len(test_frames)} test sequences ({path}, "
          f"{data_seconds:.1f} s); scoring {len(test)}")

    curves: dict[str, dict[str, float]] = {}
    training: dict[str, dict] = {}
    dsae_hparams: dict | None = None
    for name in models:
        torch.manual_seed(args.seed)
        if name == "dsae":
            model: DeterministicDynamicsVAE | DSAE = build_dsae(args.dsae_config, args.dsae_set,
                                                                (1, cfg.size, cfg.size))
            dsae_hparams = {k: v for k, v in model.hparams().items() if k != "modalities"}
        else:
            model = DeterministicDynamicsVAE(name, (1, cfg.size, cfg.size), z_dim=args.z_dim,
                                             f_dim=args.f_dim, hidden=args.hidden,
                                             frame_hidden=args.frame_hidden)
        training[name] = train(model, train_frames, args)
        predictors = {name: model.predict} if isinstance(model, DeterministicDynamicsVAE) else {
            "dsae": dsae_predictor(model, "mean")}
        if isinstance(model, DSAE) and args.dsae_samples:
            predictors["dsae_sample"] = dsae_predictor(model, "sample", args.dsae_samples,
                                                       torch.Generator().manual_seed(args.seed))
        for curve_name, predictor in predictors.items():
            t1 = time.perf_counter()
            curve = prediction_error(predictor, test, MISSING)
            training[name][f"eval_seconds_{curve_name}"] = round(time.perf_counter() - t1, 1)
            curves[curve_name] = {str(k): round(v, 5) for k, v in curve.items()}
            print(f"{curve_name}: {training[name]}\n  error by k missing: {curves[curve_name]}", flush=True)
    for name, fn in (("blank", blank_predictor), ("last_frame", last_frame_predictor)):
        curves[name] = {str(k): round(v, 5) for k, v in prediction_error(fn, test, MISSING).items()}
        print(f"{name}: {curves[name]}")

    rollouts = {"dsae": "posterior means of f and z_1:t (observed frames only), then the mean of "
                        "p(z_s | z_<s) at each missing step fed back into the LSTM prior; frames decoded "
                        "with f",
                "dsae_sample": f"{args.dsae_samples} draws of f, z_1:t from q and of the missing z_s "
                               "from the prior; pixel probabilities averaged"}
    result = {
        "ball": {
            "metric": "fraction of wrong pixels (prediction > 0.5 vs binary truth) over the k missing "
                      "frames; the first 30 - k frames observed (DSAE Figure 8 protocol)",
            "missing": list(MISSING),
            "curves": curves,
            "references": ["blank", "last_frame"],
            "dsae_rollout": {k: v for k, v in rollouts.items() if k in curves},
            "dsae_model": dsae_hparams,
            "training": training,
            "data": {"sequences": cfg.n, "test": cfg.n_test, "scored": len(test), "T": cfg.T,
                     "size": cfg.size, "radius": cfg.radius, "speed": list(cfg.speed), "seed": cfg.seed,
                     "physics": "own exact event-driven reflection off a convex heptagon (no Pymunk)",
                     "generate_or_read_seconds": round(data_seconds, 2)},
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "cache_dir")},
        },
        "commands": ["OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/dsae_ball.py "
                     + shlex.join(sys.argv[1:])],
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": cpu_model(), "threads": args.threads},
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
