"""The one atomic write: the old file or the new one, never half, no temporary left, the mode open() gives."""

import os
import stat

import matplotlib
import pytest

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.files import atomic_write_bytes, write_text_atomically


class Interrupted(Exception):
    pass


def test_a_write_cut_short_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    write_text_atomically(target, "old\n")

    def cut(*_):
        raise Interrupted

    monkeypatch.setattr(os, "replace", cut)  # the write is done, the rename never happens
    with pytest.raises(Interrupted):
        atomic_write_bytes(target, b"new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_the_file_gets_the_mode_a_plain_open_gives(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_text_atomically(tmp_path / "runs.csv", "a,b\n")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == b"a,b\n"


def test_a_figure_is_written_whole_through_it(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    written = []
    monkeypatch.setattr(plots, "atomic_write_bytes", lambda path, data: written.append((path, data)) or path)
    fig, ax = plots.pyplot().subplots()
    ax.plot([0, 1], [0, 1])
    assert plots.save_figure(fig, tmp_path / "line.png") == tmp_path / "line.png"
    assert written[0][1].startswith(b"\x89PNG")
    assert not (tmp_path / "line.png").exists()  # nothing written around it
