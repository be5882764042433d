"""``dispart erase``: a trained PVAE run with the speaker linearly erased from z^s.

The run's training utterances are encoded by r_audio (speech alone, posterior means of z^s, as
the evaluation's probes read them); a :class:`~dispart.models.erasure.GroupEraser` is fitted on
them with the utterances' speakers as groups, and the same affine map is folded into every z^s
head of the model (q's and each r_m's, ``GaussianHead.compose_mean``), so that every z^s the model
infers, from any modality, lives in one erased space and the decoders read it from there. The
result is a new run folder of the usual format (no new code path at load time), with run.json
"erasure" saying what was fitted on what. It uses the speaker labels of the training split (as
``model.alpha_speaker`` does) and nothing of the test split.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dispart.batches.pipeline import load_experiment_data
from dispart.errors import ConfigError, RunDirError
from dispart.evaluation.latents import modality_latents
from dispart.models.erasure import fit_group_eraser
from dispart.models.pvae import PVAE, SEMANTIC
from dispart.runs import load_run, save_run


def group_mean_gap(z: np.ndarray, groups: np.ndarray) -> float:
    """Largest distance between a group's mean latent and the overall mean (0 after erasure)."""
    mean = z.mean(0)
    return float(max(np.linalg.norm(z[groups == g].mean(0) - mean) for g in np.unique(groups)))


def erase_speaker(run_dir: str | Path, out: str | Path, method: str = "leace") -> dict[str, Any]:
    """Write ``out`` (a new folder): the run at ``run_dir`` with the training speakers linearly
    erased from z^s (``method``: "leace" or "orth", :func:`fit_group_eraser`). Returns the run.json
    "erasure" record. RunDirError for a run that is not a PVAE over speech, ConfigError when its
    training split has fewer than two speakers."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists():
        raise RunDirError(f"dispart erase: {out} exists; name a new folder")
    run = load_run(run_dir)
    if not isinstance(run.model, PVAE) or "audio" not in run.model.modalities:
        raise RunDirError(f"{run_dir}: dispart erase edits the z^s heads of a PVAE over speech; this "
                          f"run's model is {run.model.name} over {list(run.model.modalities)}")
    data = load_experiment_data(run.config.data, progress=False, normalizer=run.normalizer)
    train = data.split("audio", "train")
    speakers = np.asarray(train.speakers if train.speakers is not None else [])
    if len(set(speakers.tolist())) < 2:
        raise ConfigError(f"dispart erase: the training split of {run_dir} names "
                          f"{len(set(speakers.tolist()))} speaker(s); erasing the speaker needs two or more")
    before = modality_latents(run.model, "audio", train.examples)[SEMANTIC]
    eraser = fit_group_eraser(before, speakers, method=method)
    matrix, offset = eraser.as_affine()
    for head in run.model.semantic_heads():
        head.compose_mean(matrix, offset)
    after = modality_latents(run.model, "audio", train.examples)[SEMANTIC]
    record = {
        "what": "speaker linearly erased from z^s (dispart.models.erasure), fitted on r_audio's z^s "
                "means of the training utterances", "method": method,
        "source_run": str(run_dir), "source_weights_sha256": run.weights_sha256,
        "utterances": len(speakers), "speakers": sorted(set(speakers.tolist())), "rank": eraser.rank,
        "speaker_mean_gap_before": round(group_mean_gap(before, speakers), 6),
        "speaker_mean_gap_after": round(group_mean_gap(after, speakers), 6),
    }
    save_run(out, run.config, run.model, run.normalizer, run.fbank, run.info.get("data", {}),
             normalizers=run.normalizers, extra={"erasure": record})
    if (run_dir / "classifiers").is_dir():  # the judges depend on the data only
        shutil.copytree(run_dir / "classifiers", out / "classifiers")
    return record
