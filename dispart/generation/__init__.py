"""Use a trained model: style transfer, cross-modal generation, prior grids, audio you can hear;
for sequence models (DSAE) swapping f between sequences, fixed f or fixed z_1:T with the other
drawn from the prior, as frame strips, animated GIFs, spectrograms and wavs; for audio-visual
models with shared dynamics (MDVAE) a target sequence decoded with z_av, z_v or both taken from a
source sequence.

- :mod:`dispart.generation.grids`: grids as arrays plus which source fed which latent;
- :mod:`dispart.generation.transfer`: latent transfer between audio-visual sequences (MDVAE);
- :mod:`dispart.generation.audio`: normalised features -> log-Mel -> Griffin-Lim wav / PNG;
- :mod:`dispart.generation.outputs`: a run's grids, wavs and manifest (:func:`generate_run`);
- :mod:`dispart.generation.cli`: ``dispart generate RUN_DIR`` (:func:`add_generate_parser`).
"""

GRID_KINDS = ("style", "cross", "prior", "fig2")  # PVAE / JMVAE-kl grids
SEQUENCE_KINDS = ("swap", "fix_f", "fix_z")  # static f + dynamic z_1:T models (DSAE)
TRANSFER_KINDS = ("transfer",)  # static w + shared dynamic z_av + private z_m models (MDVAE)
KINDS = GRID_KINDS + SEQUENCE_KINDS + TRANSFER_KINDS  # every kind, see ``dispart generate --help``
