"""Where live events go: an append-only ``events.jsonl`` and a rotating per-frame CSV under the output folder,
an HTTP webhook and an MQTT topic.

Network sinks never block scoring: :meth:`Sink.send` puts the message in a bounded queue (the oldest message
is dropped and counted when it is full) and a thread of the sink delivers it, retrying with back-off until the
receiver or broker answers. A message the receiver refuses for good (a webhook's 400, 413, 415 or 422) is
logged, counted as ``rejected`` and dropped, so it cannot hold up the ones after it. :meth:`Sink.close` waits up
to a timeout for the queue to drain.

>>> log = EventLog(Path("watch_out"))                                   # doctest: +SKIP
>>> hook = WebhookSink("http://127.0.0.1:9000/events")                  # doctest: +SKIP
>>> for sink in (log, hook): sink.send({"type": "anomaly", "start_frame": 12})   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any, Callable

from anomalens.errors import ConfigError
from anomalens.runtime import json_text

QUEUE_SIZE = 1000  # messages a network sink holds while its receiver is away
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 30.0  # delivery back-off: doubles from the first to the cap
CSV_ROWS_PER_FILE = 100_000  # rows of a per-frame CSV before it rotates (about an hour at 25 fps)
CSV_FILES_KEPT = 10


def to_json(message: dict[str, Any]) -> str:
    """One message as compact JSON, NaN (a frame the model scored NaN) as ``null``, as every JSON file anomalens
    writes (:func:`~anomalens.runtime.json_text`)."""
    return json_text(message, indent=None)


class Sink:
    name = "sink"

    def send(self, message: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self, timeout: float = 5.0) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


class EventLog(Sink):
    """``events.jsonl``: one JSON message per line, appended and flushed to disk as each one happens."""

    name = "events.jsonl"

    def __init__(self, folder: Path) -> None:
        self.path = folder / "events.jsonl"
        self.file = open(self.path, "a", encoding="utf-8")
        self.written = 0

    def send(self, message: dict[str, Any]) -> None:
        self.file.write(to_json(message) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.written += 1

    def close(self, timeout: float = 5.0) -> None:
        self.file.close()

    def stats(self) -> dict[str, Any]:
        return {"written": self.written}


def last_event_id(folder: Path) -> int:
    """The highest event number an earlier watch left in ``folder`` (its ``events.jsonl`` ids and its
    ``events/event_NNNNN.*`` files; 0 for a new folder), so that a watch restarted into the same folder numbers
    its events after them and never overwrites an earlier event's clip or images."""
    highest = 0
    try:
        with open(folder / "events.jsonl", encoding="utf-8", errors="replace") as log:
            for line in log:
                try:
                    number = json.loads(line).get("id")
                except (ValueError, AttributeError):  # a line cut short by a crash, or not a message
                    continue
                if isinstance(number, int) and not isinstance(number, bool):
                    highest = max(highest, number)
    except FileNotFoundError:
        pass
    for path in (folder / "events").glob("event_*.*"):
        digits = path.name[len("event_"):].split(".")[0].split("_")[0]
        if digits.isdigit():
            highest = max(highest, int(digits))
    return highest


class FrameLog:
    """Per-frame scores in ``frames_00001.csv``, ``frames_00002.csv``, ...: a new file every ``rows`` rows,
    only the last ``keep`` files kept, so a week of watching does not fill the disk."""

    def __init__(self, folder: Path, columns: list[str], rows: int = CSV_ROWS_PER_FILE, keep: int = CSV_FILES_KEPT) -> None:
        if rows < 1 or keep < 1:
            raise ConfigError("CSV rotation needs rows >= 1 and keep >= 1")
        self.folder, self.columns, self.rows, self.keep = folder, columns, rows, keep
        existing = sorted(folder.glob("frames_*.csv"))
        self.number = int(existing[-1].stem.split("_")[1]) if existing else 0
        self.file = None
        self.count = 0
        self.unflushed = 0

    def write(self, row: list[Any]) -> None:
        if self.file is None or self.count >= self.rows:
            self._rotate()
        self.writer.writerow(row)
        self.count += 1
        self.unflushed += 1

    def flush(self) -> None:
        """Rows written so far to disk; the watcher calls it once a second, so the file is at most a second behind
        even when no further row comes (a hot folder between bursts)."""
        if self.file is not None and self.unflushed:
            self.file.flush()
            self.unflushed = 0

    def _rotate(self) -> None:
        if self.file is not None:
            self.file.close()
        self.number += 1
        # a file name that is not UTF-8 is written with \xNN escapes, as in the JSON messages, never a crash
        self.file = open(self.folder / f"frames_{self.number:05d}.csv", "w", newline="", encoding="utf-8",
                         errors="backslashreplace")
        self.writer = csv.writer(self.file, lineterminator="\n")
        self.writer.writerow(self.columns)
        self.count = 0
        for old in sorted(self.folder.glob("frames_*.csv"))[: -self.keep]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


# HTTP answers that refuse the message itself (bad request, too large, wrong media type, unprocessable): dropped
MESSAGE_REFUSED = (400, 413, 415, 422)


class Refused(Exception):
    """The receiver refused a message for good (sending it again would get the same answer)."""


