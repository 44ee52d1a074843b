"""A throwaway Ray cluster of one-CPU nodes on 127.0.0.1: for the tests, the scaling benchmark and trying
``--engine ray`` on one machine before pointing it at a real cluster.

Each node is a ``ray start ... --block`` process in its own session (``setsid``), so that stopping it by its
PID (SIGTERM, then SIGKILL to its process group) ends exactly the processes it started (gcs_server, raylet,
workers) and nothing else: never a broad ``ray stop``. Ray's files go to a private temporary folder.

A node also watches the process that started it (:data:`OWNER_GUARD`): when that process dies without stopping the
cluster (a test run killed by ``timeout`` or SIGKILL), the node stops itself within seconds instead of living on.

>>> with LocalCluster(nodes=2) as cluster:                           # doctest: +SKIP
...     predict_images_on_ray(run_dir, ["images/"], "out/", address=cluster.address)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
# Ray's token authentication, switched on by ~/.ray/auth_token (which a private ray.init() writes): with it the
# nodes record an address their own status check and drivers could not reach. A throwaway loopback cluster owned
# by one process has no use for it (a real cluster keeps Ray's own settings)
NODE_ENV = {"RAY_AUTH_MODE": "disabled"}
# Ray refuses less; the nodes of a test cluster need little, and /dev/shm is shared with other work
OBJECT_STORE_BYTES = 200 * 1024 * 1024


# A node's launcher: runs the node (the arguments after the owner's PID) and, once a second, checks that its owner
# still lives; when the owner is gone it asks the node to stop, removes Ray's temporary folder and ends what is left
# of the node's process group.
OWNER_GUARD = (
    'owner=$1; temp=$2; shift 2; "$@" & node=$!; '
    'while kill -0 "$node" 2>/dev/null; do '
    'if ! kill -0 "$owner" 2>/dev/null; then kill -TERM "$node"; sleep 5; rm -rf "$temp"; kill -KILL 0; fi; sleep 1; '
    'done; wait "$node"'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def ray_executable() -> str:
    """The ``ray`` command of the running interpreter's environment."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise RuntimeError("the `ray` command was not found: pip install 'anomalens[ray]'")
    return found


@dataclass
class LocalCluster:
    """``nodes`` Ray nodes with ``cpus_per_node`` CPUs each, started by :meth:`start`, stopped by :meth:`stop`."""

    nodes: int = 2
    cpus_per_node: int = 1
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the nodes (and so of their workers)
    port: int = 0
    temp_dir: Path | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 180.0) -> "LocalCluster":
        self.port = self.port or free_port()
        # short: Ray puts Unix sockets in it, whose paths may not exceed 107 characters
        self.temp_dir = Path(tempfile.mkdtemp(prefix="alray", dir="/tmp"))
        try:
            self.processes.append(self._launch(["--head", "--port", str(self.port), "--include-dashboard=false"]))
            self._wait_for_nodes(1, timeout)
            for _ in range(self.nodes - 1):
                self.add_node(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, timeout: float = 180.0) -> subprocess.Popen:
        """Start one more worker node and wait until the head sees it."""
        process = self._launch(["--address", self.address])
        self.processes.append(process)
        self._wait_for_nodes(self.alive_nodes() + 1, timeout)
        return process

    def _launch(self, role: list[str]) -> subprocess.Popen:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "RAY_USAGE_STATS_ENABLED": "0", **NODE_ENV, **self.env}
        command = [ray_executable(), "start", *role, "--num-cpus", str(self.cpus_per_node), "--num-gpus", "0",
                   "--node-ip-address", HOST, "--temp-dir", str(self.temp_dir),
                   "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats", "--block"]
        log = open(Path(str(self.temp_dir)) / f"node{len(self.processes)}.log", "wb")
        guarded = ["/bin/sh", "-c", OWNER_GUARD, "ray-node", str(os.getpid()), str(self.temp_dir), *command]
        return subprocess.Popen(guarded, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive_nodes(self) -> int:
        """Nodes the head counts as alive (``ray status`` would need the dashboard; the GCS client does not)."""
        code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False);"
                "print(sum(n['Alive'] for n in ray.nodes()))")
        done = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **NODE_ENV})
        try:
            return int(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def _wait_for_nodes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a Ray node exited with {process.returncode}; see {self.temp_dir}/node*.log")
            if self.alive_nodes() >= count:
                return
            time.sleep(0.5)
        raise TimeoutError(f"the local Ray cluster did not reach {count} nodes in {timeout:.0f} s")

    def kill_node(self, process: subprocess.Popen, timeout: float = 180.0) -> None:
        """End one node at once (SIGKILL to its whole process group), as a machine that dies would, and wait until
        the head has marked it dead (its heartbeat timeout), so that node counts that follow are right."""
        alive = self.alive_nodes()
        _kill_group(process, signal.SIGKILL)
        process.wait(timeout=30)
        self.processes.remove(process)
        deadline = time.monotonic() + timeout
        while self.alive_nodes() >= alive:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the head still counts the killed node as alive after {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to every node's process group; after ``grace`` seconds SIGKILL to what is left.

        A node asked to stop drains for up to 30 s; a throwaway cluster with no work left need not wait for that.
        """
        for process in reversed(self.processes):
            _kill_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in reversed(self.processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(process, signal.SIGKILL)  # what the node left behind in its session
        self.processes.clear()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the node was started as the leader of its own session
    except (ProcessLookupError, PermissionError):
        pass
