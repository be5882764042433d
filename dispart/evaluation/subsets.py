"""Inference from any subset of modalities, on a run's test split (issue 5's missing-modality
evaluation; ``dispart evaluate`` for runs with a label modality or without speech).

Test examples hold every modality of the run: speech test utterances paired with test images of
the same digit (a fixed seeded pairing) and the digit label, or MNIST test images and labels.
For every subset S of the model's modalities that the model can encode:

- ``purity``: k-means purity (PVAE protocol) of the content latent (the first latent declared
  with role "content" that a modality of S informs: PVAE z^s, the single z of MVAE/JMVAE/VAE)
  inferred from S alone (posterior means; a dynamic latent averaged over valid frames);
- ``coherence``: for every modality m outside S, m decoded from the latents inferred from S
  (latents S does not inform are set to their prior mean, 0), judged: a label by its argmax,
  an image or speech by the run's digit classifiers (:mod:`dispart.evaluation.classifiers`),
  as the fraction judged to be the test example's digit. With S = {image} and m = label this is
  the classification accuracy of MVAE's weak-supervision experiment (Fig. 3).

Accuracies and purities are fractions in [0, 1].
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dispart.batches.batch import Batch
from dispart.batches.paired import ExamplePairs, PairedDigits, collate_paired, sort_classes
from dispart.batches.pipeline import ExperimentData
from dispart.batches.weak import collate_partial
from dispart.evaluation.clustering import kmeans_purity
from dispart.evaluation.latents import pool_dynamic
from dispart.models.base import MultimodalModel

Judge = Callable[[list[np.ndarray]], np.ndarray]  # decoded items -> predicted class indices


def test_classes(model: MultimodalModel, data: ExperimentData) -> list[str]:
    """Class names in index order of :func:`test_examples`' labels: the sorted labels of the
    training split of the model's first modality the data holds."""
    first = next((m for m in model.modalities if m in data.sets), None)
    if first is None:
        raise ValueError(f"the data has none of the modalities {list(model.modalities)} of {model.name} "
                         f"(it has {data.modalities})")
    return sort_classes(data.split(first, "train").labels)


def test_examples(model: MultimodalModel, data: ExperimentData, seed: int = 0,
                  max_items: int | None = None) -> tuple[Batch, np.ndarray]:
    """All test examples as one batch of the model's modalities, and their (N,) class indices
    (in the order of :func:`test_classes`).

    Paired as the data pairs them (``data.pairing``): by label, every test utterance with a
    random test image of its digit (deterministic in ``seed``); by example, the modalities of
    the same test examples (MNIST images and their labels, audio and video of one clip).
    ``max_items`` keeps a seeded subset.
    """
    rng = np.random.default_rng(seed)

    def keep(n: int) -> np.ndarray:
        idx = np.arange(n)
        if max_items is not None and n > max_items:
            idx = np.sort(rng.choice(n, max_items, replace=False))
        return idx

    missing = [m for m in model.modalities if m not in data.sets]
    if missing:
        raise ValueError(f"the test data has no modality {missing[0]!r} (it has {data.modalities})")
    if data.pairing == "label" and "audio" in model.modalities:
        audio, image = data.split("audio", "test"), data.split("image", "test")
        pairs = PairedDigits(audio.examples, audio.labels, image.examples, image.labels,  # type: ignore[arg-type]
                             seed=seed)
        full = collate_paired([pairs[int(i)] for i in keep(len(pairs))])
    else:
        examples = ExamplePairs({m: data.split(m, "test") for m in model.modalities},
                                classes=test_classes(model, data),
                                shapes={m: s.shape for m, s in model.specs.items()
                                        if s.kind in ("image", "vector")})
        full = collate_partial([examples[int(i)] for i in keep(len(examples))],
                               [model.specs[m] for m in model.modalities])
    y = full["label"].numpy()
    batch: dict[str, Any] = {}
    for m in model.modalities:
        if m not in full:
            raise ValueError(f"the test data has no modality {m!r} (it has {sorted(full)})")
        x = full[m]
        if isinstance(x, Tensor) and model.specs[m].kind in ("image", "vector"):
            x = x.reshape(len(x), *model.specs[m].shape)
        batch[m] = x
    return batch, y


def shared_latent(model: MultimodalModel, subset: Sequence[str]) -> str | None:
    """Name of the content latent clustered for ``subset``: the first latent the model declares
    with role "content" that a modality of ``subset`` informs; None if there is none."""
    return next((latent.name for latent in model.latents.values()
                 if latent.role == "content" and set(latent.modalities) & set(subset)), None)


def _sequence_lengths(model: MultimodalModel, batch: Batch, subset: Sequence[str]) -> Tensor | None:
    """(N,) frames of the first dynamic modality of ``subset`` (for pooling dynamic latents)."""
    return next((model.lengths_of(batch[m]) for m in subset
                 if model.specs[m].kind in ("sequence", "frames")), None)


