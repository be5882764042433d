"""``dispart generate RUN_DIR``: the command line of :mod:`dispart.generation.outputs`.

Parsing only; the library (torch, the data pipeline) is imported when the command runs, so
``dispart --help`` and one-line errors stay fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dispart.errors import ConfigError
from dispart.generation import KINDS

__all__ = ["add_generate_parser", "cmd_generate"]

EPILOG = """\
kinds (default: every kind the run's model supports):
  style   within-modality style transfer (paper Figs. 4, 16-18), one grid per modality
  cross   speech -> image with a reference writing style, image -> speech with a reference
          speaker (Figs. 5, 19-22)
  prior   fixed z^s with style from the prior, and z^s from the prior with fixed style
  fig2    JMVAE-kl only: z from one modality decoded into both (Fig. 2)
  swap    sequence models (DSAE): f of the row's sequence with z_1:T of the column's
          (voice conversion for speech, a character doing another's motion for video)
  fix_f   f inferred (rows), z_1:T drawn from the learned prior p(z_t | z_<t) (columns)
  fix_z   f drawn from the prior N(0, I) (rows), z_1:T inferred (columns)
  transfer  audio-visual models (MDVAE): --rows pairs of test sequences, the target decoded with
          z_av, with z_v and with both taken from the source (w stays the target's)
grids: top row = sources of z^s (one digit per column), left column = sources of the style;
DSAE: top row = sources of z_1:T, left column = sources of f; MDVAE: one picture per pair, rows
source, target, reconstruction and the transfers, columns the frames. Video cells are written as
animated GIFs and frame strips, speech cells as Griffin-Lim wavs and spectrograms.
"""


def cmd_generate(args: argparse.Namespace) -> int:
    from dispart.generation.outputs import generate_run

    kinds = tuple(dict.fromkeys(args.kind)) if args.kind else KINDS
    if args.griffin_lim_iters < 1:
        raise ConfigError(f"--griffin-lim-iters must be >= 1, got {args.griffin_lim_iters}")
    manifest = generate_run(args.run_dir, args.out, kinds=kinds, cols=args.cols, rows=args.rows,
                            seed=args.seed, split=args.split, audio=not args.no_audio,
                            n_iter=args.griffin_lim_iters)
    out = Path(args.out) if args.out else Path(args.run_dir) / "generated"
    for g in manifest["grids"]:
        n_wav, n_gif = len(g["audio"]), len(g.get("animations", []))
        print(f"{g['name']}: {g['shape'][0]}x{g['shape'][1]} -> {out / g['png']}"
              + (f" (+{n_wav} wavs)" if n_wav else "") + (f" (+{n_gif} GIFs)" if n_gif else ""))
    print(f"wrote {out / 'manifest.json'} in {manifest['seconds']:.1f} s")
    return 0


def add_generate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``generate`` to the dispart sub-commands (func(args) -> exit code)."""
    g = subparsers.add_parser(
        "generate", help="style transfer, cross-modal generation (images and wavs) from a run",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("run_dir", help="a trained run folder")
    g.add_argument("--out", help="output folder (default RUN_DIR/generated)")
    g.add_argument("--kind", action="append", choices=KINDS,
                   help="grid kind; repeat for several (default: all the model supports)")
    g.add_argument("--cols", type=int, default=10, help="semantic sources (columns), default 10")
    g.add_argument("--rows", type=int, default=5,
                   help="style sources (rows), default 5; MDVAE: transfer pairs")
    g.add_argument("--seed", type=int, default=0, help="seed of source picks and prior draws")
    g.add_argument("--split", choices=["test", "train"], default="test",
                   help="split the sources come from (default test)")
    g.add_argument("--no-audio", action="store_true", help="skip Griffin-Lim wavs")
    g.add_argument("--griffin-lim-iters", type=int, default=32, help="Griffin-Lim iterations")
    g.set_defaults(func=cmd_generate)
    return g
