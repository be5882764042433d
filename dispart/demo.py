"""The main job (``make demo``): train PVAE, evaluate it (paper protocol), generate, write the report.

Runs offline on the embedded sample by default; with ``data_dir`` on the full data.
"""

from __future__ import annotations

import time
from pathlib import Path

from dispart.batches.pipeline import load_experiment_data
from dispart.config import load_config
from dispart.data.locate import find_data
from dispart.data.sample import SAMPLE, SAMPLE_LARGE
from dispart.errors import ConfigError
from dispart.evaluation.evaluate import evaluate_run
from dispart.evaluation.table import PurityRow, content_row_keys, rows_to_markdown
from dispart.report.html import build_report
from dispart.training.run import train

DEMO_CONFIG = Path(__file__).parent / "demo.yaml"


def run_demo(out: Path, data_dir: Path | None = None, overrides: list[str] | None = None) -> dict:
    """Train + evaluate into ``out`` (a fresh folder is required); returns the evaluation."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty: the demo writes a fresh run folder")
    items = [f"{k}={v}" for k, v in find_data(data_dir).items()] if data_dir else []
    cfg = load_config(DEMO_CONFIG, items + list(overrides or []))
    where = {SAMPLE: "the embedded sample", SAMPLE_LARGE: "the larger embedded sample"}.get(
        cfg.data.audio, cfg.data.audio)
    print(f"[dispart demo] training {cfg.model.display_name} on {where} "
          f"for {cfg.train.epochs} epochs -> {out}")
    t0 = time.perf_counter()
    data = load_experiment_data(cfg.data, progress=cfg.train.progress_bar)  # loaded once, used thrice
    train(cfg, out, data=data)
    print(f"[dispart demo] trained in {time.perf_counter() - t0:.0f} s; evaluating "
          "(unimodal latents, 10-means purity, inertia k = 1..20)")
    result = evaluate_run(out, data=data)
    print(rows_to_markdown([PurityRow(**r) for r in result["rows"]]))
    for key in content_row_keys(result["rows"]):  # rows of content latents (declared role)
        print(f"estimated number of digit classes from {key}: {result['estimated_num_classes'][key]}")
    print("[dispart demo] generating grids, audio and quality numbers; writing the HTML report")
    report = build_report(out, data=data)
    print(f"[dispart demo] done in {time.perf_counter() - t0:.0f} s")
    print(f"[dispart demo] report: {report.resolve()}")
    return result