def infer_means(model: MultimodalModel, batch: Batch, subset: Sequence[str], chunk: int = 512
                ) -> dict[str, Tensor]:
    """Posterior means of every latent inferable from ``subset``: (N, D) each, or (N, T, D) for
    dynamic latents (``model.encode_in_batches``, ``chunk`` rows at a time)."""
    return model.encode_in_batches({m: batch[m] for m in subset}, chunk)


def decode_from(model: MultimodalModel, means: dict[str, Tensor], modality: str,
                lengths: Tensor | None, chunk: int = 512) -> list[np.ndarray]:
    """Decode ``modality`` from latent means; latents not in ``means`` get the prior mean 0.

    Returns one item per row: (T_i, D) frames for a sequence modality (``lengths`` (N,)), else
    an array of the modality's shape.
    """
    sizes = model.latent_sizes()
    n = len(next(iter(means.values())))
    z = {name: means[name] if name in means else torch.zeros(n, sizes[name])
         for name in model.decoder_latents(modality)}
    x = model.decode_in_batches(z, modality, lengths, chunk).cpu()
    if lengths is not None:
        return [x[i, : int(t)].numpy() for i, t in enumerate(lengths)]
    return list(x.numpy())


def subsets_of(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, largest first."""
    out = []
    for r in range(len(modalities), 0, -1):
        out += list(itertools.combinations(modalities, r))
    return out


def evaluate_subsets(
    model: MultimodalModel, batch: Batch, labels: np.ndarray, judges: dict[str, Judge],
    n_clusters: int = 10, seed: int = 0, subsets: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Purity of the shared latent and cross-modal coherence for every encodable subset.

    Returns ``{"subsets": [{"given": [...], "latent": name | None, "purity": p | None,
    "coherence": {m: acc}} ...], "unsupported": [{"given": [...], "reason": str}]}``.
    The model's training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        rows, unsupported = [], []
        for subset in subsets or subsets_of(model.modalities):
            subset = tuple(subset)
            try:
                means = infer_means(model, batch, subset)
            except ValueError as e:  # e.g. JMVAE-kl has no encoder for 2 of 3 modalities
                unsupported.append({"given": list(subset), "reason": str(e)})
                continue
            latent = shared_latent(model, subset)
            purity = None
            if latent is not None and latent in means:
                z = pool_dynamic(model, {latent: means[latent]},
                                 _sequence_lengths(model, batch, subset))[latent]
                purity = float(kmeans_purity(z.numpy(), labels, n_clusters=n_clusters, seed=seed))
            coherence = {}
            for m in model.modalities:
                if m in subset or m not in judges:
                    continue
                lengths = model.lengths_of(batch[m]) if m in batch else None
                decoded = decode_from(model, means, m, lengths)
                coherence[m] = float(np.mean(judges[m](decoded) == labels))
            rows.append({"given": list(subset), "latent": latent, "purity": purity,
                         "coherence": coherence})
    finally:
        model.train(was_training)
    return {"subsets": rows, "unsupported": unsupported, "n": int(len(labels))}


def label_judge(decoded: list[np.ndarray]) -> np.ndarray:
    """Decoded label probabilities -> class indices (argmax)."""
    return np.asarray([int(np.argmax(p)) for p in decoded], dtype=np.int64)


def classifier_judge(clf: Any, classes: Sequence[str]) -> Judge:
    """A :class:`~dispart.evaluation.classifiers.DigitClassifier` as a judge returning class
    indices in ``classes`` order (images are reshaped to (28, 28))."""
    index = {c: i for i, c in enumerate(classes)}

    def judge(decoded: list[np.ndarray]) -> np.ndarray:
        items = [d.reshape(28, 28) if d.size == 28 * 28 else d for d in decoded]
        return np.asarray([index.get(p, -1) for p in clf.predict(items)], dtype=np.int64)

    return judge


def subsets_markdown(result: dict[str, Any], model_name: str) -> str:
    """The result of :func:`evaluate_subsets` as a Markdown table (percentages)."""
    mods = sorted({m for r in result["subsets"] for m in r["coherence"]})
    head = "| model | given | purity of shared z | " + " | ".join(f"-> {m}" for m in mods) + " |"
    lines = [head, "|" + "---|" * (3 + len(mods))]
    for r in result["subsets"]:
        pur = "-" if r["purity"] is None else f"{100 * r['purity']:.1f}"
        cells = [f"{100 * r['coherence'][m]:.1f}" if m in r["coherence"] else "" for m in mods]
        lines.append(f"| {model_name} | {' + '.join(r['given'])} | {pur} | " + " | ".join(cells) + " |")
    for u in result["unsupported"]:
        lines.append(f"| {model_name} | {' + '.join(u['given'])} | not supported | "
                     + " | ".join("" for _ in mods) + " |")
    return "\n".join(lines)
