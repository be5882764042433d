"""benchmarks/dsae_ball.py: ``--combine`` merges models trained in separate processes into one file,
each model keeping the command that trained it, and refuses files of different test data;
``--length-curriculum`` grows the training sequences from 5 frames to all of them."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from dsae_ball import combine, curriculum_length  # noqa: E402

DATA = {"sequences": 5000, "test": 1000, "scored": 1000, "T": 30, "size": 32, "seed": 0,
        "generate_or_read_seconds": 2.0}
REFS = {"blank": {"1": 0.0276}, "last_frame": {"1": 0.0194}}


def part(models: str, curves: dict, command: str) -> dict:
    names = models.split(",")
    return {"ball": {"metric": "wrong pixels", "missing": [1], "references": ["blank", "last_frame"],
                     "curves": {**curves, **REFS}, "data": dict(DATA),
                     "training": {m: {"steps": len(command)} for m in names},
                     "settings": {"models": models, "steps": len(command)},
                     **({"dsae_model": {"z_dim": 16}, "dsae_rollout": {"dsae": "means"}}
                        if "dsae" in names else {})},
            "commands": [command], "machine": {"threads": 1}}


def test_later_parts_replace_their_models_and_keep_the_others() -> None:
    old = part("lstm_f,lstm_c,dsae", {"lstm_f": {"1": 0.5}, "lstm_c": {"1": 0.6}, "dsae": {"1": 0.1},
                                      "dsae_sample": {"1": 0.2}}, "old")
    new_f = part("lstm_f", {"lstm_f": {"1": 0.01}}, "new f")
    new_f["ball"]["data"]["generate_or_read_seconds"] = 0.1  # timing may differ
    got = combine([old, new_f], "combine cmd")
    ball = got["ball"]
    assert ball["curves"]["lstm_f"] == {"1": 0.01}
    assert ball["curves"]["lstm_c"] == {"1": 0.6}
    assert ball["curves"]["dsae"] == {"1": 0.1} and ball["curves"]["dsae_sample"] == {"1": 0.2}
    assert ball["curves"]["blank"] == REFS["blank"]
    assert ball["by_model"]["lstm_f"]["command"] == "new f"
    assert ball["by_model"]["dsae"]["command"] == "old"
    assert ball["training"]["lstm_f"] == {"steps": len("new f")}
    assert ball["dsae_model"] == {"z_dim": 16}
    assert got["commands"] == ["old", "new f", "combine cmd"]
    again = combine([got, part("lstm_c", {"lstm_c": {"1": 0.02}}, "new c")], "cmd 2")
    assert again["ball"]["by_model"]["lstm_f"]["command"] == "new f"   # a combined file combines again
    assert again["ball"]["curves"]["lstm_c"] == {"1": 0.02}
    assert again["commands"] == ["old", "new f", "combine cmd", "new c", "cmd 2"]


def test_different_test_data_is_refused() -> None:
    a = part("lstm_f", {"lstm_f": {"1": 0.5}}, "a")
    b = part("lstm_c", {"lstm_c": {"1": 0.5}}, "b")
    b["ball"]["data"]["scored"] = 200
    with pytest.raises(ValueError, match="part 1 scored data.scored=200"):
        combine([a, b], "c")
    c = copy.deepcopy(a)
    c["ball"]["curves"]["blank"] = {"1": 0.03}
    with pytest.raises(ValueError, match="reference 'blank' differs"):
        combine([a, c], "c")
    with pytest.raises(ValueError, match="no results"):
        combine([], "c")


def test_length_curriculum_grows_linearly_from_five_frames() -> None:
    got = [curriculum_length(s, 30, 100) for s in (0, 1, 4, 50, 99, 100, 5000)]
    assert got == [5, 5, 6, 17, 29, 30, 30]          # 5 + 25 * s // 100
    assert [curriculum_length(s, 30, 0) for s in (0, 10)] == [30, 30]   # off
    assert curriculum_length(0, 4, 100) == 4          # sequences shorter than the start
