"""A failed block removes the folders it created: empty ones always, with their contents only when asked."""

from pathlib import Path

import pytest

from gdsoftmax.engine.workspace.cleanup import folders_removed_on_failure


def _write_and_fail(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "reliability.png").write_bytes(b"png")
    raise RuntimeError("figure failed")


def _fail_writing(root: Path, **options) -> None:
    with pytest.raises(RuntimeError, match="figure failed"), folders_removed_on_failure(root, depth=0, **options):
        _write_and_fail(root)


def test_a_created_folder_with_files_stays_unless_its_contents_may_go(tmp_path):
    _fail_writing(tmp_path / "kept" / "out")
    assert (tmp_path / "kept" / "out" / "reliability.png").exists()  # a run's folder: never emptied
    _fail_writing(tmp_path / "made" / "out", with_contents=True)
    assert not (tmp_path / "made").exists()


def test_a_folder_that_existed_keeps_what_was_there_and_what_was_written(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "config.toml").write_text("name = 'x'")
    _fail_writing(tmp_path / "sweep", with_contents=True)
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["config.toml", "reliability.png"]


def test_nothing_is_removed_when_the_block_succeeds(tmp_path):
    with folders_removed_on_failure(tmp_path / "out", depth=0, with_contents=True):
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "report.md").write_text("# Report")
    assert (tmp_path / "out" / "report.md").exists()