class _QueuedSink(Sink):
    """A bounded queue and a delivery thread; subclasses implement :meth:`_deliver` (True = delivered, False =
    try again later, :class:`Refused` = drop it)."""

    def __init__(self, queue_size: int, log: Callable[[str], None] | None) -> None:
        if queue_size < 1:
            raise ConfigError("a sink's queue size must be >= 1")
        self.queue: deque[dict[str, Any]] = deque()
        self.queue_size = queue_size
        self.log = log or (lambda message: None)
        self.lock = threading.Condition()
        self.closing, self.abandon, self.wake = threading.Event(), threading.Event(), threading.Event()
        self.delivered = self.dropped = self.failures = self.rejected = 0
        self.thread = threading.Thread(target=self._run, name=f"anomalens-{self.name}", daemon=True)

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            if len(self.queue) >= self.queue_size:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(message)
            self.lock.notify()

    def _run(self) -> None:
        retry = FIRST_RETRY_S
        while not self.abandon.is_set():
            with self.lock:
                while not self.queue and not self.closing.is_set():
                    self.lock.wait(0.5)
                if not self.queue:
                    return
                message = self.queue[0]
            try:
                done = self._deliver(message)
            except Refused as exc:  # once, with the receiver's answer; the messages after it go on
                what = message.get("message_id") or message.get("id", "")
                self.log(f"{self.name}: message {what} dropped: {exc}")
                self.rejected += 1
                done = True
            else:
                self.delivered += done
            if done:
                with self.lock:
                    if self.queue and self.queue[0] is message:
                        self.queue.popleft()
                retry = FIRST_RETRY_S
            else:
                self.failures += 1
                self.wake.wait(retry)
                self.wake.clear()
                retry = min(retry * 2, MAX_RETRY_S)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout`` seconds (retrying at once), then stop."""
        self.closing.set()
        with self.lock:
            self.lock.notify_all()
        deadline = time.monotonic() + timeout
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.wake.set()
            self.thread.join(0.2)
        self.abandon.set()
        self.wake.set()
        if self.queue:
            self.log(f"{self.name}: {len(self.queue)} message(s) not delivered before the watch ended")

    def stats(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "queued": len(self.queue), "dropped": self.dropped,
                "failures": self.failures, "rejected": self.rejected}


class WebhookSink(_QueuedSink):
    """HTTP POST of each message as JSON to ``url``; a receiver that is down gets the messages once it is back."""

    name = "webhook"

    def __init__(self, url: str, queue_size: int = QUEUE_SIZE, timeout: float = 5.0, log: Callable[[str], None] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook must be an http:// or https:// URL, got {url!r}")
        self.url, self.timeout = url, timeout
        super().__init__(queue_size, log)
        self.thread.start()

    def _deliver(self, message: dict[str, Any]) -> bool:
        request = urllib.request.Request(
            self.url, data=to_json(message).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return 200 <= response.status < 300
        except urllib.error.HTTPError as exc:
            # these say this message is wrong for the receiver (a schema check, a size limit): sending it again
            # would block every later one forever. Other 4xx (401/403 expired credentials, 404 an endpoint being
            # redeployed, 408, 429) are about the receiver, not the message: retried, as a 5xx, until it is fixed
            if exc.code in MESSAGE_REFUSED:
                raise Refused(f"the receiver answered HTTP {exc.code} ({exc.reason})") from None
            if self.failures % 10 == 0:
                self.log(f"webhook {self.url}: HTTP {exc.code} ({exc.reason}); retrying")
            return False
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if self.failures % 10 == 0:  # one line per ten failures, not a flood while the receiver is down
                self.log(f"webhook {self.url}: {getattr(exc, 'reason', exc)}; retrying")
            return False


class MqttSink(_QueuedSink):
    """Publishes each message as JSON to ``topic`` with QoS 1 (paho-mqtt 2); reconnects by itself, and a message
    counts as delivered only once the broker acknowledged it (so a broker restart loses nothing queued)."""

    name = "mqtt"

    def __init__(
        self, address: str, topic: str, queue_size: int = QUEUE_SIZE, timeout: float = 5.0,
        client_id: str = "", log: Callable[[str], None] | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--mqtt must be HOST:PORT, got {address!r}")
        if not topic or any(ch in topic for ch in "+#"):
            raise ConfigError(f"--mqtt-topic must be a plain topic without wildcards, got {topic!r}")
        self.topic, self.timeout = topic, timeout
        self.connected = threading.Event()
        # the message being published and paho's handle on it: while the broker has not acknowledged it, the sink
        # waits on that handle again rather than publishing a second copy (paho resends it by itself on reconnect)
        self.in_flight: tuple[dict[str, Any], Any] | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.reconnect_delay_set(min_delay=1, max_delay=int(MAX_RETRY_S))
        self.client.on_connect = lambda client, userdata, flags, reason, properties: self._on_connect(reason)
        self.client.on_disconnect = lambda client, userdata, flags, reason, properties: self.connected.clear()
        super().__init__(queue_size, log)
        self.client.connect_async(host, int(port), keepalive=30)
        self.client.loop_start()
        self.thread.start()

    def _on_connect(self, reason) -> None:
        if not reason.is_failure:
            self.connected.set()
        else:
            self.log(f"mqtt: connection refused ({reason})")

    def _deliver(self, message: dict[str, Any]) -> bool:
        import paho.mqtt.client as mqtt

        if self.in_flight is not None and self.in_flight[0] is message:
            info = self.in_flight[1]
        else:
            if not self.connected.wait(self.timeout):
                return False
            info = self.client.publish(self.topic, to_json(message), qos=1)
            if info.rc == mqtt.MQTT_ERR_NO_CONN:  # the link dropped just now: paho keeps it and sends it once back
                info.rc = mqtt.MQTT_ERR_SUCCESS
            if info.rc != mqtt.MQTT_ERR_SUCCESS:  # not queued (paho's own queue is full): publish it again later
                return False
            self.in_flight = (message, info)
        try:
            info.wait_for_publish(self.timeout)
            published = info.is_published()
        except (RuntimeError, ValueError):  # paho gave it up: publish it again
            self.in_flight = None
            return False
        if published:
            self.in_flight = None
        return published

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        self.client.disconnect()
        self.client.loop_stop()
