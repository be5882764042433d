"""The paper's evaluation protocol (PVAE section 4.4) on a trained model.

Latents are inferred by the *unimodal* encoders on the test split; every latent of every
modality is clustered with k-means (k = n_clusters) and scored by cluster-size-weighted purity
against the digit label; k-means inertia for k = 1..k_max gives Figure 3 and an estimate of the
number of classes. Linear probes (logistic regression fitted on the training split's latents,
scored on the test split's): of the class (the digit) for every latent, and of speaker identity
for every speech latent; next to each, its chance level (the test share of the most frequent
class or speaker: what a constant guess scores). Purity alone can hide a latent that carries the
class (clustered by speaker, the digit still linearly decodable), which the probe shows.

What a latent is comes from the model's declarations (``model.latents``): a row's symbol is the
declaration's ``symbol``, its ``role`` ("content"/"style") orders Table 1 and tells the CLI and
the purity monitor which latents carry the class. Dynamic latents are pooled over frames
(:mod:`dispart.evaluation.latents`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dispart.batches.pipeline import ExperimentData, load_experiment_data, load_speech_set
from dispart.batches.sets import ModalitySet
from dispart.config import EvalConfig
from dispart.errors import ConfigError
from dispart.evaluation.classifiers import run_classifiers
from dispart.evaluation.clustering import (
    chance_accuracy,
    estimate_num_classes,
    inertia_curve,
    kmeans_purity,
    linear_probe_accuracy,
)
from dispart.evaluation.latents import clustered_modalities, modality_latents
from dispart.evaluation.subsets import (
    classifier_judge,
    evaluate_subsets,
    label_judge,
    subsets_markdown,
    test_classes,
    test_examples,
)
from dispart.evaluation.table import PurityRow, probes_to_markdown, rows_to_markdown, write_run_output
from dispart.files import atomic_write
from dispart.models.base import MultimodalModel
from dispart.runs import Run, load_run

# Model modality name -> Table 1 column name.
COLUMN = {"audio": "speech", "image": "image"}


PROBE_MAX_TRAIN = 10_000
"""At most this many training examples (a seeded random subset) fit a probe: MNIST's 60,000 would
cost minutes of encoding and fitting for no change in the measure."""
PROBE_KEYS = ("speaker_probe_accuracy", "speaker_probe_chance", "label_probe_accuracy",
              "label_probe_chance")
"""The probe entries of evaluation.json, each {latent key: fraction in [0, 1]}."""


def _codes(labels: list[str]) -> np.ndarray:
    return np.unique(np.asarray(labels), return_inverse=True)[1]


def _probed(train: list[str] | None, test: list[str] | None) -> bool:
    """Whether a probe of these training/test targets can be scored: several training classes,
    none new in test (speaker identity: the test speakers were heard in training)."""
    return (train is not None and test is not None and len(set(train)) > 1
            and set(test) <= set(train))


def _speakers_probed(train: ModalitySet | None, test: ModalitySet) -> bool:
    """Whether speaker identity can be probed: several training speakers, none new in test."""
    return train is not None and _probed(train.speakers, test.speakers)


def _probe_subset(n: int, seed: int) -> np.ndarray:
    """Indices of the training examples that fit the probes: all, or PROBE_MAX_TRAIN drawn with ``seed``."""
    limit = PROBE_MAX_TRAIN
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _take(values, idx: np.ndarray):
    if isinstance(values, np.ndarray):
        return values[idx]
    return [values[int(i)] for i in idx]


def evaluate_model(
    model: MultimodalModel,
    display_name: str,
    test_sets: Mapping[str, ModalitySet],
    cfg: EvalConfig,
    train_sets: Mapping[str, ModalitySet] | None = None,
    curves: bool = True,
) -> dict[str, Any]:
    """Table 1 rows (and inertia curves) for one model. Purities are fractions in [0, 1].

    Args:
        test_sets: modality -> its test examples (:class:`ModalitySet`, e.g.
            ``data.sets[m]["test"]``); latents of every modality of the model found here are
            inferred from that modality alone (see :func:`clustered_modalities`) and clustered.
        train_sets: modality -> training examples (at most :data:`PROBE_MAX_TRAIN` of them, a
            seeded subset, are used): a linear probe of the class is trained per latent of that
            modality (when the test classes are all training classes), and with speakers
            (several, none new in test) one of speaker identity.

    Rows name each latent by its declared symbol and carry its declared ``role``; ``latents``
    holds the model's declarations (name -> :meth:`Latent.to_dict`), so readers of the JSON need
    no model to know what a symbol is. Rows and ``n_test`` are keyed by Table 1 column name
    ("speech" for "audio") and modality name; ``speaker_probe_accuracy``,
    ``label_probe_accuracy`` and their chance levels ``speaker_probe_chance`` /
    ``label_probe_chance`` by symbol for "audio" and by "<column>/<symbol>" for other modalities.
    """
    rows: list[PurityRow] = []
    inertia: dict[str, dict[int, float]] = {}
    estimates: dict[str, int] = {}
    probes: dict[str, dict[str, float]] = {k: {} for k in PROBE_KEYS}
    sets: list[tuple[str, dict[str, np.ndarray], list[str]]] = []
    for modality in clustered_modalities(model, test_sets):
        test = test_sets[modality]
        need = max(cfg.n_clusters, cfg.k_max if curves else 1)
        if len(test) < need:
            raise ConfigError(f"eval.n_clusters={cfg.n_clusters}"
                              + (f", eval.k_max={cfg.k_max}" if curves else "")
                              + f": {modality!r} has only {len(test)} test examples; lower them")
        sets.append((modality, modality_latents(model, modality, test.examples), test.labels))
    for modality, latents, labels in sets:
        y = _codes(labels)
        column = COLUMN.get(modality, modality)
        for name, z in latents.items():
            latent = model.latents[name]
            purity = kmeans_purity(z, y, n_clusters=cfg.n_clusters, seed=cfg.seed)
            rows.append(PurityRow(display_name, column, latent.symbol, float(purity), latent.role))
            if curves:
                key = f"{column}/{latent.symbol}"
                curve = inertia_curve(z, ks=range(1, cfg.k_max + 1), seed=cfg.seed)
                inertia[key] = {int(k): float(v) for k, v in curve.items()}
                estimates[key] = int(estimate_num_classes(curve))
    for modality, z_test, _ in sets:
        train = (train_sets or {}).get(modality)
        if train is not None:
            _probe(model, modality, train, test_sets[modality], z_test, cfg.seed, probes)
    return {
        "model": display_name,
        "rows": [r.to_dict() for r in rows],
        "latents": {name: latent.to_dict() for name, latent in model.latents.items()},
        "inertia": inertia,
        "estimated_num_classes": estimates,
        **probes,
        "n_test": {m: len(lab) for m, _, lab in sets},
    }


def _probe(model: MultimodalModel, modality: str, train: ModalitySet, test: ModalitySet,
           z_test: Mapping[str, np.ndarray], seed: int, out: dict[str, dict[str, float]]) -> None:
    """Linear probes of the class and (when probed) the speaker from every latent of ``modality``:
    fitted on (a subset of) ``train``'s latents, scored on ``z_test``; filed into ``out``."""
    targets = {}
    if _probed(train.labels, test.labels):
        targets["label"] = (train.labels, test.labels)
    if _speakers_probed(train, test):
        targets["speaker"] = (train.speakers, test.speakers)
    if not targets:
        return
    idx = _probe_subset(len(train), seed)
    z_tr = modality_latents(model, modality, _take(train.examples, idx))
    for name in z_tr:
        symbol = model.latents[name].symbol
        key = symbol if modality == "audio" else f"{COLUMN.get(modality, modality)}/{symbol}"
        for what, (y_tr, y_te) in targets.items():
            out[f"{what}_probe_accuracy"][key] = float(linear_probe_accuracy(
                z_tr[name], np.asarray(_take(y_tr, idx)), z_test[name], np.asarray(y_te), seed=seed))
            out[f"{what}_probe_chance"][key] = chance_accuracy(list(y_te))


