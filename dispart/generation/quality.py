"""Judged quality of generation on a run's test split, written to RUN_DIR/quality.json.

Generated samples are judged by the small digit classifiers of
:mod:`dispart.evaluation.classifiers` (trained on real data of the run's training split):

- cross-modal coherence: the content latent (PVAE's z^s) inferred from a test item of one
  modality, the style latent from a random *reference* test item of the other modality (paper
  Fig. 5; also with style drawn from the prior), decoded in the other modality: fraction
  classified as the source's digit. For a model without style latents (JMVAE-kl) the source's
  content latent (z) is decoded directly;
- content preservation of within-modality style transfer: content from test item i, style from a
  test item j of a *different digit* (Fig. 4): fraction classified as i's digit, and the
  fraction classified as j's digit (style leaking content);
- reconstruction: the item decoded from its own latents (a ceiling for the above);
- resynthesis: real test utterances -> Griffin-Lim waveform -> features -> classifier (the
  audio path you listen to keeps the digit), and the same for image -> speech generations;
- speaker probe: linear-probe accuracy of speaker identity from each speech latent;
- image style (``image_style``, partitioned models with an "image" modality of 2-D images):
  Pearson correlation across items of slant and of ink mass
  (:func:`dispart.evaluation.image_style.style_correlation`, on [0, 1] pixels, generated means
  clipped to [0, 1]) between the style-source image and the generated image, for within-image
  style transfer (``within_image``) and for SRC->image coherence with reference style
  (``SRC_to_image``, e.g. ``audio_to_image``); also both within digit (``*_within_digit``:
  each measure minus its mean over images of the same digit, so that ink mass, which depends
  on the digit, measures style only) and ``*_ceiling``: the raw correlation an exact transfer
  that keeps the content's digit would reach on the same pairs
  (keys of :func:`dispart.evaluation.image_style.style_correlation` given the digits);

Accuracies are fractions in [0, 1]; chance is 1 / number of classes. Which latent is content
and which is style comes from the model's declarations (:mod:`dispart.models.latents`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dispart.batches.pipeline import ExperimentData, load_experiment_data
from dispart.evaluation.classifiers import DigitClassifier, run_classifiers
from dispart.evaluation.clustering import linear_probe_accuracy
from dispart.evaluation.image_style import style_correlation
from dispart.evaluation.latents import clustered_modalities, modality_latents, speech_latents
from dispart.evaluation.reuse import reuse_output
from dispart.evaluation.table import write_run_output
from dispart.generation.audio import features_to_waveform, utterance_offset, waveforms_to_features
from dispart.generation.grids import is_partitioned, partition
from dispart.models.base import MultimodalModel
from dispart.runs import Run, load_run

__all__ = ["decode_batch", "quality_run", "quality_from_data"]


def decode_batch(model: MultimodalModel, latents: dict[str, np.ndarray], modality: str,
                 lengths: np.ndarray | None = None, batch: int = 512) -> list[np.ndarray]:
    """Decode (N, D) latents ``batch`` rows at a time (``model.decode_in_batches``, training
    mode restored): list of (28, 28) images or (T_i, D) speech features."""
    z = {k: torch.as_tensor(v) for k, v in latents.items()}
    if model.specs[modality].dynamic:
        ln = torch.as_tensor(lengths, dtype=torch.int64)
        x = model.decode_in_batches(z, modality, ln, batch).cpu()
        return [x[i, : int(t)].numpy() for i, t in enumerate(ln)]
    x = model.decode_in_batches(z, modality, None, batch).cpu()
    return list(x.reshape(len(x), *x.shape[-2:]).numpy())


def _unimodal(model: MultimodalModel, modality: str, items) -> dict[str, np.ndarray]:
    return modality_latents(model, modality, items)


def _other_label(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every i a random j with labels[j] != labels[i] (any j if there is a single class)."""
    out = np.empty(len(labels), dtype=np.int64)
    for i, y in enumerate(labels):
        pool = np.flatnonzero(labels != y)
        out[i] = rng.choice(pool) if len(pool) else rng.integers(len(labels))
    return out


