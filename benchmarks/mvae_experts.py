"""Which latent dimensions each MVAE expert uses: the precision of the image and label experts per
dimension on MNIST test images, and where they overlap.

    python benchmarks/mvae_experts.py RUN [RUN ...] [--n 2000] [--results mvae_experts]

For every run (an MVAE over "image" and "label"), the experts' precisions exp(-log-variance) are
averaged over the first ``--n`` test examples, per latent dimension. A dimension is *used* by an
expert where that mean precision exceeds the prior's (1). Under the product of experts the
label's share of the joint precision in a dimension is T_label / (1 + T_image + T_label): where
the label holds most of it and the image expert's precision is near 0, q(z | image) leaves the
dimension at the prior, so a label read from those dimensions cannot be inferred from an image;
``image_to_label`` is that inference's accuracy on the whole test set.
Prints one line per run and writes benchmarks/results/RESULTS.json with the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's dispart, installed or not

from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.files import atomic_write_json  # noqa: E402
from dispart.runs import load_run  # noqa: E402


def expert_dimensions(image_precision: np.ndarray, label_precision: np.ndarray) -> dict:
    """Per-dimension mean precisions (L,) of the two experts -> counts of the dimensions each uses
    (precision > 1), of those both use, of those where the label holds over half the joint
    precision, and the image expert's largest precision among the latter."""
    share = label_precision / (1.0 + image_precision + label_precision)
    label_held = share > 0.5
    return {"dims": int(len(share)), "image_used": int((image_precision > 1).sum()),
            "label_used": int((label_precision > 1).sum()),
            "both_used": int(((image_precision > 1) & (label_precision > 1)).sum()),
            "label_held": int(label_held.sum()),
            "image_precision_max_where_label_held": (round(float(image_precision[label_held].max()), 4)
                                                     if label_held.any() else None)}


def measure(run: Path, n: int) -> dict:
    r = load_run(run)
    if sorted(r.model.modalities) != ["image", "label"] or not hasattr(r.model, "expert_params"):
        raise SystemExit(f"{run}: needs an MVAE over image and label, got {r.model.name} over "
                         f"{r.model.modalities}")
    data = load_experiment_data(r.config.data, progress=False, speech=False)
    test = data.split("image", "test")
    shape = r.model.specs["image"].shape
    x = torch.as_tensor(np.asarray(test.examples[:n], dtype=np.float32)).reshape(-1, *shape)
    y = torch.as_tensor([int(v) for v in test.labels[:n]])
    with torch.no_grad():
        _, image_logvar = r.model.expert_params("image", x)
        _, label_logvar = r.model.expert_params("label", y)
    out = expert_dimensions((-image_logvar).exp().mean(0).numpy(), (-label_logvar).exp().mean(0).numpy())
    return {"run": str(run), "n": int(len(y)), **out, "image_to_label": image_to_label(r.model, test, shape)}


@torch.no_grad()
def image_to_label(model: torch.nn.Module, test: object, shape: tuple[int, ...]) -> float:
    """Accuracy over the whole test set of the label decoder's argmax at the mean of q(z | image)
    (what benchmarks/mvae_reference.py measures for the reference code)."""
    x = torch.as_tensor(np.asarray(test.examples, dtype=np.float32)).reshape(-1, *shape)
    y = torch.as_tensor([int(v) for v in test.labels])
    mean = model.encode({"image": x})["z"].mean
    return round(float((model.decoders["label"](mean).argmax(1) == y).float().mean()), 4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=2000, help="test examples averaged over")
    ap.add_argument("--results", default=None, help="also write benchmarks/results/RESULTS.json")
    args = ap.parse_args()
    rows = [measure(Path(run), args.n) for run in args.runs]
    for row in rows:
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.results:
        atomic_write_json(Path(__file__).parent / "results" / f"{args.results}.json", {
            "what": "MVAE experts' mean precision per latent dimension on MNIST test images: the "
                    "dimensions each expert uses (precision > 1, the prior's) and their overlap; "
                    "image_to_label: argmax of the label decoder at the mean of q(z | image), "
                    "accuracy (fraction) on the whole test set",
            "command": shlex.join(["python", "benchmarks/mvae_experts.py", *sys.argv[1:]]),
            "runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
