"""Run a script in a child process, optionally allowed one CPU only: the checks that a result does not depend on the
CPUs a process may use (tests/test_encoder_threads.py, tests/test_thread_counts.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Module-level skip for files that need it: both sides of the comparison must be possible.
CAN_COMPARE = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
WHY_NOT = "needs a process that may use two CPUs and a way to restrict a child to one (Linux)"


def skip_unless_comparable() -> None:
    if not CAN_COMPARE:
        pytest.skip(WHY_NOT, allow_module_level=True)


def run_script(script: str, args: list[str], one_cpu: bool, env: dict[str, str] | None = None) -> str:
    """The script's standard output (stripped), run with this repository's ``src`` first on the path and ``env``
    added to the environment; the child is restricted to one CPU before anything else runs when ``one_cpu``."""
    prefix = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n" if one_cpu else ""
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join([os.path.abspath("src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", prefix + script, *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()
