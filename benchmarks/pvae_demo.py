"""Time the demo (what `make demo` runs) and record what it printed (issue 13, part 4).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/pvae_demo.py [--out-run runs/demo-bench] [key=value ...]

Runs ``python -m dispart.cli demo --out RUN`` as a subprocess (the embedded sample, offline: train,
evaluate, generate, HTML report), measures its wall time, then reads the run's evaluation.json and
quality.json: z^s purity of both modalities on the sample's held-out split (the issue's target:
>= 0.95 each within 300 s on 2 free cores) and the judged coherence of image -> speech (does the
generated audio say the right digit). Run it with the machine otherwise idle: the load average
before and after is recorded next to the time.

Writes benchmarks/results/pvae_demo.json (the latest run replaces the previous one; older ones are
kept under ``previous``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import cpu_model  # noqa: E402  (this script's folder is on sys.path)

from dispart.files import atomic_write_json, read_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pvae_demo.json"
TARGET_SECONDS, TARGET_PURITY = 300.0, 0.95


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-run", default=str(ROOT / "runs" / "demo-bench"), help="run folder (replaced)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("overrides", nargs="*", help="demo config overrides key=value")
    args = ap.parse_args()
    run = Path(args.out_run)
    if run.exists():
        shutil.rmtree(run)
    cmd = [sys.executable, "-m", "dispart.cli", "demo", "--out", str(run), *args.overrides]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"pvae_demo: the demo failed (exit {proc.returncode})")
    ev, quality = read_json(run / "evaluation.json"), read_json(run / "quality.json")
    purity = {f"{r['modality']}/{r['latent']}": round(float(r["purity"]), 4) for r in ev["rows"]}
    coh = quality.get("coherence", {}).get("image->audio", {})
    entry: dict[str, Any] = {
        "command": "OMP_WAIT_POLICY=PASSIVE " + shlex.join(["python", "benchmarks/pvae_demo.py",
                                                            *sys.argv[1:]]),
        "demo_command": shlex.join(["python", "-m", "dispart.cli", "demo", "--out", "RUN",
                                    *args.overrides]),
        "seconds": round(seconds, 1), "speech_zs": purity.get("speech/z^s"),
        "image_zs": purity.get("image/z^s"), "purity": purity,
        "n_test": ev.get("n_test"),
        "image_to_speech_coherence": coh.get("reference_style"),
        "image_to_speech_resynthesized": coh.get("resynthesized"),
        "estimated_num_classes": ev.get("estimated_num_classes"),
        "printed_tail": proc.stdout.strip().splitlines()[-12:],
        "load_average": {"before": load_before[0], "after": os.getloadavg()[0], "cores": os.cpu_count()},
        "target": {"seconds": TARGET_SECONDS, "zs": TARGET_PURITY},
        "python": platform.python_version(),
        "processor": cpu_model(),
    }
    entry["target_met"] = bool(seconds <= TARGET_SECONDS and min(entry["speech_zs"] or 0,
                                                               entry["image_zs"] or 0) >= TARGET_PURITY)
    out = Path(args.out)
    old = read_json(out) if out.is_file() else {}
    previous = ([old["latest"]] if "latest" in old else []) + old.get("previous", [])
    atomic_write_json(out, {"what": "the demo (`make demo`) timed end to end, and what it measured",
                            "units": "seconds; purities and accuracies as fractions in [0, 1]",
                            "latest": entry, "previous": previous[:5]})
    print({k: entry[k] for k in ("seconds", "speech_zs", "image_zs", "image_to_speech_coherence",
                                 "target_met")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
