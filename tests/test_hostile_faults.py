"""Storage faults and kills (issue 14, points 4 and 8): a read-only and a full results folder (real tmpfs
mounts where the test may mount one, else chmod for a non-root user), kill -9 during training and during the
final rename. Nothing trained is lost, nothing half-written stays visible, every refusal is one line + exit 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _hostile import copy_run, error_line, hostile_dataset, real_run  # noqa: F401 (fixtures)
from anomalens.cli import main
from anomalens.workflows.runs import _complete_run, check_results_dir, load_detector
from anomalens.workflows.storage import recover_temporary_runs

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str):
    """A real tmpfs of ``size`` at ``path`` (root only); skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the chmod-based tests cover non-root users")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _remount_read_only(path: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only ({done.stderr.strip()})")


@contextlib.contextmanager
def read_only_folder(path: Path, populate=lambda folder: None):
    """``path`` made read-only: a read-only tmpfs as root, chmod 555 otherwise (root ignores modes)."""
    if os.geteuid() == 0:
        with mounted_tmpfs(path, "64m"):
            populate(path)
            _remount_read_only(path)
            yield path
    else:
        path.mkdir(parents=True, exist_ok=True)
        populate(path)
        for folder in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
            folder.chmod(0o555)
        try:
            yield path
        finally:
            for folder in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
                folder.chmod(0o755)


def _train_args(root: Path, category: str, results: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(root), "--category", category, "--results-dir", str(results),
            "--image-size", "64", "--device", "cpu", *extra]


# ---- read-only ----------------------------------------------------------------------------------------
def test_read_only_results_folder_is_refused_before_training(hostile_dataset, tmp_path, capsys):
    root, category = hostile_dataset
    with read_only_folder(tmp_path / "ro") as results:
        started = time.perf_counter()
        assert main(_train_args(root, category, results)) == 2
        line = error_line(capsys)
        assert str(results) in line and "not writable" in line
        assert time.perf_counter() - started < 30  # refused up front, not after training
        assert "memory bank" not in capsys.readouterr().out


def test_evaluate_predict_analyze_in_a_read_only_run_folder(real_run, tmp_path, capsys):
    def populate(folder: Path) -> None:
        copy_run(real_run, folder / "run")

    with read_only_folder(tmp_path / "ro", populate) as folder:
        run = folder / "run"
        assert main(["evaluate", "--checkpoint", str(run), "--device", "cpu"]) == 2
        assert "not writable" in error_line(capsys)
        image = next((Path(json.loads((run / "run.json").read_text())["data_dir"]) / "synthetic_widget" / "test").rglob("*.png"))
        assert main(["predict", "--checkpoint", str(run), str(image), "--device", "cpu"]) == 2
        assert "not writable" in error_line(capsys)
        assert main(["analyze-video", "--checkpoint", str(run), "--video", str(image), "--device", "cpu"]) == 2
        error_line(capsys)  # an image model: refused in one line either way
        assert load_detector(run).is_fitted  # and the run is intact


# ---- full disk -----------------------------------------------------------------------------------------
def test_full_results_folder_is_refused_before_training(hostile_dataset, tmp_path, capsys):
    root, category = hostile_dataset
    with mounted_tmpfs(tmp_path / "small", "4m") as results:
        assert main(_train_args(root, category, results)) == 2
        line = error_line(capsys)
        assert "MB free in the results folder" in line and str(results) in line


def test_disk_full_while_saving_keeps_the_model_in_a_rescue_folder(hostile_dataset, real_run, tmp_path, capsys,
                                                                   monkeypatch):
    from anomalens import limits

    root, category = hostile_dataset
    rescue = tmp_path / "rescue"
    monkeypatch.setenv("ANOMALENS_RESCUE_DIR", str(rescue))
    monkeypatch.setattr(limits, "MIN_FREE_BYTES_FOR_RUN", 0)  # the disk fills up during training
    with mounted_tmpfs(tmp_path / "full", "2m") as results:
        earlier = copy_run(real_run, results / "earlier_run")
        filler = results / "filler.bin"
        with open(filler, "wb") as handle:  # leave a few kB: less than a model folder
            with contextlib.suppress(OSError):
                handle.write(b"\0" * (shutil.disk_usage(results).free - 20_000))
        assert main(_train_args(root, category, results)) == 2
        line = error_line(capsys)
        assert "saved to" in line and str(rescue) in line
        saved = next(p for p in rescue.iterdir() if not p.name.startswith("."))
        assert str(saved) in line
        assert load_detector(saved).is_fitted  # the trained model is kept
        assert sorted(p.name for p in results.iterdir()) == ["earlier_run", "filler.bin"]  # no temp folder left
        assert load_detector(earlier).is_fitted  # the earlier run is untouched
        filler.unlink()
        assert main(["evaluate", "--checkpoint", str(saved), "--device", "cpu"]) == 0