def _image_style(sources: np.ndarray, idx: np.ndarray, generated: list[np.ndarray],
                 source_labels: np.ndarray, output_labels: np.ndarray,
                 ) -> dict[str, float | int] | None:
    """Slant/ink correlation of the style sources ``sources[idx]`` with ``generated`` (both
    brought to (N, H, W)), raw and within digit (``source_labels[idx]``: the style sources'
    digits, ``output_labels``: the digits the outputs were asked for), or None when the images
    are not 2-D (one channel) of one shape."""
    try:
        src = np.asarray(sources)[idx]
        out = np.stack(generated) if len(generated) else np.zeros_like(src)
    except ValueError:  # ragged examples (not images)
        return None
    if src.ndim < 3 or int(np.prod(src.shape[1:-2])) != 1 or out.shape[-2:] != src.shape[-2:]:
        return None
    return style_correlation(src.reshape(len(src), *src.shape[-2:]),
                             out.reshape(len(out), *out.shape[-2:]),
                             np.asarray(source_labels)[idx], np.asarray(output_labels))


def _subset(n: int, max_items: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= max_items else np.sort(rng.choice(n, max_items, replace=False))


def quality_from_data(
    run: Run, data: ExperimentData, classifiers: dict[str, DigitClassifier], max_items: int = 2000,
    seed: int = 0, n_resynth: int = 30,
) -> dict[str, Any]:
    """All quality numbers for a loaded run (see the module docstring), with the
    ``weights_sha256`` of the model they were computed from."""
    model = run.model
    rng = np.random.default_rng(seed)
    test = {m: (data.split(m, "test").examples, np.asarray(data.split(m, "test").labels))
            for m in clustered_modalities(model, data.sets)}
    sel = {m: _subset(len(test[m][1]), max_items, rng) for m in model.modalities if m in test}
    items = {m: ([test[m][0][i] for i in idx] if isinstance(test[m][0], list) else test[m][0][idx])
             for m, idx in sel.items()}
    labels = {m: test[m][1][idx] for m, idx in sel.items()}
    lat = {m: _unimodal(model, m, items[m]) for m in sel}
    train_len = int(np.median(data.split("audio", "train").lengths()))
    has_style = is_partitioned(model, list(sel))  # one shared content + a style latent each
    result: dict[str, Any] = {
        "model": run.display_name, "model_type": model.name, "split": "test", "seed": seed,
        "weights_sha256": run.weights_sha256,
        "n_items": {m: int(len(v)) for m, v in labels.items()},
        "chance": 1.0 / max(1, len(classifiers["image"].classes)),
        "classifiers": {m: {k: c.meta.get(k) for k in ("test_accuracy", "n_train", "n_test")}
                        for m, c in classifiers.items()},
    }

    def lengths_for(modality: str, ref: np.ndarray) -> np.ndarray | None:
        """Frames of generated speech: the style reference's (duration is a style attribute)."""
        return np.asarray([len(items["audio"][j]) for j in ref]) if modality == "audio" else None

    def judge(out_mod: str, generated: list[np.ndarray], truth: np.ndarray) -> float:
        return classifiers[out_mod].accuracy(generated, list(truth))

    # reconstruction from the item's own latents
    recon: dict[str, float] = {}
    for m in sel:
        lengths = np.asarray([len(x) for x in items[m]]) if m == "audio" else None
        recon[m] = judge(m, decode_batch(model, lat[m], m, lengths), labels[m])
    result["reconstruction"] = recon

    # cross-modal coherence
    coherence: dict[str, Any] = {}
    image_style: dict[str, Any] = {}
    for src in sel:
        for out_mod in sel:
            if out_mod == src:
                continue
            n = len(labels[src])
            ref = rng.integers(0, len(labels[out_mod]), size=n)
            entry: dict[str, Any] = {"n": n}
            if has_style:
                content, sty = partition(model, out_mod)
                z_ref = {content: lat[src][content], sty: lat[out_mod][sty][ref]}
                gen = decode_batch(model, z_ref, out_mod, lengths_for(out_mod, ref))
                entry["reference_style"] = judge(out_mod, gen, labels[src])
                if out_mod == "image" and (st := _image_style(items["image"], ref, gen,
                                                                    labels["image"], labels[src])):
                    image_style[f"{src}_to_image"] = st
                z_prior = rng.standard_normal(lat[out_mod][sty][ref].shape).astype(np.float32)
                plen = np.full(n, train_len) if out_mod == "audio" else None
                entry["prior_style"] = judge(
                    out_mod, decode_batch(model, {content: lat[src][content], sty: z_prior},
                                          out_mod, plen), labels[src])
            else:  # no style latents (JMVAE-kl): decode the content latent of the source
                name = model.content_latents(src)[0].name
                plen = np.full(n, train_len) if out_mod == "audio" else None
                gen = decode_batch(model, {name: lat[src][name]}, out_mod, plen)
                entry["shared_latent"] = judge(out_mod, gen, labels[src])
            if out_mod == "audio" and n_resynth > 0:
                k = min(n_resynth, n)
                entry["resynthesized"] = _resynth_accuracy(run, classifiers["audio"], gen[:k],
                                                           labels[src][:k])
                entry["n_resynthesized"] = k
            coherence[f"{src}->{out_mod}"] = entry
    result["coherence"] = coherence

    # content preservation of within-modality style transfer
    preservation: dict[str, Any] = {}
    if has_style:
        for m in sel:
            content, sty = partition(model, m)
            j = _other_label(labels[m], rng)
            z = {content: lat[m][content], sty: lat[m][sty][j]}
            gen = decode_batch(model, z, m, lengths_for(m, j))
            if m == "image" and (st := _image_style(items["image"], j, gen, labels[m], labels[m])):
                image_style["within_image"] = st
            pred = np.asarray(classifiers[m].predict(gen))
            preservation[m] = {"n": int(len(j)),
                               "semantic_digit": float(np.mean(pred == labels[m])),
                               "style_source_digit": float(np.mean(pred == labels[m][j]))}
    result["content_preservation"] = preservation
    result["image_style"] = image_style

    # Griffin-Lim path on real speech
    if "audio" in sel and n_resynth > 0:
        k = min(n_resynth, len(labels["audio"]))
        result["resynthesis_real_speech"] = {
            "n": k, "accuracy": _resynth_accuracy(run, classifiers["audio"], items["audio"][:k],
                                                  labels["audio"][:k])}

    # speaker identity from speech latents (linear probe)
    probe: dict[str, float] = {}
    tr, te = data.split("audio", "train"), data.split("audio", "test")
    if "audio" in model.modalities and len(set(tr.speakers)) > 1 and set(te.speakers) <= set(
            tr.speakers):
        z_tr, z_te = speech_latents(model, tr.examples), speech_latents(model, te.examples)
        for name in z_tr:
            probe[name] = linear_probe_accuracy(z_tr[name], np.asarray(tr.speakers), z_te[name],
                                                np.asarray(te.speakers), seed=seed)
        result["speaker_chance"] = 1.0 / len(set(tr.speakers))
    result["speaker_probe_accuracy"] = probe
    return result


def _resynth_accuracy(run: Run, clf: DigitClassifier, features: list[np.ndarray],
                      labels: np.ndarray) -> float:
    """Features -> Griffin-Lim waveform -> features again -> classifier accuracy."""
    offset = utterance_offset(run)
    waves = [features_to_waveform(f, run.normalizer, run.fbank, offset) for f in features]
    again = waveforms_to_features(waves, run.normalizer, run.fbank, run.config.data.normalize)
    return clf.accuracy(again, list(labels))


def quality_run(run_dir: str | Path, max_items: int = 2000, seed: int = 0, out: str | Path | None = None,
                data: ExperimentData | None = None) -> dict[str, Any]:
    """Train (or reuse) the judge classifiers, compute the quality numbers and write
    ``RUN_DIR/quality.json`` (or ``out``) atomically. Returns the payload."""
    run = load_run(run_dir)
    if data is None:
        data = load_experiment_data(run.config.data, progress=False, normalizers=run.normalizers)
    classifiers = run_classifiers(run, data, seed=seed)
    result = quality_from_data(run, data, classifiers, max_items=max_items, seed=seed)
    result["provenance"] = run.info.get("provenance", {})
    write_run_output(Path(out) if out else Path(run_dir) / "quality.json", result, run)
    return result


def ensure_quality(run: Run, data: ExperimentData, seed: int = 0, max_items: int = 2000,
                   regenerate: bool = False) -> dict[str, Any]:
    """RUN_DIR/quality.json, reused or computed (judge classifiers of the run, then
    :func:`quality_from_data` on at most ``max_items`` test items per
    modality) and written atomically with the run's provenance and ``weights_sha256``."""

    path = Path(run.path) / "quality.json"
    quality = None if regenerate else reuse_output(path, run)
    if quality is None:
        quality = quality_from_data(run, data, run_classifiers(run, data, seed=seed), seed=seed,
                                    max_items=max_items)
        quality["provenance"] = run.info.get("provenance", {})
        quality["weights_sha256"] = run.weights_sha256
        write_run_output(path, quality, run)
    return quality