MIN_CURVE = 3  # the class-count estimate needs an inertia curve of k = 1..3 at least


def fitted_eval_config(cfg: EvalConfig, test: ModalitySet) -> EvalConfig:
    """``cfg`` for a set of any size (``dispart evaluate --audio``: recordings of new speakers,
    perhaps a handful): k-means with at most as many clusters as the set has classes (the paper's
    protocol clusters with k = the number of classes; more clusters than classes would inflate
    purity) and examples, inertia curves up to k = N at most. ConfigError for an empty set."""
    n = len(test)
    if n == 0:
        raise ConfigError("--audio: no utterance to evaluate")
    return replace(cfg, n_clusters=min(cfg.n_clusters, len(set(test.labels)), n), k_max=min(cfg.k_max, n))


def split_sets(data: ExperimentData, split: str) -> dict[str, ModalitySet]:
    """modality -> its examples in ``split`` (``data.sets[m][split]``) for every modality."""
    return {m: data.split(m, split) for m in data.modalities}


def default_stem(audio: str | Path | None) -> str:
    """File stem of an evaluation in its run folder: ``evaluation`` for the run's own test split,
    ``evaluation_audio_<stem>`` for the recordings at ``audio`` (``test.csv`` -> ``..._test``)."""
    if audio is None:
        return "evaluation"
    name = Path(audio).stem or Path(audio).resolve().name
    return "evaluation_audio_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def evaluate_run(
    run_dir: str | Path, audio: str | Path | None = None, layout: str = "auto",
    out: str | Path | None = None, progress: bool = True, curves: bool = True,
    data: ExperimentData | None = None,
) -> dict[str, Any]:
    """Evaluate a run on its own test split, or on every utterance of ``audio`` (folder/CSV).

    Writes ``evaluation.json`` and ``evaluation.md`` into the run folder (or ``out`` stem),
    atomically; the JSON records the ``weights_sha256`` of the model it was computed from. With
    ``audio`` and no ``out`` the stem is ``evaluation_audio_<name of audio>``, so that the run's
    own test-split evaluation is kept.
    ``data``: the run's already-loaded ExperimentData (its test split), to avoid loading it again.
    """
    run: Run = load_run(run_dir)
    cfg = run.config
    speech = "audio" in run.model.modalities
    if audio is None:
        data = data or load_experiment_data(cfg.data, progress=progress, normalizers=run.normalizers,
                                            speech=speech)
        test_sets, train_sets = split_sets(data, "test"), split_sets(data, "train")
        source = {"audio": cfg.data.audio, "split": cfg.data.split, "images": cfg.data.images}
        if cfg.data.loader != "auto":
            source["loader"] = cfg.data.loader
        if cfg.data.audio_extra:
            source["audio_extra"] = f"{cfg.data.audio_extra} (official split)"
        skipped = data.skipped
    else:
        speech_test, skipped = load_speech_set(audio, cfg.data, run.normalizer, layout, progress)
        test_sets, train_sets = {"audio": speech_test}, None
        source = {"audio": str(audio), "split": "all utterances"}
    eval_cfg = cfg.eval
    if audio is not None:  # recordings of any size: the protocol scaled down to what they allow
        eval_cfg = fitted_eval_config(cfg.eval, test_sets["audio"])
        curves = curves and eval_cfg.k_max >= MIN_CURVE
    result = evaluate_model(run.model, run.display_name, test_sets, eval_cfg,
                            train_sets=train_sets, curves=curves)
    result["eval"] = {"n_clusters": eval_cfg.n_clusters, "k_max": eval_cfg.k_max if curves else None,
                      "seed": eval_cfg.seed}
    if audio is None and (not speech or "label" in run.model.modalities):
        result["subsets"] = subset_evaluation(run, data, cfg.eval)
    result["source"] = source
    result["skipped_files"] = [{"path": p, "reason": r} for p, r in skipped]
    result["provenance"] = run.info.get("provenance", {})
    result["weights_sha256"] = run.weights_sha256
    base = Path(out) if out else Path(run_dir) / default_stem(audio)
    write_run_output(base.with_suffix(".json"), result, run)
    text = rows_to_markdown([PurityRow(**r) for r in result["rows"]]) + "\n"
    probes = probes_to_markdown(result)
    if probes:
        text += f"\nLinear probes (fitted on the training split, scored on the test split):\n\n{probes}\n"
    if "subsets" in result:
        text += "\n" + subsets_markdown(result["subsets"], run.display_name) + "\n"
    atomic_write(base.with_suffix(".md"), text)
    return result


def subset_evaluation(run: Run, data: ExperimentData, cfg: EvalConfig) -> dict[str, Any]:
    """:func:`dispart.evaluation.subsets.evaluate_subsets` on the run's test split, with the
    label judged by argmax and images/speech by the run's digit classifiers."""
    model = run.model
    batch, labels = test_examples(model, data, seed=cfg.seed)
    classes = test_classes(model, data)  # the class order of test_examples' labels
    judges: dict[str, Any] = {"label": label_judge}
    if any(m in model.modalities for m in ("image", "audio")) and len(model.modalities) > 1:
        clfs = run_classifiers(run, data)
        judges.update({m: classifier_judge(c, classes) for m, c in clfs.items()})
    return evaluate_subsets(model, batch, labels, judges, n_clusters=cfg.n_clusters, seed=cfg.seed)
