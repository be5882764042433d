"""Command line: ``dispart train | evaluate | erase | likelihood | table | generate | report | demo |
download | data``.

Every command reports bad input as one line naming the file, field or run folder (exit code 2),
never as a stack trace from inside a model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from dispart.data.locate import find_data
from dispart.errors import ConfigError, DispartError, RunDirError

EPILOG_TRAIN = """\
examples:
  dispart train configs/pvae.yaml --out runs/pvae
  dispart train configs/pvae.yaml --out runs/pvae --data-dir ~/data train.epochs=50
  dispart train configs/pvae.yaml --out runs/pvae-loso data.split=speaker:george
  dispart train configs/pvae.yaml --out runs/pvae --resume

overrides are section.field=value (value parsed as YAML); sections: data, model, train, eval.
  data.audio   folder of wavs (FSDD {digit}_{speaker}_{take}.wav, or AudioMNIST speaker
               sub-folders) or a label,speaker,path CSV; "sample" = the embedded sample
  data.images  MNIST .npz or folder of the official IDX files; "sample" = embedded sample
  data.split   official (FSDD takes 0-4 are test) | speaker:NAME | speakers:A,B
"""


def _overrides(args: argparse.Namespace) -> list[str]:
    items = list(args.overrides or [])
    if getattr(args, "data_dir", None):
        items = [f"{k}={v}" for k, v in find_data(Path(args.data_dir).expanduser()).items()] + items
    bad = [o for o in items if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} must look like section.field=value")
    return items


def cmd_train(args: argparse.Namespace) -> int:
    from dispart.config import load_config
    from dispart.training.run import train

    cfg = load_config(args.config, _overrides(args))
    t0 = time.perf_counter()
    summary = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return 0  # DDP worker processes: rank 0 reports and evaluates
    print(f"trained {cfg.model.display_name} for {summary['epochs']} epochs in "
          f"{time.perf_counter() - t0:.0f} s -> {args.out}")
    if args.evaluate:
        return cmd_evaluate(argparse.Namespace(run_dir=args.out, audio=None, layout="auto",
                                               out=None, no_curves=False))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dispart.evaluation.evaluate import default_stem, evaluate_run
    from dispart.evaluation.table import PurityRow, content_row_keys, rows_to_markdown

    result = evaluate_run(args.run_dir, audio=args.audio, layout=args.layout, out=args.out,
                          curves=not args.no_curves)
    stem = Path(args.out) if args.out else Path(args.run_dir) / default_stem(args.audio)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    print(rows_to_markdown([PurityRow(**r) for r in result["rows"]]))
    if "subsets" in result:
        from dispart.evaluation.subsets import subsets_markdown

        print("\ninference from each subset of modalities (test split):")
        print(subsets_markdown(result["subsets"], result["model"]))
    estimates = result.get("estimated_num_classes", {})
    for key in content_row_keys(result["rows"]):  # rows of content latents (declared role)
        if key in estimates:
            print(f"estimated number of classes from {key}: {estimates[key]}")
    for latent, acc in result.get("speaker_probe_accuracy", {}).items():
        print(f"speaker identity from speech {latent}: {100 * acc:.1f}% (linear probe)")
    out = Path(args.out).with_suffix(".json") if args.out else Path(args.run_dir) / "evaluation.json"
    print(f"wrote {out}")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from dispart.training.erasure import erase_speaker

    record = erase_speaker(args.run_dir, args.out, method=args.method)
    print(f"erased {len(record['speakers'])} speakers from z^s ({record['rank']} directions; the "
          f"speakers' mean z^s {record['speaker_mean_gap_before']:.4g} -> "
          f"{record['speaker_mean_gap_after']:.2g} from the overall mean)")
    print(f"wrote {args.out} (evaluate it with `dispart evaluate {args.out}`)")
    return 0


def cmd_likelihood(args: argparse.Namespace) -> int:
    import torch

    from dispart.batches.pipeline import load_experiment_data
    from dispart.evaluation.likelihood import likelihood_table
    from dispart.evaluation.subsets import test_examples
    from dispart.evaluation.table import write_run_output
    from dispart.runs import load_run

    run = load_run(args.run_dir)
    mods = run.model.modalities
    x1 = args.x1 or ("image" if "image" in mods else mods[0])
    x2 = (args.x2 or None) if args.x2 is not None else (  # --x2 '' : log p(x1) only
        "label" if "label" in mods and x1 != "label" else next((m for m in mods if m != x1), None))
    for name, m in (("--x1", x1), ("--x2", x2),
                    *(("--proposal", p) for p in (args.proposal or "").split(",") if p)):
        if m is not None and m not in mods:
            raise ConfigError(f"{name} {m!r}: the run's model has modalities {list(mods)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_experiment_data(run.config.data, progress=False, normalizers=run.normalizers,
                                speech="audio" in mods)
    batch, _ = test_examples(run.model, data, seed=args.seed, max_items=args.n or None)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} test examples, {time.perf_counter() - t0:.0f} s", end="",
              file=sys.stderr, flush=True)

    result = likelihood_table(run.model, batch, x1, x2, k=args.k, k_given=args.k_given,
                              rows_per_step=args.batch_size, progress=progress,
                              conditional_proposal=args.conditional_proposal,
                              proposal=args.proposal.split(",") if args.proposal else None)
    print(file=sys.stderr)
    result.update({"model": run.display_name, "seconds": round(time.perf_counter() - t0, 1),
                   "threads": torch.get_num_threads(), "seed": args.seed})
    for key in ("log_p_x1", "log_p_x1_x2", "log_p_x1_given_x2"):
        if key in result:
            print(f"{key:20s} {result[key]:10.3f}   var(log w) {result[key + '/log_w_var']:9.3f}"
                  f"   [{result['proposals'][key]}]")
    print(f"{result['n']} test examples, K={args.k}, {result['seconds']} s")
    out = Path(args.out) if args.out else Path(args.run_dir) / "likelihood.json"
    write_run_output(out, result, run)
    print(f"wrote {out}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from dispart.evaluation.table import PurityRow, read_evaluation_of, rows_to_markdown
    from dispart.files import atomic_write

    rows: list[PurityRow] = []
    for run in args.runs:
        rows += [PurityRow(**r) for r in read_evaluation_of(run)["rows"]]
    text = rows_to_markdown(rows, paper=args.paper)
    print(text)
    if args.out:
        atomic_write(args.out, text + "\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dispart.demo import run_demo

    run_demo(Path(args.out), data_dir=Path(args.data_dir) if args.data_dir else None,
             overrides=list(args.overrides or []))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from dispart.data import download

    fn = {"fsdd": download.download_fsdd, "audiomnist": download.download_audiomnist,
          "mnist": download.download_mnist}[args.dataset]
    path = fn(Path(args.dest).expanduser())
    print(json.dumps({"dataset": args.dataset, "path": str(path)}))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from dispart.data.sprites import render_sprites

    m = render_sprites(args.sheets, args.out, seed=args.seed, characters=args.characters,
                       log=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"dataset": "sprites", "out": str(Path(args.out).expanduser()),
                      "rendered": m["rendered"], "seconds": round(m["seconds"], 2),
                      "sequences": m["sequences"], "settings_sha256": m["settings_sha256"]}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispart",
        description="Learn disentangled representations of paired multimodal data (PVAE, "
                    "JMVAE-kl, VAE baselines), evaluate them with the PVAE paper's protocol.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a YAML config into a run folder",
                       epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("config", help="YAML config, e.g. configs/pvae.yaml")
    t.add_argument("--out", required=True, help="run folder to create (or resume)")
    t.add_argument("--data-dir", help="folder holding the data (FSDD / AudioMNIST, MNIST); "
                                      "offline alternative to `dispart download`")
    t.add_argument("--resume", action="store_true",
                   help="continue exactly from the newest usable checkpoint in OUT/checkpoints")
    t.add_argument("--overwrite", action="store_true",
                   help="clear the training outputs of a non-empty --out folder and start over")
    t.add_argument("--evaluate", action="store_true", help="run `dispart evaluate` afterwards")
    t.add_argument("overrides", nargs="*", help="section.field=value overrides")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="Table 1 purity + inertia of a trained run (paper 4.4)")
    e.add_argument("run_dir")
    e.add_argument("--audio", help="evaluate speech on every utterance of this folder or "
                                   "label,speaker,path CSV instead of the run's test split")
    e.add_argument("--layout", default="auto", choices=["auto", "fsdd", "audiomnist", "csv"])
    e.add_argument("--out", help="output path stem (default RUN_DIR/evaluation, or with --audio "
                                 "RUN_DIR/evaluation_audio_<name>: the run's own evaluation is kept)")
    e.add_argument("--no-curves", action="store_true", help="skip the k = 1..k_max inertia curves")
    e.set_defaults(func=cmd_evaluate)

    er = sub.add_parser("erase", help="PVAE: a copy of a run with its training speakers linearly "
                                      "erased from z^s (no linear probe reads them there)")
    er.add_argument("run_dir")
    er.add_argument("--out", required=True, help="the new run folder (must not exist)")
    er.add_argument("--method", default="leace", choices=["leace", "orth"],
                    help="leace (default: moves z^s least) or orth (orthogonal projection)")
    er.set_defaults(func=cmd_erase)

    lk = sub.add_parser("likelihood", help="importance-weighted test log-likelihoods (MVAE Tables "
                                           "2-3): log p(x1), log p(x1, x2), log p(x1 | x2)")
    lk.add_argument("run_dir")
    lk.add_argument("--x1", help="the modality x1 (default image)")
    lk.add_argument("--x2", help="the modality x2 (default label, else the other modality); "
                                 "'' for log p(x1) only")
    lk.add_argument("--k", type=int, default=1000, help="importance samples (default 1000)")
    lk.add_argument("--k-given", type=int, default=5000,
                    help="prior samples for log p(x2) in the conditional (default 5000)")
    lk.add_argument("--n", type=int, default=0, help="use a seeded subset of n test examples "
                                                     "(default 0: all)")
    lk.add_argument("--batch-size", type=int, default=100, help="test examples per step")
    lk.add_argument("--conditional-proposal", choices=["x1", "x2"], default="x1",
                    help="encoder for the joint term of log p(x1 | x2): q(z|x1) (default, MVAE "
                         "Table 2) or q(z|x2) (MVAE section 5 text)")
    lk.add_argument("--proposal", help="encoder for log p(x1) and log p(x1, x2), comma-separated "
                                       "modalities (default x1; e.g. image,label: the joint one)")
    lk.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    lk.add_argument("--seed", type=int, default=0)
    lk.add_argument("--out", help="output JSON (default RUN_DIR/likelihood.json)")
    lk.set_defaults(func=cmd_likelihood)

    tb = sub.add_parser("table", help="combine evaluated runs into one Table 1 (Markdown)")
    tb.add_argument("runs", nargs="+", help="run folders or evaluation.json files")
    tb.add_argument("--paper", default="TIDIGIT-MNIST",
                    help="paper columns to show next to ours (TIDIGIT-MNIST, SecuVoice-MNIST)")
    tb.add_argument("--out", help="also write the table to this file")
    tb.set_defaults(func=cmd_table)

    d = sub.add_parser("demo", help="the main job: train PVAE on the embedded sample (or "
                                    "--data-dir), evaluate, generate, write the HTML report")
    d.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    d.add_argument("--data-dir", help="use the full data in this folder instead of the sample")
    d.add_argument("overrides", nargs="*", help="section.field=value overrides")
    d.set_defaults(func=cmd_demo)

    from dispart.generation.cli import add_generate_parser
    from dispart.report.cli import add_report_parser

    add_generate_parser(sub)
    add_report_parser(sub)

    dl = sub.add_parser("download", help="download a data set (needs internet; checksummed)")
    dl.add_argument("dataset", choices=["fsdd", "audiomnist", "mnist"])
    dl.add_argument("--dest", default="data", help="destination folder (default ./data)")
    dl.set_defaults(func=cmd_download)

    da = sub.add_parser("data", help="make a data set from source assets (cached)")
    dsub = da.add_subparsers(dest="data_command", required=True)
    sp = dsub.add_parser("sprites", help="render the DSAE paper's Sprites videos (1,296 characters x 9 "
                                         "action-directions x 8 frames of 64x64) from the LPC sheets")
    sp.add_argument("--sheets", required=True,
                    help="folder of LPC sheets: body/, bottomwear/, topwear/, hair/, shoes/ (the "
                         "YingzhenLi/Sprites layout)")
    sp.add_argument("--out", required=True, help="output folder: train.npz, test.npz, manifest.json")
    sp.add_argument("--seed", type=int, default=423,
                    help="train/test permutation seed (default 423: the authors' split)")
    sp.add_argument("--characters", type=int, default=1296,
                    help="render only this many characters, same split membership (default 1296)")
    sp.set_defaults(func=cmd_data)
    return p


SEED_RANGE = (0, 2**32 - 1)
# Ranges of the numeric flags, {command: {dest: (min, max or None)}}, checked before any work.
FLAG_RANGES: dict[str, dict[str, tuple[int, int | None]]] = {
    "likelihood": {"k": (1, None), "k_given": (1, None), "n": (0, None), "batch_size": (1, None),
                   "threads": (0, None), "seed": SEED_RANGE},
    "generate": {"cols": (1, None), "rows": (1, None), "seed": SEED_RANGE,
                 "griffin_lim_iters": (1, None)},
    "report": {"rows": (1, None), "seed": SEED_RANGE},
    "data": {"seed": SEED_RANGE, "characters": (2, 1296)},
}
RUN_DIR_COMMANDS = ("evaluate", "erase", "likelihood", "generate", "report")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_args(args: argparse.Namespace) -> None:
    """Validate flags, the run folder and the config (with overrides) before any heavy import.

    Raises one-line ConfigError / RunDirError; argparse has already checked types and choices.
    """
    for dest, (low, high) in FLAG_RANGES.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value is not None and (value < low or (high is not None and value > high)):
            expected = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ConfigError(f"{_flag(dest)} must be {expected}, got {value}")
    if args.command in RUN_DIR_COMMANDS and not Path(args.run_dir).is_dir():
        raise RunDirError(f"run folder not found: {args.run_dir}")
    if args.command in ("train", "demo"):
        from dispart.config import load_config

        config = args.config if args.command == "train" else Path(__file__).parent / "demo.yaml"
        load_config(config, _overrides(args))


def one_line(e: BaseException) -> str:
    """An error message on one line (line breaks inside paths or values are escaped)."""
    return str(e).replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command; bad input exits with code 2 and one line (argparse: usage + one line)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`train CONFIG --out R a.b=1`); argparse leaves those over.
    # A left-over without '=' is a malformed override (named by check_args), not an unknown option.
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    try:
        check_args(args)
        return args.func(args)
    except DispartError as e:
        print(f"dispart {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. an --out that cannot be written: the OS names the file
        print(f"dispart {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
