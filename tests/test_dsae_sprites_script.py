"""benchmarks/dsae_sprites.py: a run added with ``--merge`` joins ``other_runs`` and leaves the
headline alone; added again (same weights) it replaces its own entry, not another's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from dsae_sprites import OTHER_RUN_KEYS, earlier_runs, main, with_other_run  # noqa: E402


def scored(sha: str, body: float) -> dict:
    return {"weights_sha256": sha, "attribute_disagreement_fix_f": {"body": body},
            "run": f"/runs/{sha}", "scored_test_videos": 2664, "commands": [f"train {sha}"]}


def test_an_added_run_sits_beside_the_headline(tmp_path):
    old = {**scored("aaa", 0.14), "other_runs": [{"weights_sha256": "bbb", "q": "factorised"}]}
    new = scored("ccc", 0.30)
    merged = with_other_run(old, new)
    assert merged["weights_sha256"] == "aaa" and merged["attribute_disagreement_fix_f"] == {"body": 0.14}
    assert [r["weights_sha256"] for r in merged["other_runs"]] == ["bbb", "ccc"]
    added = merged["other_runs"][-1]
    assert set(added) == set(OTHER_RUN_KEYS) and added["attribute_disagreement_fix_f"] == {"body": 0.30}
    # the same weights scored again replace their entry
    again = with_other_run(merged, scored("ccc", 0.25))
    assert [r["weights_sha256"] for r in again["other_runs"]] == ["bbb", "ccc"]
    assert again["other_runs"][-1]["attribute_disagreement_fix_f"] == {"body": 0.25}
    assert old["other_runs"] == [{"weights_sha256": "bbb", "q": "factorised"}]  # not modified


def test_a_new_headline_keeps_the_old_one_among_other_runs(tmp_path):
    path = tmp_path / "dsae_sprites.json"
    path.write_text(json.dumps({**scored("aaa", 0.14), "other_runs": []}))
    runs = earlier_runs(path, scored("ccc", 0.05))
    assert [r["weights_sha256"] for r in runs] == ["aaa"]


def test_merge_adds_scored_files_and_measures_nothing(tmp_path, monkeypatch):
    out, a, b = tmp_path / "out.json", tmp_path / "a.json", tmp_path / "b.json"
    out.write_text(json.dumps({**scored("aaa", 0.14), "other_runs": []}))
    a.write_text(json.dumps(scored("ccc", 0.3)))
    b.write_text(json.dumps(scored("ddd", 0.2)))
    monkeypatch.setattr(sys, "argv", ["dsae_sprites.py", "--out", str(out), "--merge", str(a), str(b)])
    assert main() == 0
    merged = json.loads(out.read_text())
    assert merged["weights_sha256"] == "aaa"
    assert [r["weights_sha256"] for r in merged["other_runs"]] == ["ccc", "ddd"]
    assert merged["other_runs"][0]["commands"] == ["train ccc"]


def test_dsae_json_picks_the_best_run_of_each_q_variant():
    from dsae import sprites_by_q
    head = {**scored("aaa", 0.14), "q": "factorised", "action_disagreement_fix_z": 0.7,
            "other_runs": [{**scored("bbb", 0.10), "q": "factorised", "action_disagreement_fix_z": 0.5},
                           {**scored("ccc", 0.30), "q": "full", "action_disagreement_fix_z": 0.6},
                           {**scored("ddd", 0.01), "q": None}]}  # scored before q was recorded
    best = sprites_by_q(head)
    assert set(best) == {"factorised", "full"}
    assert best["factorised"]["attribute_disagreement_fix_f"] == {"body": 0.10}
    assert best["full"]["action_disagreement_fix_z"] == 0.6 and not best["full"]["target_met"]
