"""PVAE training throughput on real FSDD + MNIST, and its share of this machine's fp32 matmul peak.

    python benchmarks/throughput.py [--data-dir ../shared/data] [--steps 20] [--batch-size 256]

Measures (1) the fp32 matmul peak (square matmuls of a few sizes, best GFLOP/s), (2) training
steps of PVAE with the paper's networks (loss + backward + Adam) on length-bucketed real batches,
(3) the model's FLOPs per step: torch's FlopCounterMode for everything it counts plus an exact
count of the LSTM matmuls, which FlopCounterMode does not see. Prints a summary and writes
benchmarks/results/throughput.json. Falls back to the embedded sample when the data is absent.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dispart.batches.modality import DIGIT_IMAGE, SPEECH
from dispart.batches.paired import LengthBucketSampler, PairedDigits, collate_paired
from dispart.batches.pipeline import load_experiment_data
from dispart.config import DataConfig
from dispart.files import atomic_write_json
from dispart.models import PVAE

OUT = Path(__file__).parent / "results" / "throughput.json"


def matmul_peak(seconds: float = 1.0) -> dict[str, float]:
    """Best fp32 GFLOP/s of square matmuls (n = 1024..4096) through torch's BLAS (``torch.mm``,
    MKL here) and through oneDNN (``mkldnn_linear``, the library behind the CPU LSTM kernels).

    On AMD CPUs MKL's sgemm runs AVX2 code, about half of what oneDNN reaches with AVX-512, so the
    machine's peak is the larger of the two.
    """
    best = {"torch_mm": 0.0, "onednn": 0.0}
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        am, bm = a.to_mkldnn(), b.to_mkldnn()
        ops = {"torch_mm": lambda a=a, b=b: torch.mm(a, b),
               "onednn": lambda am=am, bm=bm: torch._C._nn.mkldnn_linear(am, bm)}
        for name, op in ops.items():
            op()
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                op()
                reps += 1
            best[name] = max(best[name], 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def lstm_flops(lstm: torch.nn.LSTM, steps: int, input_grad: bool) -> int:
    """Matmul FLOPs of forward + backward of a one-layer LSTM over ``steps`` sample-frames."""
    h, i = lstm.hidden_size, lstm.input_size
    fwd = 2 * 4 * h * (i + h)
    bwd = 2 * 4 * h * (i + h) + 2 * 4 * h * h + (2 * 4 * h * i if input_grad else 0)
    return (fwd + bwd) * steps


def step_flops(model: PVAE, batch: dict) -> int:
    """FLOPs of one training step (forward + backward)."""
    with FlopCounterMode(display=False) as counter:
        model.loss(batch).loss.backward()
    model.zero_grad()
    frames = int(batch["audio"].data.shape[0] * batch["audio"].data.shape[1])  # padded frames run
    n = counter.get_total_flops()
    n += lstm_flops(model.joint.pre["audio"].lstm, frames, input_grad=False)
    n += lstm_flops(model.unimodal["audio"].pre.lstm, frames, input_grad=False)
    n += lstm_flops(model.decoders["audio"].lstm, frames, input_grad=True)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).parents[2] / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    if (data_dir / "fsdd" / "recordings").is_dir():
        cfg = DataConfig(audio=str(data_dir / "fsdd" / "recordings"),
                         images=str(data_dir / "mnist" / "mnist.npz"))
        source = str(data_dir)
    else:
        print(f"{data_dir} not found: measuring on the embedded sample instead")
        cfg, source = DataConfig(), "embedded sample"
    data = load_experiment_data(cfg, progress=False)
    speech, images = data.split("audio", "train"), data.split("image", "train")
    ds = PairedDigits(speech.examples, speech.labels, images.examples, images.labels, seed=0)
    sampler = LengthBucketSampler(ds.lengths, args.batch_size, seed=0)
    batches = [collate_paired([ds[i] for i in idx]) for idx in sampler]
    batches = [{k: b[k] for k in ("audio", "image")} for b in batches]

    torch.manual_seed(0)
    model = PVAE([SPEECH, DIGIT_IMAGE])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.95, 0.999))
    flops = {id(b): step_flops(model, b) for b in batches}
    for b in batches[:2]:  # warm-up
        opt.zero_grad()
        model.loss(b).loss.backward()
        opt.step()
    samples, total_flops, valid, padded = 0, 0, 0, 0
    t0 = time.perf_counter()
    for s in range(args.steps):
        b = batches[s % len(batches)]
        opt.zero_grad()
        model.loss(b).loss.backward()
        opt.step()
        samples += b["image"].shape[0]
        total_flops += flops[id(b)]
        valid += int(b["audio"].lengths.sum())
        padded += int(b["audio"].data.shape[0] * b["audio"].data.shape[1])
    seconds = time.perf_counter() - t0
    peaks = matmul_peak()
    peak = max(peaks.values())
    achieved = total_flops / seconds / 1e9
    result = {
        "data": source, "batch_size": args.batch_size, "steps": args.steps,
        "samples_per_second": samples / seconds,
        "seconds_per_epoch": len(ds) / (samples / seconds),
        "gflop_per_sample": total_flops / samples / 1e9,
        "achieved_gflops": achieved, "matmul_peak_gflops": peak,
        "matmul_torch_mm_gflops": peaks["torch_mm"], "matmul_onednn_gflops": peaks["onednn"],
        "share_of_peak": achieved / peak,
        "padding_overhead": padded / valid - 1,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    atomic_write_json(OUT, result)
    for k, v in result.items():
        print(f"{k:>20}: {v:.4g}" if isinstance(v, float) else f"{k:>20}: {v}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
