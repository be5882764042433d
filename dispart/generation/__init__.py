"""Use a trained model: style transfer, cross-modal generation, prior grids, audio you can hear;
for sequence models (DSAE) swapping f between sequences, fixed f or fixed z_1:T with the other
drawn from the prior, as frame strips, animated GIFs, spectrograms and wavs.

- :mod:`dispart.generation.grids`: grids as arrays plus which source fed which latent;
- :mod:`dispart.generation.audio`: normalised features -> log-Mel -> Griffin-Lim wav / PNG;
- :mod:`dispart.generation.outputs`: a run's grids, wavs and manifest (:func:`generate_run`);
- :mod:`dispart.generation.cli`: ``dispart generate RUN_DIR`` (:func:`add_generate_parser`).
"""

GRID_KINDS = ("style", "cross", "prior", "fig2")  # PVAE / JMVAE-kl grids
SEQUENCE_KINDS = ("swap", "fix_f", "fix_z")  # static f + dynamic z_1:T models (DSAE)
KINDS = GRID_KINDS + SEQUENCE_KINDS  # every kind, see ``dispart generate --help``
