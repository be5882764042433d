"""DSAE's three evaluations in one file: ``benchmarks/results/dsae.json``.

Each evaluation is measured by its own script, which writes its own JSON with its commands:

    python benchmarks/dsae_sprites.py ...   -> benchmarks/results/dsae_sprites.json (paper Table 1)
    python benchmarks/dsae_speech.py ...    -> benchmarks/results/dsae_speech.json  (paper Table 2)
    python benchmarks/dsae_ball.py ...      -> benchmarks/results/dsae_ball.json    (paper Figure 8)

This script copies the headline numbers of those files (it measures nothing itself and refuses a
missing part) into the keys the DSAE issue names, keeps every measuring command, and says whether
the issue's targets are met; ``sprites_by_q``: per q variant, the Sprites run (headline or
``other_runs``) with the lowest worst-attribute disagreement with f fixed:

    python benchmarks/dsae.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispart.files import atomic_write_json, read_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PARTS = ("dsae_sprites.json", "dsae_speech.json", "dsae_ball.json")
REFERENCE = "speaker_reference.json"  # optional: python benchmarks/speaker_reference.py [--with-val]


def sprites_block(s: dict[str, Any]) -> dict[str, Any]:
    fix_f = s["attribute_disagreement_fix_f"]
    return {
        "attribute_disagreement_fix_f": fix_f,
        "action_disagreement_fix_z": s["action_disagreement_fix_z"],
        "attribute_kl_fix_f": s.get("attribute_kl_fix_f"),
        "attribute_kl_random": s.get("attribute_kl_random"),
        "reconstruction_disagreement": s.get("reconstruction_disagreement"),
        "attribute_disagreement_swap_z": s.get("attribute_disagreement_swap_z"),
        "action_disagreement_swap_f": s.get("action_disagreement_swap_f"),
        "judge_accuracy": s.get("judge_accuracy"),
        "q": s.get("q"), "train_minutes": s.get("train_minutes"), "training": s.get("training"),
        "model": s.get("model"), "commands": s.get("commands"),
        "units": "fractions (0.05 = 5%); KL in nats",
        "target_met": all(v <= 0.05 for v in fix_f.values()),
    }


def sprites_by_q(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per q variant ("factorised", "full"), the block of its run with the lowest worst-attribute
    disagreement with f fixed, among the headline run and ``other_runs`` of dsae_sprites.json."""
    best: dict[str, dict[str, Any]] = {}
    for r in [s, *s.get("other_runs", [])]:
        fix_f = r.get("attribute_disagreement_fix_f")
        if not fix_f or r.get("q") is None:
            continue
        q = r["q"]
        if q not in best or max(fix_f.values()) < max(best[q]["attribute_disagreement_fix_f"].values()):
            best[q] = sprites_block(r)
    return best


def speech_block(s: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in s["runs"]:
        ratio = r["eer_z"] / r["eer_f"] if r["eer_f"] > 0 else float("inf")
        out.append({"dataset": s["dataset"], "q": r["q"], "eer_f": r["eer_f"], "eer_z": r["eer_z"],
                    "tag": r.get("tag"), "epochs": r.get("epochs"), "train_minutes": r.get("train_minutes"),
                    "units": "fractions (0.05 = 5%)",
                    "target_met": r["eer_f"] <= 0.05 and ratio >= 3.0})
    return out


def reference_block(root: Path) -> dict[str, Any] | None:
    """EERs of supervised speaker embeddings on the same trials (benchmarks/speaker_reference.py),
    or None when that script has not been run."""
    path = root / REFERENCE
    if not path.is_file():
        return None
    ref = read_json(path)
    return {"about": ref.get("about"),
            **{k: {"eer_mean": v["eer_mean"], "eer_min": v["eer_min"], "eer_max": v["eer_max"],
                   "n_train_speakers": v["n_train_speakers"], "command": v["command"]}
               for k, v in ref.items() if isinstance(v, dict) and "eer_mean" in v}}


def ball_block(b: dict[str, Any]) -> dict[str, Any]:
    ball = b["ball"]
    return {"metric": ball["metric"], "missing": ball["missing"], "curves": ball["curves"],
            "dsae_rollout": ball.get("dsae_rollout"), "training": ball.get("training"),
            "command_by_model": {m: v["command"] for m, v in ball.get("by_model", {}).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args()
    root = Path(args.results)
    missing = [p for p in PARTS if not (root / p).is_file()]
    if missing:
        sys.exit(f"benchmarks/dsae.py: run the measuring scripts first; missing {missing} in {root}")
    sprites, speech, ball = (read_json(root / p) for p in PARTS)
    result = {
        "sprites": sprites_block(sprites),
        "sprites_by_q": sprites_by_q(sprites),
        "speech": speech_block(speech),
        "speech_baseline_eer_mean_log_spectrum": speech.get("baseline_eer_mean_log_spectrum"),
        "speech_supervised_reference": reference_block(root),
        "ball": ball_block(ball),
        "commands": [*sprites.get("commands", [sprites.get("command")]), *speech["commands"],
                     *ball["commands"], "python benchmarks/dsae.py"],
        "sources": list(PARTS),
    }
    result["commands"] += [c for b in result["sprites_by_q"].values() for c in b["commands"] or []
                           if c not in result["commands"]]
    if result["speech_supervised_reference"]:
        result["commands"] += [v["command"] for v in result["speech_supervised_reference"].values()
                               if isinstance(v, dict)]
        result["sources"].append(REFERENCE)
    result["commands"] = [c for c in result["commands"] if c]
    atomic_write_json(root / "dsae.json", result)
    print(f"sprites: fix-f disagreement {sprites['attribute_disagreement_fix_f']}, "
          f"fix-z action {sprites['action_disagreement_fix_z']:.3f}")
    for r in result["speech"]:
        print(f"speech ({r['q']}): EER f {r['eer_f']:.3f}, z {r['eer_z']:.3f}, target met {r['target_met']}")
    print(f"wrote {root / 'dsae.json'}")


if __name__ == "__main__":
    main()
