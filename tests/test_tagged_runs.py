"""benchmarks/tagged_runs.py: a result file keeps one entry per tag across calls."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from tagged_runs import add_tagged_arguments, recorded_command, write_tagged_run  # noqa: E402


def test_a_tag_replaces_its_own_entry_and_keeps_the_others(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_tagged_run(out, {"tag": "a", "x": 1}, what="w", units="u")
    write_tagged_run(out, {"tag": "b", "x": 2}, what="w", units="u")
    write_tagged_run(out, {"tag": "a", "x": 3}, what="w2", units="u2")
    d = json.loads(out.read_text())
    assert d["runs"] == [{"tag": "b", "x": 2}, {"tag": "a", "x": 3}]
    assert (d["what"], d["units"]) == ("w2", "u2") and set(d["machine"]) == {"python", "torch", "processor"}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # written atomically, no temporary left


def test_recorded_command_names_the_threads_the_run_used_and_quotes_its_arguments() -> None:
    ap = argparse.ArgumentParser()
    add_tagged_arguments(ap, Path("r.json"))
    args = ap.parse_args(["--threads", "2", "--tag", "t", "model.widths={image: 512}"])
    assert (args.threads, args.tag, args.out) == (2, "t", "r.json")
    assert args.overrides == ["model.widths={image: 512}"]
    got = recorded_command("pvae_joint.py", ["--tag", "t", "model.widths={image: 512}"], args.threads)
    assert got == ("OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE python benchmarks/pvae_joint.py --tag t "
                   "'model.widths={image: 512}'")


def _write_tags(out: str, first: int, n: int) -> None:
    for i in range(first, first + n):
        write_tagged_run(Path(out), {"tag": f"t{i}", "pad": "x" * 20000}, what="w", units="u")


def test_benchmarks_finishing_together_keep_every_entry(tmp_path: Path) -> None:
    """Four processes write 15 tags each into one file at once: read-modify-write under the lock
    loses none (without it, a writer re-writes the file it read before another's entry landed)."""
    import multiprocessing

    out = tmp_path / "r.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_tags, args=(str(out), 15 * k, 15)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(r["tag"] for r in json.loads(out.read_text())["runs"]) == sorted(f"t{i}" for i in range(60))


def test_digit_reference_averages_the_held_out_folds_only_when_every_speaker_has_one() -> None:
    """benchmarks/digit_reference.py --held-out: the mean over the corpus's folds, hand-computed."""
    from digit_reference import store_held_out_mean

    p = "cfg_none_bilstm"
    result = {f"{p}_heldout_a": {"test_accuracy": 0.5, "test_embedding_purity": 0.75, "seeds": {"0": {}}},
              f"{p}_heldout_b": {"test_accuracy": 0.75, "test_embedding_purity": 0.25, "seeds": {"0": {}}},
              f"{p}_heldout_mean": {"stale": True}, "other_heldout_c": {}}
    store_held_out_mean(result, p, ["a", "b", "c"])  # c has no fold (other_ is another prefix)
    assert f"{p}_heldout_mean" not in result  # a stale mean is not left behind
    store_held_out_mean(result, p, ["a", "b"])
    mean = result[f"{p}_heldout_mean"]
    assert (mean["test_accuracy"], mean["test_embedding_purity"]) == (0.625, 0.5)
    assert mean["by_speaker"]["b"] == {"test_accuracy": 0.75, "test_embedding_purity": 0.25}
    assert mean["seeds"] == [("0",)]
