"""Work in a forked child or a fresh interpreter gives what the same work gives here, and fails loudly."""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from gdsoftmax.analysis import background
from gdsoftmax.analysis.background import ForkedWork, fork_is_safe
from gdsoftmax.analysis.post_hoc_process import PostHocFits, post_hoc_values


def _items(count=3, n=120, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return [(2 * rng.normal(size=(n, classes)), rng.integers(classes, size=n), 2 * rng.normal(size=(n, classes)),
             rng.integers(classes, size=n)) for _ in range(count)]


def _in_a_fresh_process(code: str) -> str:
    """Run ``code`` in a new interpreter (no torch compiler imported, no threads: where a fork is safe)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_forked_work_runs_in_another_process_and_its_files_are_read_after_it():
    out = _in_a_fresh_process("""
        import os
        from gdsoftmax.analysis.background import ForkedWork, fork_is_safe
        assert fork_is_safe()
        with ForkedWork(lambda folder: (folder / "pid").write_text(str(os.getpid()))) as work:
            child = int((work.wait() / "pid").read_text())
            folder = work.folder
        print(child != os.getpid(), folder.exists())
    """)
    assert out.split() == ["True", "False"]  # another process wrote it; the folder is gone after the block


def test_without_a_fork_the_work_runs_here_at_once():
    with ForkedWork(lambda folder: (folder / "pid").write_text(str(os.getpid())), fork=False) as work:
        assert (work.folder / "pid").read_text() == str(os.getpid())
        assert work.wait() == work.folder


def test_a_failure_in_the_child_is_raised_with_its_message():
    out = _in_a_fresh_process("""
        from gdsoftmax.analysis.background import ForkedWork
        def fail(folder):
            raise ValueError("the logits are empty")
        with ForkedWork(fail) as work:
            try:
                work.wait()
            except RuntimeError as error:
                print(error)
    """)
    assert out.strip() == "work in a forked process failed (exit code 1): ValueError: the logits are empty"


def test_leaving_the_block_stops_a_child_still_working():
    out = _in_a_fresh_process("""
        import time
        from gdsoftmax.analysis.background import ForkedWork
        with ForkedWork(lambda folder: time.sleep(60)) as work:
            process = work._process
        time.sleep(0.5)
        print(process.is_alive(), work.folder.exists())
    """)
    assert out.split() == ["False", "False"]


def test_a_ctrl_c_is_left_to_the_parent():
    out = _in_a_fresh_process("""
        import os, signal, time
        from gdsoftmax.analysis.background import ForkedWork
        with ForkedWork(lambda folder: time.sleep(30)) as work:
            time.sleep(0.3)
            os.kill(work._process.pid, signal.SIGINT)  # a Ctrl-C reaches every process of the group
            time.sleep(0.5)
            print(work._process.is_alive())  # still working: the parent stops it on leaving the block
    """)
    assert out.split() == ["True"]


def test_no_fork_where_torchs_compiler_is_imported_or_a_thread_runs(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch._dynamo", object())
    assert not fork_is_safe()
    monkeypatch.delitem(sys.modules, "torch._dynamo")
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not fork_is_safe()
    finally:
        stop.set()
        thread.join()
    monkeypatch.setattr(background.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert not fork_is_safe()
    monkeypatch.setattr(background.sys, "platform", "darwin")
    assert not fork_is_safe()


def test_forked_work_that_may_not_fork_runs_here(monkeypatch):
    monkeypatch.setattr(background, "fork_is_safe", lambda: False)
    with ForkedWork(lambda folder: (folder / "pid").write_text(str(os.getpid()))) as work:
        assert (work.wait() / "pid").read_text() == str(os.getpid())


def _same(results, expected):
    assert len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), key


def test_post_hoc_fits_in_a_fork_equal_those_made_here():
    out = _in_a_fresh_process("""
        import json
        import numpy as np
        from gdsoftmax.analysis.post_hoc_process import PostHocFits
        rng = np.random.default_rng(0)
        items = [(2 * rng.normal(size=(120, 4)), rng.integers(4, size=120), 2 * rng.normal(size=(120, 4)),
                  rng.integers(4, size=120)) for _ in range(3)]
        with PostHocFits(items, 10, background=True) as fits:
            assert fits._forked._process is not None  # it did fork
            print(json.dumps(fits.results()))
    """)
    import json

    _same(json.loads(out), [post_hoc_values(*item, 10) for item in _items()])


def test_a_failed_fit_in_the_fork_says_why():
    out = _in_a_fresh_process("""
        import numpy as np
        from gdsoftmax.analysis.post_hoc_process import PostHocFits
        logits = np.zeros((5, 3))
        bad = [(logits, np.array([0, 1, 2, 7, 0]), logits, np.array([0, 1, 2, 1, 0]))]  # class 7 of 3
        with PostHocFits(bad, 10, background=True) as fits:
            try:
                fits.results()
            except RuntimeError as error:
                print(error)
    """)
    assert out.startswith("work in a forked process failed (exit code 1): IndexError: ")


def test_post_hoc_fits_made_here_when_asked():
    items = _items()
    with PostHocFits(items, 10, background=False) as fits:
        _same(fits.results(), [post_hoc_values(*item, 10) for item in items])


def test_an_unknown_background_is_refused():
    with pytest.raises(ValueError, match=r"background must be None, True or False, got 'gpu'"):
        PostHocFits(_items(1), 10, background="gpu")
