"""Batches: what flows from data and features into models (a mapping modality -> tensor),
modality descriptions, pairing, and the pipeline from a DataConfig to normalised arrays."""
