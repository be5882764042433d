"""A supervised reference for DSAE's speaker verification (issue 10): how low can the EER go here?

    OMP_NUM_THREADS=1 python benchmarks/speaker_reference.py [--with-val] [--epochs 30] [--seeds 0 1 2]

DSAE learns f without speaker labels. This script asks what the *same data and protocol* give when
the speaker labels ARE used: a speaker classifier (per-frame 256-unit ReLU layer -> bi-LSTM of 256
units per direction -> mean over the 20 frames -> 64-dim embedding -> softmax over the training
speakers), trained with cross-entropy (Adam, lr 1e-3, batch 256) on the training speakers' 200 ms
segments of configs/dsae_speech.yaml (Arabic Speech Commands, 200-bin log-magnitude spectra);
the 64-dim embedding then goes through exactly DSAE's protocol
(``dispart.evaluation.verification``): mean over each test utterance's segments, cosine scores of
all pairs of the 5 unseen test speakers' utterances, EER. ``--with-val`` adds the 5 validation
speakers to training (22 speakers). The EER after the last epoch is reported (no test-set model
selection), per seed, with the mean.

Writes ``benchmarks/results/speaker_reference.json`` (EERs are fractions in [0, 1]).
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

from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.batches.sets import ModalitySet  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.evaluation.verification import pool_by_group, speaker_verification  # noqa: E402
from dispart.files import atomic_write_json  # noqa: E402

MODALITY = "speech"
OUT = ROOT / "benchmarks" / "results" / "speaker_reference.json"


class SpeakerNet(nn.Module):
    """(B, T, D) segments -> (B, emb) embeddings; ``forward`` gives (B, n_speakers) logits."""

    def __init__(self, n_bins: int, n_speakers: int, hidden: int = 256, emb: int = 64) -> None:
        super().__init__()
        self.frame = nn.Sequential(nn.Linear(n_bins, hidden), nn.ReLU())
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.emb = nn.Linear(2 * hidden, emb)
        self.out = nn.Linear(emb, n_speakers)

    def embed(self, x: Tensor) -> Tensor:
        h, _ = self.lstm(self.frame(x))
        return self.emb(h.mean(dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.embed(x)))


def test_eer(net: SpeakerNet, test: ModalitySet, x: Tensor) -> float:
    """EER of the net's embeddings pooled per test utterance (cosine, all pairs)."""
    net.eval()
    with torch.no_grad():
        e = torch.cat([net.embed(x[i:i + 1024]) for i in range(0, len(x), 1024)]).numpy()
    net.train()
    utts, emb = pool_by_group(e, test.meta["utterance"])
    speaker_of = dict(zip(test.meta["utterance"], test.speakers, strict=True))
    return speaker_verification(emb, [speaker_of[u] for u in utts]).eer


def train_one(x: Tensor, y: Tensor, n_speakers: int, test: ModalitySet, xt: Tensor, epochs: int,
              seed: int) -> dict[str, float]:
    """Train one SpeakerNet from ``seed``; the EER after every 5th epoch and the final accuracy."""
    torch.manual_seed(seed)
    net = SpeakerNet(x.shape[-1], n_speakers)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    curve = {}
    acc = 0.0
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(x))
        correct = 0
        for i in range(0, len(x), 256):
            b = perm[i:i + 256]
            logits = net(x[b])
            loss = nn.functional.cross_entropy(logits, y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == y[b]).sum())
        acc = correct / len(x)
        if epoch % 5 == 0 or epoch == epochs:
            curve[str(epoch)] = round(test_eer(net, test, xt), 5)
            print(f"  seed {seed} epoch {epoch}: train accuracy {acc:.3f}, test EER {curve[str(epoch)]:.4f}",
                  flush=True)
    return {"eer": curve[str(epochs)], "eer_by_epoch": curve, "train_accuracy": round(acc, 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "dsae_speech.yaml"))
    ap.add_argument("--audio", default=str(ROOT.parent / "shared" / "data" / "arabic_speech_commands"))
    ap.add_argument("--with-val", action="store_true", help="train on the validation speakers too")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not Path(args.audio).is_dir():
        raise SystemExit(f"speaker_reference: no speech folder {args.audio} (--audio)")
    cfg = load_config(args.config, [f"data.audio={args.audio}"])
    data = load_experiment_data(cfg.data, progress=False, loaders=["speech_segments"])
    splits = ["train", "val"] if args.with_val and "val" in data.sets[MODALITY] else ["train"]
    sets = [data.split(MODALITY, s) for s in splits]
    test = data.split(MODALITY, "test")
    speakers = [s for ms in sets for s in ms.speakers]
    names = sorted(set(speakers))
    if set(names) & set(test.speakers):
        raise SystemExit("speaker_reference: training and test speakers overlap")
    x = torch.tensor(np.concatenate([np.stack(ms.examples) for ms in sets]), dtype=torch.float32)
    y = torch.tensor([names.index(s) for s in speakers])
    xt = torch.tensor(np.stack(test.examples), dtype=torch.float32)
    print(f"{len(x)} training segments of {len(names)} speakers ({'+'.join(splits)}), {len(xt)} test "
          f"segments of {len(set(test.speakers))} unseen speakers", flush=True)
    t0 = time.perf_counter()
    runs = {str(seed): train_one(x, y, len(names), test, xt, args.epochs, seed) for seed in args.seeds}
    eers = [r["eer"] for r in runs.values()]
    key = "train_and_val_speakers" if len(splits) == 2 else "train_speakers"
    out_path = Path(args.out)
    from dispart.files import read_json

    result = read_json(out_path) if out_path.is_file() else {}
    result[key] = {
        "eer_mean": round(float(np.mean(eers)), 5), "eer_min": round(min(eers), 5),
        "eer_max": round(max(eers), 5), "seeds": runs, "n_train_speakers": len(names),
        "n_train_segments": len(x), "n_test_utterances": len(set(test.meta["utterance"])),
        "epochs": args.epochs, "minutes": round((time.perf_counter() - t0) / 60, 2),
        "command": "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/speaker_reference.py "
                   + shlex.join(sys.argv[1:]),
    }
    result["about"] = ("supervised speaker-classifier embeddings (speaker labels used) scored with DSAE's "
                       "verification protocol on the same data: a reference for how low an EER the data "
                       "allow; EERs are fractions in [0, 1]")
    result["machine"] = {"python": platform.python_version(), "torch": torch.__version__,
                         "threads": args.threads}
    atomic_write_json(out_path, result)
    print(f"{key}: EER mean {result[key]['eer_mean']:.4f} (min {min(eers):.4f}, max {max(eers):.4f}); "
          f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