# ---- kills ---------------------------------------------------------------------------------------------
def _python(code: str, *args: str, log: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
    sink = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    # Ctrl-C's default action, as in a terminal: a process started in the background by a shell without job
    # control (`cmd &` in a script, as a CI runner may start the tests) inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler (seen: the Ctrl-C test's training ran on to its last epoch)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=str(REPO),
                            stdout=sink, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(path: Path, text: str, timeout: float = 120) -> None:
    """Until ``text`` appears in the log of a child process (training really started, not just Python)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}: {path.read_text(errors='replace')[-2000:]}")


@pytest.mark.slow
def test_kill_9_during_training_loses_no_earlier_run(hostile_dataset, real_run, tmp_path):
    root, category = hostile_dataset
    results = tmp_path / "results"
    earlier = copy_run(real_run, results / "earlier_run")
    code = """
        import sys
        from anomalens.cli import main
        sys.exit(main(sys.argv[1:]))
    """
    output = tmp_path / "output.txt"
    process = _python(code, *_train_args(root, category, results, "--model", "autoencoder", "--epochs", "5000",
                                          "--latent-dim", "16", "--batch-size", "4"), log=output)
    log = results / "train.log"
    _wait_for(output, "epoch 3")  # well into training (5000 epochs take minutes)
    assert process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not log.exists()
    assert sorted(p.name for p in results.iterdir()) == ["earlier_run"]  # nothing half-written is visible
    assert load_detector(earlier).is_fitted


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["final rename", "writing the weights"])
def test_kill_9_while_saving_is_recovered_or_cleaned(hostile_dataset, tmp_path, moment):
    """kill -9 at the final rename leaves a complete hidden run: the next start renames it into place.
    kill -9 while writing the weights leaves an incomplete one: the next start removes it."""
    root, category = hostile_dataset
    results = tmp_path / "results"
    code = """
        import os, signal, sys
        import anomalens.workflows.storage as storage
        import anomalens.models.base as base
        from anomalens.cli import main

        moment = sys.argv[1]
        if moment == "final rename":
            real_rename = os.rename
            def rename(src, dst, *a, **k):
                if str(src).endswith(".tmp") and "/model" not in str(dst):
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_rename(src, dst, *a, **k)
            storage.os.rename = rename
        else:
            def save_file(tensors, path, *a, **k):
                open(path, "wb").write(b"half")
                os.kill(os.getpid(), signal.SIGKILL)
            base.save_file = save_file
        sys.exit(main(sys.argv[2:]))
    """
    process = _python(code, moment, *_train_args(root, category, results))
    process.wait(timeout=180)
    assert process.returncode == -signal.SIGKILL
    hidden = [p for p in results.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    assert len(hidden) == 1 and not [p for p in results.iterdir() if not p.name.startswith(".")]
    done = recover_temporary_runs(results, _complete_run)  # what every training start does (check_results_dir)
    assert len(done) == 1
    visible = [p for p in results.iterdir() if not p.name.startswith(".")]
    assert not [p for p in results.iterdir() if p.name.startswith(".")]
    if moment == "final rename":
        assert "recovered" in done[0] and len(visible) == 1
        assert load_detector(visible[0]).is_fitted and (visible[0] / "run.json").is_file()
    else:
        assert "removed" in done[0] and visible == []


def test_a_live_writer_s_temporary_folder_is_left_alone(tmp_path):
    results = tmp_path / "results"
    live = results / f".run_x.pid{os.getpid()}.abcd.tmp"
    live.mkdir(parents=True)
    check_results_dir(results, min_free_bytes=0)
    assert live.is_dir()  # this process is alive: it may still be writing


@pytest.mark.slow
def test_ctrl_c_on_the_autoencoder_keeps_the_model_and_exits_130(hostile_dataset, tmp_path):
    root, category = hostile_dataset
    results = tmp_path / "results"
    code = """
        import sys
        from anomalens.cli import main
        sys.exit(main(sys.argv[1:]))
    """
    output = tmp_path / "output.txt"
    process = _python(code, *_train_args(root, category, results, "--model", "autoencoder", "--epochs", "5000",
                                          "--latent-dim", "16", "--batch-size", "4"), log=output)
    _wait_for(output, "epoch 3")  # several epochs in
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    run = next(p for p in results.iterdir() if not p.name.startswith("."))
    assert json.loads((run / "run.json").read_text())["interrupted"] is True
    assert load_detector(run).is_fitted


def test_leftovers_of_killed_writers_are_removed_on_the_next_write(tmp_path):
    from anomalens.runtime import atomic_dir, write_json_atomic
    from anomalens.workflows.runs import staged_dir

    dead = 999_999_999  # no such process
    stale_dir = tmp_path / f".evaluation.pid{dead}.abc123.tmp"
    stale_file = tmp_path / f".metrics.json.pid{dead}.xyz.tmp"
    stale_partial = tmp_path / "out" / f".partial.pid{dead}.q1.tmp"
    for folder in (stale_dir, stale_partial):
        folder.mkdir(parents=True)
    stale_file.write_text("{")
    with atomic_dir(tmp_path / "evaluation") as tmp:
        (tmp / "a.txt").write_text("a")
    write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    with staged_dir(tmp_path / "out") as tmp:
        (tmp / "b.txt").write_text("b")
    assert not stale_dir.exists() and not stale_file.exists() and not stale_partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation", "metrics.json", "out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.txt"]
