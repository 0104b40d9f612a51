"""Atomic writes: the whole file or the old one, with ordinary permissions, no temporary left behind."""

from __future__ import annotations

import os

import pytest

from vvframe.core.atomic import atomic_json, atomic_path, atomic_write


def test_atomic_write_replaces_with_ordinary_permissions(tmp_path):
    target = tmp_path / "sub" / "run.json"
    atomic_json(target, {"a": 1})
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["run.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "last.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
