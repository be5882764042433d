"""Small digit classifiers that judge generated samples (evaluation tools, not models of study).

- image: a two-layer strided CNN on (28, 28) images, each scaled to a peak of 1 (generated
  images are low-contrast Gaussian means);
- speech ("audio"): an MLP on a fixed-size pooling of the *normalised* log-Mel features the
  models see (mean and std over time plus the means of three equal time segments, 5 x D values),
  so generated features are classified without any waveform round trip.

Both are trained on the real training split of a run's data and saved as
``NAME.safetensors`` (weights) + ``NAME.json`` (classes, sizes, data source, test accuracy and
the SHA-256 of the weights file): no pickle. Both are written atomically, the JSON last; a
truncated, corrupt or changed classifier is reported in one warning line and retrained.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dispart.data.config import DataConfig
from dispart.errors import RunDirError
from dispart.files import atomic_write_json, atomic_write_with, file_sha256, read_json

__all__ = [
    "DigitClassifier",
    "pool_features",
    "train_image_classifier",
    "train_speech_classifier",
    "run_classifiers",
]

N_SEGMENTS = 3


def pool_features(features: np.ndarray) -> np.ndarray:
    """(T, D) frames -> (5 * D,) float32: mean, std, and the means of 3 equal time segments."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected non-empty (T, D) features, got shape {x.shape}")
    segs = np.array_split(x, N_SEGMENTS, axis=0)
    seg_means = [s.mean(axis=0) if len(s) else x[-1] for s in segs]
    return np.concatenate([x.mean(axis=0), x.std(axis=0), *seg_means]).astype(np.float32)


def _image_inputs(images: Sequence[np.ndarray] | np.ndarray) -> Tensor:
    """(N, 1, 28, 28) tensor, each image clipped at 0 and scaled to a peak of 1: decoded images
    are Gaussian means with low contrast, and the judge should read their shape, not contrast."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).clamp_min(0)
    x = x.unsqueeze(1) if x.dim() == 3 else x
    return x / x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)


class _ImageNet(nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 7 * 7, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _SpeechNet(nn.Module):
    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(hidden, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass
class DigitClassifier:
    """A trained classifier for one modality ("image" or "audio").

    Attributes:
        modality: "image" (inputs (N, 28, 28) in [0, 1]) or "audio" (list of (T, D) normalised
            features).
        classes: class names, index = network output.
        net: the torch module (eval mode).
        meta: plain-JSON facts saved alongside (data source, accuracies, sizes).
    """

    modality: str
    classes: list[str]
    net: nn.Module
    meta: dict[str, Any] = field(default_factory=dict)

    def _inputs(self, items: Sequence[np.ndarray] | np.ndarray) -> Tensor:
        if self.modality == "image":
            return _image_inputs(items)
        return torch.as_tensor(np.stack([pool_features(f) for f in items]))

    @torch.no_grad()
    def predict_proba(self, items: Sequence[np.ndarray] | np.ndarray, batch: int = 2048) -> np.ndarray:
        """(N, n_classes) class probabilities."""
        self.net.eval()
        x = self._inputs(items)
        out = [torch.softmax(self.net(x[i:i + batch]), dim=-1) for i in range(0, len(x), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)

    def predict(self, items: Sequence[np.ndarray] | np.ndarray) -> list[str]:
        """Predicted class names, one per item."""
        return [self.classes[i] for i in self.predict_proba(items).argmax(axis=1)]

    def accuracy(self, items: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str]) -> float:
        """Fraction of ``items`` classified as their ``labels``."""
        pred = self.predict(items)
        if len(pred) != len(labels):
            raise ValueError(f"{len(pred)} items but {len(labels)} labels")
        return float(np.mean([p == str(y) for p, y in zip(pred, labels, strict=True)]))

    def save(self, stem: str | Path) -> None:
        """Write ``stem.safetensors`` then ``stem.json`` (with the weights' SHA-256), atomically."""
        stem = Path(stem)
        weights = stem.with_suffix(".safetensors")
        state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        atomic_write_with(weights, lambda tmp: save_file(state, tmp))
        atomic_write_json(stem.with_suffix(".json"), {
            "modality": self.modality, "classes": self.classes, "meta": self.meta,
            "weights_sha256": file_sha256(weights)})

    @classmethod
    def load(cls, stem: str | Path) -> DigitClassifier:
        """Read a classifier written by :meth:`save`; RunDirError (one line naming the file) if
        either file is missing, truncated, corrupt or does not match the other."""
        stem = Path(stem)
        info = read_json(stem.with_suffix(".json"))
        weights = stem.with_suffix(".safetensors")
        try:
            recorded = info.get("weights_sha256")
            if recorded is not None and file_sha256(weights) != recorded:
                raise RunDirError(f"{weights}: SHA-256 does not match the one recorded in "
                                  f"{stem.with_suffix('.json').name} (truncated or changed)")
            state = load_file(str(weights))
            net = _build(info["modality"], len(info["classes"]), info["meta"].get("in_dim", 0))
            net.load_state_dict(state)
        except (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError,
                SafetensorError) as e:
            raise RunDirError(f"{stem}: cannot load classifier ({e.__class__.__name__}: "
                              f"{' '.join(str(e).split())})") from e
        return cls(info["modality"], list(info["classes"]), net.eval(), info["meta"])


def _warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"dispart: warning: {message}", file=sys.stderr, flush=True)


