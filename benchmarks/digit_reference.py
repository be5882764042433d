"""A supervised reference for PVAE on speakers never heard (issue 13): how well can the digit of an
unseen speaker's utterance be read here when the digit labels ARE used?

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/digit_reference.py \
        [--config configs/pvae_arabic.yaml] [--epochs 50] [--seeds 0 1 2] [--augment warp]
        [--arch pvae|bilstm] [--held-out SPEAKER] [key=value ...]

PVAE learns z^s from speech paired with MNIST images by label, never seeing a digit label. This
script trains, on the same features and split (``--config``'s data: Arabic Speech Commands digit
words, 16 kHz log-Mel, per-utterance normalisation, 17 training speakers), PVAE's own speech
pre-encoder (``build_pre_encoder``: one LSTM of ``model.hidden`` units, its state at the last
frame) followed by a linear map to a 32-dim embedding (the size of z^s) and a linear softmax over
the ten digits, with cross-entropy (Adam, lr 1e-3, batch 64, random batches padded to their
longest utterance). It reports, after the last epoch (no model selection on test data), the
accuracy on the 5 unseen validation and 5 unseen test speakers and the k-means purity (k = 10,
``kmeans_purity``) of their embeddings: the numbers PVAE's z^s purity (target 95 %) can be set
against. ``--augment warp`` trains on ``data.augment=warp`` features (the library's VTLP-like warp);
``--arch bilstm`` takes PVAE's other speech reader instead (``model.sequence_encoder=bilstm``: two
bi-directional LSTM layers averaged over frames): is a better reader of these features what is missing?
``--held-out S`` (e.g. FSDD with ``--config configs/pvae_speaker_norm.yaml --audio
../shared/data/fsdd/recordings``): ``data.split=speaker:S``, the same fold as
``benchmarks/pvae_loso.py``'s; only that speaker is scored (there is no validation split). Once
every speaker of the corpus has a fold, their mean is written under ``<key>_heldout_mean``
(``--summarise-only --held-out any`` writes it again from the file without training).
Config overrides (``key=value``) follow the options, as for the other benchmarks.

Writes ``benchmarks/results/digit_reference.json`` (accuracies and purities as fractions in
[0, 1]), one entry per config + augmentation, with its command.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pvae_loso import corpus_speakers  # noqa: E402
from tagged_runs import results_lock  # noqa: E402

from dispart.batches.batch import Sequences  # noqa: E402
from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.batches.sets import ModalitySet  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.evaluation.clustering import kmeans_purity  # noqa: E402
from dispart.features.augment import RandomWarp  # noqa: E402
from dispart.files import atomic_write_json, read_json  # noqa: E402
from dispart.nn.modality import build_pre_encoder  # noqa: E402

SPEECH = "audio"
OUT = ROOT / "benchmarks" / "results" / "digit_reference.json"
EMBEDDING = 32  # the size of PVAE's z^s


class DigitNet(nn.Module):
    """One of PVAE's speech pre-encoders -> (B, 32) embedding -> (B, classes) logits."""

    def __init__(self, spec, hidden: int, classes: int, sequence_encoder: str = "lstm") -> None:
        super().__init__()
        self.pre = build_pre_encoder(spec, hidden, sequence_encoder)
        self.emb = nn.Linear(self.pre.out_dim, EMBEDDING)
        self.out = nn.Linear(EMBEDDING, classes)

    def embed(self, x: Sequences) -> Tensor:
        return self.emb(self.pre(x))

    def logits(self, embedding: Tensor) -> Tensor:
        return self.out(torch.relu(embedding))

    def forward(self, x: Sequences) -> Tensor:
        return self.logits(self.embed(x))


# --arch -> build_pre_encoder's sequence_encoder
ARCHS = {"pvae": "lstm", "bilstm": "bilstm", "conv_bilstm": "conv_bilstm"}


def scores(net: DigitNet, split: ModalitySet, classes: list[str]) -> dict[str, float]:
    """Accuracy and k-means purity of the embeddings of one split's utterances."""
    net.eval()
    with torch.no_grad():
        order = np.argsort([len(e) for e in split.examples])  # little padding per batch
        emb = np.zeros((len(order), EMBEDDING), dtype=np.float32)
        pred = np.zeros(len(order), dtype=np.int64)
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            x = Sequences.from_list([split.examples[j] for j in idx])
            e = net.embed(x)
            emb[idx] = e.numpy()
            pred[idx] = net.logits(e).argmax(1).numpy()
    net.train()
    y = np.array([classes.index(str(label)) for label in split.labels])
    return {"accuracy": round(float((pred == y).mean()), 4),
            "embedding_purity": round(kmeans_purity(emb, y), 4)}


def train_one(data, spec, hidden: int, epochs: int, seed: int, warp: RandomWarp | None,
              arch: str = "pvae", splits: tuple[str, ...] = ("val", "test")) -> dict:
    train = data.split(SPEECH, "train")
    classes = sorted({str(label) for label in train.labels}, key=lambda c: (len(c), c))
    y = torch.tensor([classes.index(str(label)) for label in train.labels])
    torch.manual_seed(seed)
    net = DigitNet(spec, hidden, len(classes), ARCHS[arch])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    curve: dict[str, dict] = {}
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(y), generator=gen)
        correct = 0
        for i in range(0, len(y), 64):
            b = perm[i:i + 64].tolist()
            seqs = [train.examples[j] for j in b]
            if warp is not None:
                seqs = [warp(s, epoch, j) for s, j in zip(seqs, b, strict=True)]
            logits = net(Sequences.from_list(seqs))
            loss = nn.functional.cross_entropy(logits, y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == y[b]).sum())
        if epoch % 10 == 0 or epoch == epochs:
            curve[str(epoch)] = {"train_accuracy": round(correct / len(y), 4),
                                 **{s: scores(net, data.split(SPEECH, s), classes) for s in splits}}
            print(f"  seed {seed} epoch {epoch}: {curve[str(epoch)]}", flush=True)
    return {**curve[str(epochs)], "by_epoch": curve}


