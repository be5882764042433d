"""Use a trained model: style transfer, cross-modal generation, prior grids, audio you can hear.

- :mod:`dispart.generation.grids`: grids as arrays plus which source fed which latent;
- :mod:`dispart.generation.audio`: normalised features -> log-Mel -> Griffin-Lim wav / PNG;
- :mod:`dispart.generation.outputs`: a run's grids, wavs and manifest (:func:`generate_run`);
- :mod:`dispart.generation.cli`: ``dispart generate RUN_DIR`` (:func:`add_generate_parser`).
"""

KINDS = ("style", "cross", "prior", "fig2")  # grid kinds, see ``dispart generate --help``
