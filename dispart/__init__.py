"""dispart: disentangled representations of paired multimodal data with VAEs."""

__version__ = "0.1.0"