def _build(modality: str, n_classes: int, in_dim: int) -> nn.Module:
    return _ImageNet(n_classes) if modality == "image" else _SpeechNet(in_dim, n_classes)


def _fit(net: nn.Module, x: Tensor, y: Tensor, steps: int, batch: int, lr: float, seed: int,
         weight_decay: float) -> None:
    """Minibatch AdamW on one CPU thread (these nets are too small to gain from more; on a busy
    machine extra intra-op threads made training ~5x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit_loop(net, x, y, steps, batch, lr, seed, weight_decay)
    finally:
        torch.set_num_threads(threads)


def _fit_loop(net: nn.Module, x: Tensor, y: Tensor, steps: int, batch: int, lr: float, seed: int,
              weight_decay: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    net.train()
    perm = torch.randperm(len(x), generator=gen)
    pos = 0
    for _ in range(steps):
        if pos + batch > len(x):
            perm, pos = torch.randperm(len(x), generator=gen), 0
        idx = perm[pos:pos + batch]
        pos += batch
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


def train_image_classifier(
    images: np.ndarray, labels: Sequence[str], steps: int = 400, batch: int = 128, seed: int = 0,
    max_items: int = 20000,
) -> DigitClassifier:
    """CNN on (N, 28, 28) images in [0, 1]; at most ``max_items`` (seeded subset) are used."""
    torch.manual_seed(seed)
    classes = sorted({str(y) for y in labels})
    idx = np.arange(len(labels))
    if len(idx) > max_items:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), max_items, replace=False))
    x = _image_inputs(np.asarray(images, np.float32)[idx])
    y = torch.as_tensor([classes.index(str(labels[i])) for i in idx])
    net = _ImageNet(len(classes))
    _fit(net, x, y, steps, min(batch, len(x)), 1e-3, seed, 1e-4)
    return DigitClassifier("image", classes, net, {"n_train": int(len(x)), "steps": steps})


def train_speech_classifier(
    features: Sequence[np.ndarray], labels: Sequence[str], steps: int = 800, batch: int = 64,
    seed: int = 0,
) -> DigitClassifier:
    """MLP on :func:`pool_features` of normalised (T, D) speech features."""
    torch.manual_seed(seed)
    classes = sorted({str(y) for y in labels})
    x = torch.as_tensor(np.stack([pool_features(f) for f in features]))
    y = torch.as_tensor([classes.index(str(v)) for v in labels])
    net = _SpeechNet(x.shape[1], len(classes))
    net.mean.copy_(x.mean(0))
    net.std.copy_(x.std(0).clamp_min(1e-3))
    _fit(net, x, y, steps, min(batch, len(x)), 1e-3, seed, 1e-2)
    return DigitClassifier("audio", classes, net,
                           {"n_train": int(len(x)), "steps": steps, "in_dim": int(x.shape[1])})


def _signature(run) -> dict[str, Any]:
    d = run.config.data
    return {"audio": d.audio, "images": d.images, "split": d.split, "normalize": d.normalize,
            "n_mels": d.n_mels, "sample_rate": d.sample_rate,
            "binarize": d.binarize,
            "normalizer_mean0": float(run.normalizer.mean[0]) if run.normalizer is not None else None,
            **({"loader": d.loader} if getattr(d, "loader", "auto") != "auto" else {}),
            # the frame timing, when not the default (judges cached before it existed stay valid)
            **({"hop_ms": d.hop_ms, "win_ms": d.win_ms}
               if (d.hop_ms, d.win_ms) != (DataConfig.hop_ms, DataConfig.win_ms) else {})}


def _load_or_none(stem: Path) -> DigitClassifier | None:
    """The saved classifier, or None (after one warning line) when it cannot be used."""
    try:
        return DigitClassifier.load(stem)
    except RunDirError as e:
        _warn(f"{' '.join(str(e).split())}; retraining the judge")
        return None


def run_classifiers(run, data, folder: str | Path | None = None, seed: int = 0,
                    retrain: bool = False) -> dict[str, DigitClassifier]:
    """Classifiers for a run's data, {"image": ..., "audio": ...}, trained on its training split
    and scored on its test split (``meta["test_accuracy"]``).

    They are cached in ``folder`` (default RUN_DIR/classifiers) and reused when the data
    signature (sources, split, features, normaliser) matches; a cached classifier that cannot
    be loaded (truncated, corrupt) is reported in one warning line and retrained.
    """
    folder = Path(folder) if folder else Path(run.path) / "classifiers"
    sig = _signature(run)
    out: dict[str, DigitClassifier] = {}
    wanted = [m for m in ("image", "audio") if m in data.sets]
    for modality in wanted:
        stem = folder / modality
        if not retrain and stem.with_suffix(".json").is_file():
            clf = _load_or_none(stem)
            if clf is not None and clf.meta.get("data") == sig:
                out[modality] = clf
                continue
        train, test = data.split(modality, "train"), data.split(modality, "test")
        trainer = train_image_classifier if modality == "image" else train_speech_classifier
        clf = trainer(train.examples, train.labels, seed=seed)
        clf.meta["test_accuracy"] = clf.accuracy(test.examples, test.labels)
        clf.meta["n_test"] = len(test)
        clf.meta["data"] = sig
        clf.save(stem)
        out[modality] = clf
    return out
