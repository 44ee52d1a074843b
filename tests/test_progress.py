"""Progress without a terminal (one line per stage), stage labels, phase estimates, and readable result files."""

from __future__ import annotations

import os
import stat

import pytest

from anomalens import progress
from anomalens.progress import Phases, Reporter, format_duration
from anomalens.runtime import atomic_dir, write_text_atomic


def test_without_a_terminal_each_stage_writes_one_line_with_its_count_and_time(capsys):
    reporter = Reporter(show_tqdm=True, interactive=False)
    assert list(reporter.iter(range(500), "decode images")) == list(range(500))
    with reporter.section("fold 2 of 2"):
        list(reporter.iter(range(3), "coreset", info=lambda: "loss 0.5"))
    err = capsys.readouterr().err
    assert "\r" not in err  # no bar redraws in a log file
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("decode images: 500 of 500 in ") and lines[0].endswith(" s")
    assert lines[1].startswith("fold 2 of 2 · coreset: 3 of 3 in ") and lines[1].endswith("(loss 0.5)")


def test_a_long_stage_without_a_terminal_says_how_long_is_left(capsys, monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 30))  # each step takes 30 s
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    reporter = Reporter(show_tqdm=True, interactive=False)
    list(reporter.iter(range(4), "select the normal memory of each cell"))
    lines = capsys.readouterr().err.strip().splitlines()
    # a line a minute with the estimate (60 s for 2 steps -> 60 s for the 2 left), then the closing line
    assert lines[0] == "select the normal memory of each cell: 2 of 4, 1 min 00 s so far, about 1 min 00 s left"
    assert lines[-1].startswith("select the normal memory of each cell: 4 of 4 in 2 min")


def test_updates_carry_the_section_label_to_the_ui():
    seen = []
    reporter = Reporter(callback=lambda stage, done, total, info: seen.append((stage, done, total)), show_tqdm=False)
    with reporter.section("fold 1 of 2"):
        list(reporter.iter(range(2), "coreset"))
    assert seen[-1] == ("fold 1 of 2 · coreset", 2, 2)


def test_phases_estimate_the_time_left_from_their_relative_costs(monkeypatch):
    clock = iter([0.0, 100.0, 100.0, 150.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    news = []
    reporter = Reporter(callback=lambda stage, done, total, info: news.append(stage) if total is None else None,
                        show_tqdm=False)
    phases = Phases(reporter, {"all": 1.0, "fold 1 of 2": 0.5, "fold 2 of 2": 0.5}, title="memories")
    with phases.run("all"):
        pass
    with phases.run("fold 1 of 2"):
        pass
    assert news == ["memories: all done in 1 min 40 s; about 1 min 40 s left for the rest",
                    "memories: fold 1 of 2 done in 50.0 s; about 50.0 s left for the rest"]


def test_format_duration():
    assert format_duration(4.24) == "4.2 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(3720) == "1 h 02 min"


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_results_are_readable_by_colleagues(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "metrics.json", "{}\n")
        with atomic_dir(tmp_path / "evaluation") as folder:
            (folder / "x.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "evaluation").stat().st_mode) == 0o755


def test_run_ahead_yields_in_order_raises_the_producers_error_and_stops_with_the_consumer():
    import threading

    from anomalens.runtime import run_ahead

    assert list(run_ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad frame 2")

    with pytest.raises(ValueError, match="bad frame 2"):
        list(run_ahead(failing()))
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    ahead = run_ahead(endless(), depth=1)
    assert next(ahead) == 0
    ahead.close()  # the consumer stops: the producer thread ends and produced at most a couple more
    assert not any(t.name == "anomalens-ahead" for t in threading.enumerate())
    assert len(produced) <= 4
