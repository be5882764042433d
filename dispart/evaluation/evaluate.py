"""The paper's evaluation protocol (PVAE section 4.4) on a trained model.

Latents are inferred by the *unimodal* encoders on the test split; every latent of every
modality is clustered with k-means (k = n_clusters) and scored by cluster-size-weighted purity
against the digit label; k-means inertia for k = 1..k_max gives Figure 3 and an estimate of the
number of classes. Speaker identity is probed with a linear classifier per speech latent.

What a latent is comes from the model's declarations (``model.latents``): a row's symbol is the
declaration's ``symbol``, its ``role`` ("content"/"style") orders Table 1 and tells the CLI and
the purity monitor which latents carry the class. Dynamic latents are pooled over frames
(:mod:`dispart.evaluation.latents`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dispart.batches.paired import sort_classes
from dispart.batches.pipeline import (
    ExperimentData,
    ImageSet,
    SpeechSet,
    load_experiment_data,
    load_speech_set,
)
from dispart.config import EvalConfig
from dispart.evaluation.classifiers import run_classifiers
from dispart.evaluation.clustering import (
    estimate_num_classes,
    inertia_curve,
    kmeans_purity,
    linear_probe_accuracy,
)
from dispart.evaluation.latents import image_latents, speech_latents
from dispart.evaluation.subsets import (
    classifier_judge,
    evaluate_subsets,
    label_judge,
    subsets_markdown,
    test_examples,
)
from dispart.evaluation.table import PurityRow, rows_to_markdown, write_run_output
from dispart.files import atomic_write
from dispart.models.base import MultimodalModel
from dispart.runs import Run, load_run

# Model modality name -> Table 1 column name.
COLUMN = {"audio": "speech", "image": "image"}


def _codes(labels: list[str]) -> np.ndarray:
    return np.unique(np.asarray(labels), return_inverse=True)[1]


def evaluate_model(
    model: MultimodalModel,
    display_name: str,
    speech_test: SpeechSet | None,
    image_test: ImageSet | None,
    cfg: EvalConfig,
    speech_train: SpeechSet | None = None,
    curves: bool = True,
) -> dict[str, Any]:
    """Table 1 rows (and inertia curves) for one model. Purities are fractions in [0, 1].

    Rows name each latent by its declared symbol and carry its declared ``role``; ``latents``
    holds the model's declarations (name -> :meth:`Latent.to_dict`), so readers of the JSON need
    no model to know what a symbol is.
    """
    rows: list[PurityRow] = []
    inertia: dict[str, dict[int, float]] = {}
    estimates: dict[str, int] = {}
    speaker_probe: dict[str, float] = {}
    sets: list[tuple[str, Any, list[str]]] = []
    z_speech_test: dict[str, np.ndarray] = {}
    if speech_test is not None and "audio" in model.modalities:
        z_speech_test = speech_latents(model, speech_test.features)
        sets.append(("audio", z_speech_test, speech_test.labels))
    if image_test is not None and "image" in model.modalities:
        sets.append(("image", image_latents(model, image_test.images), image_test.labels))
    for modality, latents, labels in sets:
        y = _codes(labels)
        for name, z in latents.items():
            latent = model.latents[name]
            purity = kmeans_purity(z, y, n_clusters=cfg.n_clusters, seed=cfg.seed)
            rows.append(PurityRow(display_name, COLUMN.get(modality, modality), latent.symbol,
                                  float(purity), latent.role))
            if curves:
                key = f"{COLUMN.get(modality, modality)}/{latent.symbol}"
                curve = inertia_curve(z, ks=range(1, cfg.k_max + 1), seed=cfg.seed)
                inertia[key] = {int(k): float(v) for k, v in curve.items()}
                estimates[key] = int(estimate_num_classes(curve))
    if speech_train is not None and speech_test is not None and "audio" in model.modalities:
        if len(set(speech_train.speakers)) > 1 and set(speech_test.speakers) <= set(
                speech_train.speakers):
            z_tr = speech_latents(model, speech_train.features)
            for name in z_tr:
                speaker_probe[model.latents[name].symbol] = float(linear_probe_accuracy(
                    z_tr[name], np.asarray(speech_train.speakers),
                    z_speech_test[name], np.asarray(speech_test.speakers), seed=cfg.seed))
    return {
        "model": display_name,
        "rows": [r.to_dict() for r in rows],
        "latents": {name: latent.to_dict() for name, latent in model.latents.items()},
        "inertia": inertia,
        "estimated_num_classes": estimates,
        "speaker_probe_accuracy": speaker_probe,
        "n_test": {m: len(lab) for m, _, lab in sets},
    }


def evaluate_run(
    run_dir: str | Path, audio: str | Path | None = None, layout: str = "auto",
    out: str | Path | None = None, progress: bool = True, curves: bool = True,
    data: ExperimentData | None = None,
) -> dict[str, Any]:
    """Evaluate a run on its own test split, or on every utterance of ``audio`` (folder/CSV).

    Writes ``evaluation.json`` and ``evaluation.md`` into the run folder (or ``out`` stem),
    atomically; the JSON records the ``weights_sha256`` of the model it was computed from.
    ``data``: the run's already-loaded ExperimentData (its test split), to avoid loading it again.
    """
    run: Run = load_run(run_dir)
    cfg = run.config
    speech = "audio" in run.model.modalities
    if audio is None:
        data = data or load_experiment_data(cfg.data, progress=progress, normalizer=run.normalizer,
                                            speech=speech)
        speech_test, image_test, speech_train = data.speech_test, data.image_test, \
            data.speech_train
        source = {"audio": cfg.data.audio, "split": cfg.data.split, "images": cfg.data.images}
        skipped = data.skipped
    else:
        speech_test, skipped = load_speech_set(audio, cfg.data, run.normalizer, layout, progress)
        image_test, speech_train = None, None
        source = {"audio": str(audio), "split": "all utterances"}
    result = evaluate_model(run.model, run.display_name, speech_test, image_test, cfg.eval,
                            speech_train=speech_train, curves=curves)
    if audio is None and (not speech or "label" in run.model.modalities):
        result["subsets"] = subset_evaluation(run, data, cfg.eval)
    result["source"] = source
    result["skipped_files"] = [{"path": p, "reason": r} for p, r in skipped]
    result["provenance"] = run.info.get("provenance", {})
    result["weights_sha256"] = run.weights_sha256
    base = Path(out) if out else Path(run_dir) / "evaluation"
    write_run_output(base.with_suffix(".json"), result, run)
    text = rows_to_markdown([PurityRow(**r) for r in result["rows"]]) + "\n"
    if "subsets" in result:
        text += "\n" + subsets_markdown(result["subsets"], run.display_name) + "\n"
    atomic_write(base.with_suffix(".md"), text)
    return result


def subset_evaluation(run: Run, data: ExperimentData, cfg: EvalConfig) -> dict[str, Any]:
    """:func:`dispart.evaluation.subsets.evaluate_subsets` on the run's test split, with the
    label judged by argmax and images/speech by the run's digit classifiers."""
    model = run.model
    batch, labels = test_examples(model, data, seed=cfg.seed)
    classes = sort_classes(data.image_train.labels)  # the class order of test_examples' labels
    judges: dict[str, Any] = {"label": label_judge}
    if any(m in model.modalities for m in ("image", "audio")) and len(model.modalities) > 1:
        clfs = run_classifiers(run, data)
        judges.update({m: classifier_judge(c, classes) for m, c in clfs.items()})
    return evaluate_subsets(model, batch, labels, judges, n_clusters=cfg.n_clusters, seed=cfg.seed)
