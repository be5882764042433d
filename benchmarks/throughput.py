"""Training throughput on this machine: PVAE on real FSDD + MNIST, and DSAE on speech and Sprites.

    python benchmarks/throughput.py [--data-dir ../shared/data] [--steps 20] [--batch-size 256]
                                    [--models pvae,dsae] [--dsae-steps 10] [--sprites-batch 8]
                                    [--decoder hoisted|fused|both] [--precision fp32|bf16|both]
                                    [--profile] [--kernels]

PVAE: measures (1) the fp32 matmul peak (square matmuls of a few sizes, best GFLOP/s), (2)
training steps of PVAE with the paper's networks (loss + backward + Adam) on length-bucketed real
batches, (3) the model's FLOPs per step: torch's FlopCounterMode for everything it counts plus an
exact count of the LSTM matmuls of the fused oneDNN kernels, which FlopCounterMode does not see.
Falls back to the embedded sample when the data is absent.

The speech decoder's LSTM (``SequenceDecoder``) runs in training either as the library does
(``--decoder hoisted``: its constant input projected once per sequence, the recurrence a loop of
addmm's, counted by FlopCounterMode) or as the fused kernel on the input repeated at every step
(``--decoder fused``, the implementation before issue 13). ``--decoder both`` alternates the two
step by step on the same batches and model (the same load for both, under a busy machine) and
records each one's throughput and the median of the paired step-time ratios; its top-level keys
are the hoisted decoder's. ``--precision bf16`` runs each step's forward under
``torch.autocast("cpu", torch.bfloat16)``, what ``train.precision=bf16-mixed`` makes Lightning do
(matmuls, convolutions and LSTMs in bfloat16, weights and Adam in fp32); ``--precision both``
alternates fp32 and bf16 steps like ``--decoder both`` (``"precision_comparison"``, with the
machine's bf16 matmul peak beside the fp32 one; the top-level keys stay fp32's). FLOPs are counted
once, in fp32: the same operations, whatever their number format.
``--profile`` adds torch.profiler's top operators of two training steps;
``--kernels`` the share of peak that the step's LSTM kernels reach on their own (``"kernels"``).

DSAE (``"dsae"`` in the JSON): training steps (forward + backward timed apart from the Adam
update) of the models of configs/dsae_speech.yaml (200-bin log spectrum, T = 20, batch 256) and
configs/dsae_sprites.yaml (T = 8 frames of 64x64x3, a small batch), each with the q of its config.
Every sequence has the full T frames, so a step's compute does not depend on the values: the
inputs are seeded random tensors of the data's shapes (no data files needed). FLOPs per step as
for PVAE (FlopCounterMode + every LSTM of the model over B x T frames per direction).

Prints a summary and writes benchmarks/results/throughput.json (PVAE's keys at the top level, as
before; ``"dsae"``; ``"commands"``). With ``--models dsae`` the PVAE keys already in the file are
kept as they were, and so is ``"dsae"`` with ``--models pvae``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import cpu_model  # noqa: E402

from dispart.batches.batch import Sequences  # noqa: E402
from dispart.batches.modality import DIGIT_IMAGE, SPEECH, ModalitySpec  # noqa: E402
from dispart.batches.paired import LengthBucketSampler, PairedDigits, collate_paired  # noqa: E402
from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.config import DataConfig, load_config, model_params  # noqa: E402
from dispart.files import atomic_write_json  # noqa: E402
from dispart.models import DSAE, PVAE, build_model  # noqa: E402
from dispart.nn.decoders import SequenceDecoder  # noqa: E402
from dispart.training.run import cpu_runs_bf16_lstm  # noqa: E402

OUT = Path(__file__).parent / "results" / "throughput.json"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = ("pvae", "dsae")
# DSAE settings measured: config, modality spec of the data, frames per sequence T
DSAE_SETTINGS = {
    "speech": (CONFIGS / "dsae_speech.yaml",
               ModalitySpec("speech", "sequence", (200,), likelihood="gaussian", frame_rate=100.0), 20),
    "sprites": (CONFIGS / "dsae_sprites.yaml",
                ModalitySpec("video", "frames", (3, 64, 64), likelihood="gaussian", frame_rate=10.0), 8),
}


MATMUL_SIZES = (1024, 2048, 4096)


def matmul_gflops(op, n: int, seconds: float) -> float:
    """GFLOP/s of ``op()``, an (n x n) @ (n x n) matmul, run for ``seconds`` after one warm-up."""
    op()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        op()
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def matmul_peak(seconds: float = 1.0) -> dict[str, float]:
    """Best fp32 GFLOP/s of square matmuls (n = 1024..4096) through torch's BLAS (``torch.mm``,
    MKL here) and through oneDNN (``mkldnn_linear``, the library behind the CPU LSTM kernels).

    On AMD CPUs MKL's sgemm runs AVX2 code, about half of what oneDNN reaches with AVX-512, so the
    machine's peak is the larger of the two.
    """
    best = {"torch_mm": 0.0, "onednn": 0.0}
    for n in MATMUL_SIZES:
        a, b = torch.randn(n, n), torch.randn(n, n)
        am, bm = a.to_mkldnn(), b.to_mkldnn()
        ops = {"torch_mm": lambda a=a, b=b: torch.mm(a, b),
               "onednn": lambda am=am, bm=bm: torch._C._nn.mkldnn_linear(am, bm)}
        for name, op in ops.items():
            best[name] = max(best[name], matmul_gflops(op, n, seconds))
    return best


def bf16_matmul_peak(seconds: float = 1.0) -> float:
    """Best bfloat16 GFLOP/s of square ``torch.mm`` (n = 1024..4096; oneDNN, AMX where present)."""
    best = 0.0
    for n in MATMUL_SIZES:
        a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
        best = max(best, matmul_gflops(lambda a=a, b=b: torch.mm(a, b), n, seconds))
    return best


def train_step(model: PVAE, opt: torch.optim.Optimizer, batch: dict, bf16: bool) -> None:
    """One training step: loss and backward (the forward under bf16 autocast if ``bf16``), Adam."""
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model.loss(batch).loss
    loss.backward()
    opt.step()


def lstm_flops(lstm: torch.nn.LSTM, steps: int, input_grad: bool) -> int:
    """Matmul FLOPs of forward + backward of a one-layer LSTM over ``steps`` sample-frames."""
    h, i = lstm.hidden_size, lstm.input_size
    fwd = 2 * 4 * h * (i + h)
    bwd = 2 * 4 * h * (i + h) + 2 * 4 * h * h + (2 * 4 * h * i if input_grad else 0)
    return (fwd + bwd) * steps


def step_flops(model: PVAE, batch: dict) -> int:
    """FLOPs of one training step (forward + backward): FlopCounterMode, plus the fused LSTM
    kernels it does not see (a hoisted decoder's matmuls are ordinary ops it counts)."""
    with FlopCounterMode(display=False) as counter:
        model.loss(batch).loss.backward()
    model.zero_grad()
    frames = int(batch["audio"].data.shape[0] * batch["audio"].data.shape[1])  # padded frames run
    n = counter.get_total_flops()
    n += lstm_flops(model.joint.pre["audio"].lstm, frames, input_grad=False)
    n += lstm_flops(model.unimodal["audio"].pre.lstm, frames, input_grad=False)
    decoder = model.decoders["audio"]
    if not decoder.hoist:
        n += lstm_flops(decoder.lstm, frames, input_grad=True)
    return n


def set_decoder(model: PVAE, variant: str) -> None:
    """Train the speech decoder's LSTM "hoisted" (the library's default) or "fused"."""
    for m in model.modules():
        if isinstance(m, SequenceDecoder):
            m.hoist = variant == "hoisted"


def profile_steps(model: PVAE, opt: torch.optim.Optimizer, batch: dict, top: int = 12,
                  bf16: bool = False) -> dict:
    """torch.profiler's top operators (self CPU time) over two training steps on ``batch``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            train_step(model, opt, batch, bf16)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {"frames_per_sequence": int(batch["audio"].data.shape[1]), "steps": 2,
            "total_seconds": total / 1e6,
            "top": [{"op": e.key, "calls": e.count, "self_seconds": round(e.self_cpu_time_total / 1e6, 4),
                     "share": round(e.self_cpu_time_total / total, 4)} for e in events[:top]]}


def kernel_shares(peak: float, batch: int = 256, frames: int = 40, reps: int = 5) -> dict:
    """GFLOP/s and share of ``peak`` of the LSTM kernels one PVAE step spends most of its time in
    (the paper's sizes, a batch of ``batch`` sequences of ``frames`` frames, forward + backward):
    the fused oneDNN LSTM of a speech pre-encoder (80 -> 512; the input needs no gradient) and
    the speech decoder's hoisted recurrence (:meth:`SequenceDecoder.hoisted_states`, 64 -> 512).
    The best of ``reps`` timings each: what these kernels reach on this machine bounds the step."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(SPEECH.shape[0], 512, batch_first=True)
    x = torch.randn(batch, frames, SPEECH.shape[0])
    decoder = SequenceDecoder(64, SPEECH.shape[0], 512)
    z = torch.randn(batch, 64, requires_grad=True)

    def encoder() -> None:
        out, _ = lstm(x)
        out[:, -1].sum().backward()

    def recurrence() -> None:
        decoder.hoisted_states(z, frames).sum().backward()

    counter_flops = {}
    with FlopCounterMode(display=False) as counter:
        recurrence()
    counter_flops["decoder_recurrence"] = counter.get_total_flops()
    counter_flops["encoder_lstm"] = lstm_flops(lstm, batch * frames, input_grad=False)
    out = {"batch": batch, "frames": frames, "reps": reps}
    for name, fn in (("encoder_lstm", encoder), ("decoder_recurrence", recurrence)):
        fn()
        best = min(_timed(fn) for _ in range(reps))
        gflops = counter_flops[name] / best / 1e9
        out[name] = {"seconds": best, "gflop": counter_flops[name] / 1e9, "achieved_gflops": gflops,
                     "share_of_peak": gflops / peak}
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def dsae_step_flops(model: DSAE, batch: dict) -> int:
    """FLOPs of one DSAE training step (forward + backward): FlopCounterMode plus every LSTM of
    the model, each run over B x T frames per direction (all rows have T frames)."""
    with FlopCounterMode(display=False) as counter:
        model.loss(batch).loss.backward()
    model.zero_grad()
    x = batch[model.modality].data
    frames = int(x.shape[0] * x.shape[1])
    n = counter.get_total_flops()
    for lstm in (m for m in model.modules() if isinstance(m, torch.nn.LSTM)):
        n += lstm_flops(lstm, frames, input_grad=True) * (2 if lstm.bidirectional else 1)
    return n


def dsae_throughput(setting: str, batch_size: int, steps: int, peak: float | None) -> dict:
    """Train-step throughput of the DSAE of ``DSAE_SETTINGS[setting]`` at ``batch_size``."""
    config, spec, t = DSAE_SETTINGS[setting]
    cfg = load_config(config)
    torch.manual_seed(0)
    hparams = {"name": "dsae", "modalities": [spec.to_dict()], **dataclasses.asdict(model_params(cfg.model))}
    model = build_model(hparams)
    assert isinstance(model, DSAE)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, t, *spec.shape, generator=g)
    batch = {spec.name: Sequences(x, torch.full((batch_size,), t))}
    flops = dsae_step_flops(model, batch)
    for _ in range(2):  # warm-up
        opt.zero_grad()
        model.loss(batch).loss.backward()
        opt.step()
    fwd_bwd, update = 0.0, 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        model.loss(batch).loss.backward()
        t1 = time.perf_counter()
        opt.step()
        fwd_bwd, update = fwd_bwd + t1 - t0, update + time.perf_counter() - t1
    seconds = fwd_bwd + update
    out = {
        "config": str(config.relative_to(config.parents[1])), "q": model.q,
        "frame": list(spec.shape), "T": t, "batch_size": batch_size, "steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps_per_second": steps / seconds, "sequences_per_second": steps * batch_size / seconds,
        "seconds_per_step": seconds / steps, "seconds_forward_backward": fwd_bwd / steps,
        "seconds_adam": update / steps, "gflop_per_sequence": flops / batch_size / 1e9,
        "achieved_gflops": flops * steps / seconds / 1e9,
    }
    if peak:
        out["share_of_peak"] = out["achieved_gflops"] / peak
    return out


def show(d: dict, prefix: str = "") -> None:
    """Print nested results one value a line (floats to 4 significant digits)."""
    for k, v in d.items():
        if isinstance(v, dict):
            show(v, f"{prefix}{k}.")
        else:
            print(f"{prefix + k:>32}: {v:.4g}" if isinstance(v, float) else f"{prefix + k:>32}: {v}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).parents[2] / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    ap.add_argument("--dsae-steps", type=int, default=10, help="timed steps per DSAE setting")
    ap.add_argument("--speech-batch", type=int, default=256, help="DSAE speech batch (the config's)")
    ap.add_argument("--sprites-batch", type=int, default=8, help="DSAE sprites batch (small)")
    ap.add_argument("--decoder", default="hoisted", choices=["hoisted", "fused", "both"],
                    help="PVAE speech decoder LSTM in training (both: alternate, paired ratios)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "both"],
                    help="PVAE: fp32, or the forward under bf16 autocast (both: alternate, paired ratios)")
    ap.add_argument("--profile", action="store_true", help="PVAE: torch.profiler top operators")
    ap.add_argument("--kernels", action="store_true",
                    help="PVAE: share of peak of its LSTM kernels alone (encoder, decoder recurrence)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    if not models or any(m not in MODELS for m in models):
        ap.error(f"--models: choose from {MODELS}, got {args.models!r}")
    if args.decoder == "both" and args.precision == "both":
        ap.error("--decoder both and --precision both: compare one thing at a time")
    if args.precision != "fp32" and not cpu_runs_bf16_lstm():
        ap.error(f"--precision {args.precision}: this CPU cannot run PVAE's LSTMs in bfloat16 "
                 "(oneDNN needs AVX512-BF16 or AMX)")
    for flag in ("steps", "dsae_steps", "speech_batch", "sprites_batch", "batch_size"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    load_before = os.getloadavg()[0]
    if "pvae" in models:
        result = pvae_throughput(args)
    else:  # PVAE's keys as an earlier run measured them
        result = {k: v for k, v in previous.items()
                  if k not in ("dsae", "commands", "load_average", "pvae_measured_by")}
        result["pvae_measured_by"] = "an earlier run (not this command)"
    if "dsae" in models:
        # share of peak only against a peak measured in this run, under the same load
        peak = result.get("matmul_peak_gflops") if "pvae" in models else None
        result["dsae"] = {
            "inputs": "seeded random tensors of the data's shapes (every row has T frames)",
            "speech": dsae_throughput("speech", args.speech_batch, args.dsae_steps, peak),
            "sprites": dsae_throughput("sprites", args.sprites_batch, args.dsae_steps, peak),
            "threads": torch.get_num_threads()}
    elif "dsae" in previous:
        result["dsae"] = previous["dsae"]
    result["load_average"] = {"before": load_before, "after": os.getloadavg()[0],
                              "cores": os.cpu_count()}
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ)
    result["commands"] = [f"{env} python benchmarks/throughput.py ".lstrip() + shlex.join(sys.argv[1:])]
    atomic_write_json(out, result)
    show(result)
    print(f"wrote {out}")


def pvae_throughput(args: argparse.Namespace) -> dict:
    """PVAE training throughput and the machine's matmul peak (the top-level keys of the JSON)."""
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
    # (name, decoder, bf16) of each variant timed; the first one's numbers are the top-level keys
    if args.decoder == "both":
        variants = [(d, d, args.precision == "bf16") for d in ("hoisted", "fused")]
    elif args.precision == "both":
        variants = [(p, args.decoder, p == "bf16") for p in ("fp32", "bf16")]
    else:
        variants = [(args.decoder, args.decoder, args.precision == "bf16")]
    flops, by_decoder = {}, {}  # FLOPs depend on the decoder only: counted once per decoder
    for v, decoder, bf16 in variants:
        set_decoder(model, decoder)
        if decoder not in by_decoder:
            by_decoder[decoder] = {id(b): step_flops(model, b) for b in batches}
        flops[v] = by_decoder[decoder]
        for b in batches[:2]:  # warm-up
            train_step(model, opt, b, bf16)
    names = [v for v, _, _ in variants]
    runs = {v: {"seconds": 0.0, "samples": 0, "flops": 0} for v in names}
    step_seconds: dict[str, list[float]] = {v: [] for v in names}
    valid, padded = 0, 0
    for s in range(args.steps):
        b = batches[s % len(batches)]
        for v, decoder, bf16 in variants:
            set_decoder(model, decoder)
            t0 = time.perf_counter()
            train_step(model, opt, b, bf16)
            dt = time.perf_counter() - t0
            step_seconds[v].append(dt)
            runs[v]["seconds"] += dt
            runs[v]["samples"] += b["image"].shape[0]
            runs[v]["flops"] += flops[v][id(b)]
        valid += int(b["audio"].lengths.sum())
        padded += int(b["audio"].data.shape[0] * b["audio"].data.shape[1])
    peaks = matmul_peak()
    peak = max(peaks.values())
    per_variant = {}
    for v, r in runs.items():
        achieved = r["flops"] / r["seconds"] / 1e9
        per_variant[v] = {"samples_per_second": r["samples"] / r["seconds"],
                          "seconds_per_epoch": len(ds) / (r["samples"] / r["seconds"]),
                          "gflop_per_sample": r["flops"] / r["samples"] / 1e9,
                          "achieved_gflops": achieved, "share_of_peak": achieved / peak}
    result = {
        "data": source, "batch_size": args.batch_size, "steps": args.steps, "decoder": variants[0][1],
        "precision": "bf16-mixed" if variants[0][2] else "fp32",
        **per_variant[names[0]],
        "matmul_peak_gflops": peak,
        "matmul_torch_mm_gflops": peaks["torch_mm"], "matmul_onednn_gflops": peaks["onednn"],
        "padding_overhead": padded / valid - 1,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": cpu_model(),
    }
    if len(variants) > 1:
        a, b = names
        ratios = sorted(x / y for x, y in zip(step_seconds[a], step_seconds[b], strict=True))
        key = "decoder_comparison" if args.decoder == "both" else "precision_comparison"
        result[key] = {
            **per_variant, "order": f"alternating step by step: {a}, {b}, {a}, ...",
            f"step_time_ratio_{a}_over_{b}": {"median": ratios[len(ratios) // 2],
                                              "min": ratios[0], "max": ratios[-1]}}
        if key == "precision_comparison":
            bf16_peak = bf16_matmul_peak()
            result[key]["bf16"]["share_of_bf16_peak"] = per_variant["bf16"]["achieved_gflops"] / bf16_peak
            result[key]["matmul_bf16_peak_gflops"] = bf16_peak
    if args.kernels:
        result["kernels"] = kernel_shares(peak)
    if args.profile:
        set_decoder(model, variants[0][1])
        mid = sorted(batches, key=lambda b: b["audio"].data.shape[1])[len(batches) // 2]
        result["profile"] = profile_steps(model, opt, mid, bf16=variants[0][2])
    return result


if __name__ == "__main__":
    main()
