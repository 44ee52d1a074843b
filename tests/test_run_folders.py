"""Output folders named from a name and the second (``analysis/<video>_<time>/``): each caller gets its own.

Several Ray tasks once named their default analysis folders themselves from the video's name and the time to
the second, so two videos of one name (``cam1/line.mp4``, ``cam2/line.mp4``) started in the same second wrote
into one folder, one result overwriting the other. The folders are now taken by an exclusive mkdir
(:func:`anomalens.workflows.runs.claim_new_dir`), on the driver, before the tasks start. The same case on a real
local Ray cluster is in tests/test_distributed.py.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path

import pytest

from anomalens.errors import OutputError
from anomalens.workflows.runs import claim_new_dir

NOON = datetime(2026, 1, 2, 12, 0, 0)


def test_the_same_name_in_the_same_second_gets_a_folder_each(tmp_path):
    first = claim_new_dir(tmp_path / "analysis", "line", now=NOON)
    second = claim_new_dir(tmp_path / "analysis", "line", now=NOON)
    assert (first.name, second.name) == ("line_20260102_120000", "line_20260102_120000_2")
    assert first.is_dir() and second.is_dir() and not any(first.iterdir())
    assert claim_new_dir(tmp_path / "predictions", now=NOON).name == "20260102_120000"  # no name: the time alone


def test_callers_racing_in_one_second_never_share_a_folder(tmp_path):
    """Threads released together, as tasks started together: an exists-check-then-create scheme hands several of
    them one name; an exclusive mkdir cannot."""
    count = 16
    start = threading.Barrier(count)
    got: list[Path] = []
    lock = threading.Lock()

    def claim() -> None:
        start.wait()
        folder = claim_new_dir(tmp_path, "line", now=NOON)
        with lock:
            got.append(folder)

    threads = [threading.Thread(target=claim) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(got) == len(set(got)) == count
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in got)


def test_an_unwritable_parent_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="not writable"):
        claim_new_dir(blocker / "analysis", "line", now=NOON)
    with pytest.raises(OutputError, match="is a file"):
        claim_new_dir(blocker, "line", now=NOON)


def _fake_run(tmp_path: Path) -> Path:
    """A run folder as far as the driver looks at it (the tasks, faked here, never load the model)."""
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    return run


def test_ray_driver_gives_same_named_videos_a_default_folder_each(tmp_path, monkeypatch):
    """``analyze_videos_on_ray`` without an output folder, the clock fixed at one second: each video's task gets
    its own existing folder (the tasks once got none and named it themselves); a failed video's folder goes."""
    import anomalens.distributed.cluster as cluster
    import anomalens.distributed.many as many
    import anomalens.workflows.runs as runs

    class OneSecond(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 12, 0, 0)

    monkeypatch.setattr(runs, "datetime", OneSecond)
    monkeypatch.setattr(cluster, "connect", lambda address=None: None)
    monkeypatch.setattr(cluster, "cluster_device", lambda device: "cpu")
    seen: list[tuple] = []

    def tasks(function, jobs, *args, **kwargs):  # stands in for Ray: each task in turn
        outcomes = []
        for name, arguments in jobs:
            seen.append(arguments)
            target = arguments[2]
            if "cam3" in name:
                outcomes.append(many.TaskOutcome(name, None, "unreadable video", "n", {}))
                continue
            assert target is not None and Path(target).is_dir() and not any(Path(target).iterdir())
            (Path(target) / "events.json").write_text(json.dumps({"video": name}))
            outcomes.append(many.TaskOutcome(name, Path(target), None, "n", {}))
        return outcomes

    monkeypatch.setattr(many, "_run_tasks", tasks)
    run = _fake_run(tmp_path)
    videos = []
    for cam in ("cam1", "cam2", "cam3"):
        (tmp_path / cam).mkdir()
        videos.append(tmp_path / cam / "line.mp4")
        videos[-1].write_bytes(b"")
    outcomes = many.analyze_videos_on_ray(run, videos, None, address="fake")
    targets = [Path(arguments[2]) for arguments in seen]
    assert [t.name for t in targets] == ["line_20260102_120000", "line_20260102_120000_2", "line_20260102_120000_3"]
    assert all(t.parent == run / "model" / "analysis" for t in targets)
    for outcome, video in zip(outcomes[:2], videos):
        assert json.loads((outcome.output / "events.json").read_text())["video"] == str(video)
    assert outcomes[2].error and not targets[2].exists()  # no empty folder left for the failed video


def test_folders_inside_a_given_output_folder_are_distinct():
    """``--output-dir``: ``line``, ``line`` and ``line_2`` once gave ``line``, ``line_2``, ``line_2`` (one folder
    for two videos); names differing only in case are one folder on a case-insensitive disk."""
    from anomalens.distributed.many import _unique

    assert _unique(["line", "line", "line_2"]) == ["line", "line_3", "line_2"]
    assert _unique(["Line", "line", "dock"]) == ["Line", "line_2", "dock"]
    assert _unique(["a", "b"]) == ["a", "b"]


def test_a_video_listed_twice_is_two_tasks_with_two_outcomes(monkeypatch):
    """Outcomes were collected by the video's name: the same video given twice (two folders claimed) came back as
    one outcome reported twice, the other folder's result or error never told. A stand-in for Ray that finishes
    the tasks in reverse order."""
    import anomalens.distributed.cluster as cluster
    import anomalens.distributed.many as many
    from anomalens.progress import Reporter

    class Ref:
        def __init__(self, value):
            self.value = value

    class FakeRay:
        def remote(self, **resources):
            def wrap(function):
                class Remote:
                    @staticmethod
                    def remote(*arguments):
                        return Ref(function(*arguments))
                return Remote
            return wrap

        def cluster_resources(self):
            return {"CPU": 2}

        def wait(self, pending, num_returns=1):
            return pending[-1:], pending[:-1]

        def get(self, ref):
            return ref.value

    monkeypatch.setattr(cluster, "connect", lambda address=None: FakeRay())

    def task(cpus, video, target):
        return many.TaskOutcome(video, Path(target), None, "n", {})

    jobs = [("line.mp4", ("line.mp4", "out/line")), ("line.mp4", ("line.mp4", "out/line_2"))]
    outcomes = many._run_tasks(task, jobs, None, 1.0, Reporter(show_tqdm=False), "analyse videos")
    assert [o.output for o in outcomes] == [Path("out/line"), Path("out/line_2")]
