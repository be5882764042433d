"""Networks, one module per kind (import them from their module; this package imports nothing).

- :mod:`dispart.nn.encoders`: PVAE Appendix B pre-encoders (one vector per observation) and
  Gaussian heads; :mod:`dispart.nn.decoders`: their decoders.
- :mod:`dispart.nn.frames`: frame-level networks for dynamic latents: per-frame (bi-directional)
  LSTM encoders, static summaries of them, per-frame Gaussian heads, decoders fed per-frame plus
  static latents, and frame-wise application of any network to the valid frames of a sequence.
- :mod:`dispart.nn.video`: image-sequence (video) frame encoders and decoders.
- :mod:`dispart.nn.modality`: the networks built for one modality spec; :mod:`dispart.nn.experts`:
  product / quotient of Gaussian experts.
"""