def held_out_mean(result: dict, prefix: str, speakers: list[str]) -> dict | None:
    """Mean test accuracy and embedding purity over the folds ``<prefix>_heldout_<S>`` of
    ``result``, when every speaker S of ``speakers`` has one (else None)."""
    folds = {s: result.get(f"{prefix}_heldout_{s}") for s in speakers}
    if any(f is None for f in folds.values()):
        return None
    what = ("test_accuracy", "test_embedding_purity")
    return {**{k: round(float(np.mean([f[k] for f in folds.values()])), 4) for k in what},
            "by_speaker": {s: {k: f[k] for k in what} for s, f in folds.items()},
            "seeds": sorted({tuple(sorted(f["seeds"])) for f in folds.values()})}


def store_held_out_mean(result: dict, prefix: str, speakers: list[str]) -> None:
    """``result["<prefix>_heldout_mean"]`` = :func:`held_out_mean`, or no such key while a fold
    is missing."""
    mean = held_out_mean(result, prefix, speakers)
    result.pop(f"{prefix}_heldout_mean", None)
    if mean is not None:
        result[f"{prefix}_heldout_mean"] = mean


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "pvae_arabic.yaml"))
    ap.add_argument("--audio", default=str(ROOT.parent / "shared" / "data" / "arabic_speech_commands"))
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--augment", choices=["none", "warp"], default="none")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="pvae",
                    help="pvae: PVAE's speech pre-encoder (default); bilstm / conv_bilstm: "
                         "model.sequence_encoder=bilstm's / conv_bilstm's")
    ap.add_argument("--held-out", default="", help="hold out this speaker (data.split=speaker:S) and "
                                                   "score it alone: a leave-one-speaker-out fold")
    ap.add_argument("--summarise-only", action="store_true",
                    help="with --held-out: train nothing, write the mean over the folds in the file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not Path(args.audio).is_dir():
        raise SystemExit(f"digit_reference: no speech folder {args.audio} (--audio); skipped")
    fold = [f"data.split=speaker:{args.held_out}"] if args.held_out else []
    cfg = load_config(args.config, [f"data.audio={args.audio}", *fold, *args.overrides])
    prefix = f"{Path(args.config).stem}_{args.augment}" + ("" if args.arch == "pvae" else f"_{args.arch}")
    out_path = Path(args.out)
    if args.summarise_only:
        if not args.held_out:
            raise SystemExit("digit_reference: --summarise-only summarises --held-out folds; pass one")
        with results_lock(out_path):
            result = read_json(out_path)
            store_held_out_mean(result, prefix, corpus_speakers(cfg))
            atomic_write_json(out_path, result)
        mean = result.get(f"{prefix}_heldout_mean", "not every speaker has a fold")
        print(f"{prefix}_heldout_mean: {mean}")
        return 0
    data = load_experiment_data(cfg.data, progress=False, loaders=["speech"])
    splits = ("test",) if args.held_out else ("val", "test")
    if "val" not in data.sets[SPEECH] and not args.held_out:
        raise SystemExit(f"digit_reference: {args.audio} has no validation split (--held-out S: one "
                         "speaker's fold instead)")
    spk = {s: set(data.split(SPEECH, s).speakers) for s in ("train", *splits)}
    if spk["train"] & set().union(*(spk[s] for s in splits)):
        raise SystemExit("digit_reference: training speakers are also validation or test speakers")
    warp = RandomWarp(seed=cfg.train.seed) if args.augment == "warp" else None
    hidden = int(getattr(cfg.model, "hidden", 512))
    print(f"{len(data.split(SPEECH, 'train').examples)} training utterances of {len(spk['train'])} speakers; "
          f"unseen: " + ", ".join(f"{len(spk[s])} {s}" for s in splits) + " speakers", flush=True)
    t0 = time.perf_counter()
    runs = {str(s): train_one(data, data.spec(SPEECH), hidden, args.epochs, s, warp, args.arch, splits)
            for s in args.seeds}
    summary = {f"{split}_{what}": round(float(np.mean([r[split][what] for r in runs.values()])), 4)
               for split in splits for what in ("accuracy", "embedding_purity")}
    key = prefix + (f"_heldout_{args.held_out}" if args.held_out else "")
    with results_lock(out_path):  # folds run side by side write the same file
        result = read_json(out_path) if out_path.is_file() else {}
        result[key] = {
            **summary, "seeds": runs, "epochs": args.epochs, "arch": args.arch, "hidden": hidden,
            "overrides": [*fold, *args.overrides],
            "speakers": {s: len(v) for s, v in spk.items()},
            "minutes": round((time.perf_counter() - t0) / 60, 2),
            "command": "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/digit_reference.py "
                       + shlex.join(sys.argv[1:]),
        }
        result["about"] = ("supervised digit classifier (digit labels used) with PVAE's speech "
                           "pre-encoder, on the features and split of the config: accuracy and k-means "
                           "purity of a 32-dim embedding on the unseen validation and test speakers (with "
                           "--held-out: that speaker's utterances alone), after the last epoch; "
                           "fractions in [0, 1]; means over seeds")
        result["machine"] = {"python": platform.python_version(), "torch": torch.__version__,
                             "threads": args.threads}
        if args.held_out:
            store_held_out_mean(result, prefix, corpus_speakers(cfg))
        atomic_write_json(out_path, result)
    print(f"{key}: {summary}; wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
