"""Real parts for the live tests, started on 127.0.0.1 and stopped by PID: GStreamer's RTSP server, the mosquitto
MQTT broker and a small HTTP receiver for webhooks. Each ``start_*`` skips the test with the reason when the part
is not installed (``make test`` installs them where it can; CI always does)."""

from __future__ import annotations

import getpass
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

SYSTEM_PYTHON = Path("/usr/bin/python3")
RTSP_SCRIPT = Path(__file__).with_name("rtsp_test_server.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """End a process this test started, by its PID."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def rtsp_server_available() -> str | None:
    """None when the RTSP server can run here, else why not."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found (the GStreamer bindings need Debian's python3)"
    check = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"],
        capture_output=True, text=True,
    )
    if check.returncode != 0:
        return "GStreamer's RTSP server is not installed (apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi)"
    return None


def start_rtsp_server(port: int, video: Path) -> subprocess.Popen:
    """rtsp://127.0.0.1:PORT/live serving ``video`` (H.264 MP4) in real time."""
    reason = rtsp_server_available()
    if reason:
        pytest.skip(reason)
    process = subprocess.Popen([str(SYSTEM_PYTHON), str(RTSP_SCRIPT), str(port), str(video)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        stop(process)
        raise RuntimeError(f"the RTSP server did not start: {process.stderr.read() if process.stderr else ''}")
    return process


def start_mosquitto(port: int, folder: Path) -> subprocess.Popen:
    """A mosquitto broker on 127.0.0.1:PORT that keeps sessions across restarts (persistence in ``folder``)."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mosquitto.conf"
    # as root, mosquitto would switch to its own user, who cannot write the persistence file here
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\npersistence true\n"
                      f"persistence_location {folder}/\nautosave_interval 1\n")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
    except TimeoutError:
        stop(process)
        raise
    return process


class Receiver:
    """An HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it, in order (only those it accepts)."""

    def __init__(self, port: int, messages: list | None = None, answer=None) -> None:
        """``messages``: a list to go on appending to (a receiver that comes back after being down). ``answer``:
        the HTTP status for each message (a dict; default 204), as a receiver with its own checks gives it."""
        self.port, self.messages = port, [] if messages is None else messages
        self.answers: list[int] = []  # every status answered, in order
        received, answers = self.messages, self.answers

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status = 204 if answer is None else answer(body)
                answers.append(status)
                if status < 300:
                    received.append(body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def read_jsonl(path: Path) -> list[dict]:
    """The messages of a watch's ``events.jsonl``, in order."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def as_batch(frames: list) -> "torch.Tensor":
    """RGB ``uint8`` frames ``(H, W, 3)`` -> one ``(N, 3, H, W)`` batch, as detectors fit on."""
    import torch

    return torch.stack([torch.from_numpy(x).permute(2, 0, 1) for x in frames])
