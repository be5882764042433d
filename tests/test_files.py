"""dispart.files: the one atomic-write helper."""

import os
import stat

import pytest

from dispart.errors import RunDirError
from dispart.files import atomic_write, atomic_write_json, atomic_write_with, read_json, read_yaml


def test_new_file_gets_the_umask_mode_and_no_temp_file_stays(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_replacing_keeps_the_existing_mode(tmp_path):
    target = tmp_path / "b.json"
    target.write_text("{}")
    target.chmod(0o600)
    atomic_write_json(target, {"x": 1})
    assert read_json(target) == {"x": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_writer_that_fails_midway_leaves_the_old_file(tmp_path):
    target = tmp_path / "w.bin"
    target.write_bytes(b"old")

    def half_then_crash(name: str) -> None:
        with open(name, "wb") as f:
            f.write(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_with(target, half_then_crash)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


@pytest.mark.parametrize("reader,text", [(read_json, '{"a": '), (read_yaml, "a: [1, 2")])
def test_corrupt_json_and_yaml_name_the_file_in_one_line(tmp_path, reader, text):
    bad = tmp_path / "bad.txt"
    bad.write_text(text)
    with pytest.raises(RunDirError) as e:
        reader(bad)
    assert str(e.value).startswith(f"{bad}: not a readable")
    assert "\n" not in str(e.value)
    with pytest.raises(RunDirError, match=r"missing\.json: file is missing$"):
        reader(tmp_path / "missing.json")
