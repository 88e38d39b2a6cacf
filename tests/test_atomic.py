import pytest

from conformance.harness.drift import BEYOND, IDENTICAL, drift
from conformance.harness.golden import write_tree
from glm_asr.io.atomic import replace_directory


def test_a_failed_fill_leaves_the_old_directory_untouched(tmp_path):
    target = tmp_path / "golden"
    write_tree(target, {"a.txt": b"old", "sub/b.txt": b"old b"})

    def fail(staging):  # noqa: ANN001, ANN202
        (staging / "a.txt").write_bytes(b"half-written")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        replace_directory(target, fail)
    assert (target / "a.txt").read_bytes() == b"old" and (target / "sub" / "b.txt").read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden"]  # no staging left behind


def test_write_tree_replaces_exactly(tmp_path):
    target = tmp_path / "golden"
    write_tree(target, {"a.txt": b"1", "gone.txt": b"x"})
    write_tree(target, {"a.txt": b"2"})
    assert [(d.path, d.verdict) for d in drift(target, {"a.txt": b"2"})] == [("a.txt", IDENTICAL)]
    assert [(d.path, d.verdict, d.detail) for d in drift(target, {"a.txt": b"3", "new.txt": b""})] == [
        ("new.txt", BEYOND, f"missing from {target}"), ("a.txt", BEYOND, "bytes differ")]
