"""PVAE's headline numbers (issue 13) in one file: ``benchmarks/results/pvae.json``.

Each part is measured by its own script, which writes its own JSON with its commands:

    python benchmarks/pvae_partition.py --data-dir D --tag T ...  -> pvae_partition.json (official FSDD
                                                                    split: purities, probes, coherence,
                                                                    image style, minutes to 99 %)
    python benchmarks/pvae_unseen.py ...                          -> pvae_unseen.json (Arabic speakers)
    python benchmarks/pvae_loso.py --data-dir D --tag T ...       -> pvae_loso.json (FSDD, each speaker
                                                                    held out in turn)
    python benchmarks/pvae_joint.py --data-dir D [--held-out S] ... -> pvae_joint.json (FSDD + Arabic
                                                                    trained together, scored per corpus)
    python benchmarks/pvae_demo.py                                -> pvae_demo.json (`make demo` timed)

This script copies the headline numbers of those files (it measures nothing itself; a missing part
is written as null with the reason) into the keys the issue names, keeps every measuring command and
says which targets are met:

    python benchmarks/pvae.py [--official TAG] [--unseen TAG] [--loso TAG]

For the Arabic headline (``--unseen TAG``) it also gives every run of the same setting with another
``train.seed`` (``arabic_test_zs_by_seed``, their mean, and the target checked on each seed) and,
in ``unseen_variants``, every Arabic run; likewise for the FSDD folds (``--loso TAG``): the mean of
every tag that repeats TAG's setting with another seed (``fsdd_loso_mean_zs_by_seed``, null while a
repeat lacks folds).
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


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return read_json(path) if path.is_file() else None


def _tagged(runs: list[dict[str, Any]], tag: str, what: str) -> dict[str, Any]:
    for r in runs:
        if r.get("tag") == tag:
            return r
    raise SystemExit(f"pvae.py: no {what} run tagged {tag!r} (have {[r.get('tag') for r in runs]})")


def train_seconds(part: dict[str, Any]) -> float:
    """Training seconds of a pvae_partition.json entry; an erased run's: its source's plus the erasure."""
    ws = part["wall_seconds"]
    if "train" in ws:
        return ws["train"]
    return part["erased_from"]["train_seconds"] + ws["erase"]


def official_parts(part: dict[str, Any]) -> dict[str, Any]:
    """official / coherence / probes / image_style blocks from one pvae_partition.json entry."""
    pur, pr, coh = part["purity"], part["probes"], part["coherence"]
    style = (part.get("image_style") or {}).get("within_image") or {}
    return {
        "official": {"speech_zs": pur.get("speech/z^s"), "image_zs": pur.get("image/z^s"),
                     "speech_za": pur.get("speech/z^a"), "image_zi": pur.get("image/z^i"),
                     "minutes_to_99": part.get("minutes_to_99"), "tag": part["tag"],
                     "epochs": part.get("epochs"),
                     "train_minutes": round(train_seconds(part) / 60, 1),
                     "load_average": part.get("load_average")},
        "coherence": {"image_to_speech": coh.get("image_to_speech"),
                      "image_to_speech_prior_style": coh.get("image_to_speech_prior_style"),
                      "speech_to_image": coh.get("speech_to_image"),
                      "speech_style_keeps_digit": coh.get("speech_style_keeps_digit")},
        "probes": {"speaker_from_zs": pr.get("speaker_from_zs"), "digit_from_za": pr.get("digit_from_za"),
                   "speaker_from_zs_mlp": pr.get("speaker_from_zs_mlp"),
                   "speaker_chance": pr.get("speaker_chance"), "digit_chance": pr.get("digit_chance")},
        "image_style": {"slant_corr": style.get("slant_corr"), "ink_corr": style.get("ink_corr"),
                        "slant_corr_within_digit": style.get("slant_corr_within_digit"),
                        "ink_corr_within_digit": style.get("ink_corr_within_digit"),
                        "slant_corr_ceiling": style.get("slant_corr_ceiling"),
                        "ink_corr_ceiling": style.get("ink_corr_ceiling"),
                        "n": style.get("n"), "what": "within-image style transfer, test split; "
                        "*_within_digit: each measure minus its mean over the same digit (the "
                        "target is checked on the raw ones); *_ceiling: the raw correlation of an "
                        "exact transfer that keeps the content's digit, for the same pairs (None: "
                        "scored before it was measured)"},
    }


def same_setting_other_seeds(runs: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs (``entry`` first) whose config and overrides equal ``entry``'s but for ``train.seed``."""

    def setting(r: dict[str, Any]) -> tuple:
        return (r.get("config"), bool(r.get("train_on_val")),
                tuple(sorted(o for o in r.get("overrides") or [] if not o.startswith("train.seed="))))

    return [entry, *(r for r in runs if r is not entry and setting(r) == setting(entry))]


def loso_seed_tags(folds: list[dict[str, Any]], tag: str) -> list[str]:
    """``tag`` first, then every tag of pvae_loso.json whose folds ran the same config and overrides
    but for ``train.seed`` (a repeat of the headline's setting with another seed)."""
    first: dict[str, dict[str, Any]] = {}
    for f in folds:  # a tag's first fold stands for its setting; tags in order of appearance
        first.setdefault(f["tag"], f)
    runs = [{"tag": t, "config": f.get("config"), "overrides": f.get("overrides")} for t, f in first.items()]
    entry = next(r for r in runs if r["tag"] == tag)
    return [r["tag"] for r in same_setting_other_seeds(runs, entry)]


def targets(out: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's targets, each True / False, or None when its number is missing."""

    def at_least(x, t):
        return None if x is None else x >= t

    def at_most(x, t):
        return None if x is None else x <= t

    o, c, p, s, u, d = (out.get(k) or {} for k in ("official", "coherence", "probes", "image_style",
                                                  "unseen", "demo"))
    spk, dig = p.get("speaker_chance"), p.get("digit_chance")
    return {
        "official_zs_99": None if o.get("speech_zs") is None
        else (o["speech_zs"] >= 0.99 and o["image_zs"] >= 0.99),
        "style_purity_30": None if o.get("speech_za") is None else max(o["speech_za"], o["image_zi"]) <= 0.30,
        "minutes_to_99_at_most_10": at_most(o.get("minutes_to_99"), 10.0),
        "image_to_speech_90": at_least(c.get("image_to_speech"), 0.90),
        "speech_style_keeps_digit_90": at_least(c.get("speech_style_keeps_digit"), 0.90),
        "speaker_from_zs_2x_chance": None if spk is None or p.get("speaker_from_zs") is None
        else p["speaker_from_zs"] <= 2 * spk,
        "digit_from_za_2x_chance": None if dig is None or p.get("digit_from_za") is None
        else p["digit_from_za"] <= 2 * dig,
        "slant_and_ink_corr_0.8": None if s.get("slant_corr") is None
        else min(s["slant_corr"], s["ink_corr"]) >= 0.8,
        "arabic_test_zs_95": at_least(u.get("arabic_test_zs"), 0.95),
        "arabic_test_zs_95_every_seed": None if not u.get("arabic_test_zs_by_seed")
        else min(u["arabic_test_zs_by_seed"].values()) >= 0.95,
        "fsdd_loso_mean_90": at_least(u.get("fsdd_loso_mean_zs"), 0.90),
        "fsdd_loso_mean_90_every_seed": None if not u.get("fsdd_loso_mean_zs_by_seed")
        or None in u["fsdd_loso_mean_zs_by_seed"].values()
        else min(u["fsdd_loso_mean_zs_by_seed"].values()) >= 0.90,
        "demo": d.get("target_met"),  # <= 300 s and z^s >= 95 % on both modalities
        # "generated audio that says the right digit", judged at part 1's coherence bar
        "demo_image_to_speech_90": at_least(d.get("image_to_speech_coherence"), 0.90),
    }


PARTITION_TARGETS = ("official_zs_99", "style_purity_30", "minutes_to_99_at_most_10", "image_to_speech_90",
                     "speech_style_keeps_digit_90", "speaker_from_zs_2x_chance", "digit_from_za_2x_chance",
                     "slant_and_ink_corr_0.8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", default="paper", help="tag in pvae_partition.json for the official block")
    ap.add_argument("--unseen", default="bilstm",
                    help="tag in pvae_unseen.json (the headline: the bi-LSTM reader)")
    ap.add_argument("--loso", default="robust_bilstm", help="tag in pvae_loso.json")
    ap.add_argument("--out", default=str(RESULTS / "pvae.json"))
    args = ap.parse_args()
    out: dict[str, Any] = {"units": "fractions in [0, 1] (0.95 = 95 %) unless a key says minutes or seconds"}
    commands: list[str] = []
    missing: dict[str, str] = {}

    part = _load("pvae_partition.json")
    if part:
        entry = _tagged(part["runs"], args.official, "pvae_partition.json")
        out.update(official_parts(entry))
        commands.append(entry["command"])
        out["partition_variants"] = {
            r["tag"]: {"overrides": r.get("overrides"), **official_parts(r)} for r in part["runs"]}
        commands += [r["command"] for r in part["runs"] if r is not entry]
    else:
        missing["official"] = "run benchmarks/pvae_partition.py"

    unseen: dict[str, Any] = {}
    un = _load("pvae_unseen.json")
    if un:
        e = _tagged(un["runs"], args.unseen, "pvae_unseen.json")
        unseen["arabic_test_zs"] = e["speech_z_s_purity_unseen_test"]
        unseen["arabic_val_zs"] = e["splits"].get("val", {}).get("purity", {}).get("speech/z^s")
        unseen["arabic_tag"], unseen["arabic_overrides"] = e["tag"], e.get("overrides")
        out["unseen_variants"] = {  # every Arabic run, seeds included, beside the headline's
            r["tag"]: {"arabic_test_zs": r["speech_z_s_purity_unseen_test"],
                       "arabic_val_zs": r["splits"].get("val", {}).get("purity", {}).get("speech/z^s"),
                       "overrides": r.get("overrides")} for r in un["runs"]}
        seeds = same_setting_other_seeds(un["runs"], e)  # the headline's setting, every seed run
        unseen["arabic_test_zs_by_seed"] = {r["tag"]: r["speech_z_s_purity_unseen_test"] for r in seeds}
        unseen["arabic_test_zs_seed_mean"] = round(
            sum(unseen["arabic_test_zs_by_seed"].values()) / len(seeds), 4)
        commands += [e["command"], *(r["command"] for r in un["runs"] if r is not e)]
    else:
        missing["arabic"] = "run benchmarks/pvae_unseen.py"
    lo = _load("pvae_loso.json")
    if lo and args.loso in lo.get("summary", {}):
        s = lo["summary"][args.loso]
        unseen["fsdd_loso"] = s["speech_zs"]
        unseen["fsdd_loso_mean_zs"] = s["mean_speech_zs"]
        unseen["fsdd_loso_complete"] = s["complete"]
        seeds = loso_seed_tags(lo["folds"], args.loso)  # the headline's setting, every seed run
        unseen["fsdd_loso_mean_zs_by_seed"] = {t: lo["summary"][t]["mean_speech_zs"] for t in seeds}
        done = [v for v in unseen["fsdd_loso_mean_zs_by_seed"].values() if v is not None]
        unseen["fsdd_loso_mean_zs_seed_mean"] = round(sum(done) / len(done), 4) if done else None
        commands += [f["command"] for f in lo["folds"] if f["tag"] in seeds]
    else:
        missing["fsdd_loso"] = "run benchmarks/pvae_loso.py"
    out["unseen"] = unseen

    joint = _load("pvae_joint.json")
    if joint:  # every tag: the official-split run and the held-out-speaker folds
        out["joint_fsdd_arabic"] = {
            r["tag"]: {"fsdd_split": r["fsdd_split"], "speech_zs": r["speech_zs_purity"],
                       "cross_language_probe": r["cross_language_probe"]} for r in joint["runs"]}
        commands += [r["command"] for r in joint["runs"]]
    else:
        missing["joint_fsdd_arabic"] = "run benchmarks/pvae_joint.py"

    demo = _load("pvae_demo.json")
    if demo:
        d = demo["latest"]
        out["demo"] = {k: d.get(k) for k in ("seconds", "speech_zs", "image_zs", "image_to_speech_coherence",
                                             "load_average", "processor", "target_met")}
        # earlier timings (other hosts: the time depends on the CPU), newest first
        out["demo"]["previous"] = [{k: p.get(k) for k in ("seconds", "speech_zs", "image_zs", "processor",
                                                          "target_met")} for p in demo.get("previous", [])]
        commands.append(d["command"])
    else:
        missing["demo"] = "run benchmarks/pvae_demo.py"

    out["targets_met"] = targets(out)
    if "partition_variants" in out:  # which settings of part 1 meet a target the headline run misses
        met = {tag: targets(v) for tag, v in out["partition_variants"].items()}
        keys = [k for k, v in out["targets_met"].items() if v is not None and k in PARTITION_TARGETS]
        out["targets_met_by_partition_variant"] = {k: [t for t, m in met.items() if m.get(k)] for k in keys}
    out["missing"] = missing
    out["commands"] = [*commands, "python " + " ".join(["benchmarks/pvae.py", *sys.argv[1:]])]
    atomic_write_json(Path(args.out), out)
    for k, v in out["targets_met"].items():
        print(f"{k}: {v}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
