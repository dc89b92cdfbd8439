"""One driver at a time per results home (a local folder or an s3:// / gs:// prefix).

The driver that holds a home keeps a small JSON file there (``LOCK_FILE``: host,
pid, start time, a heartbeat it renews every ``BEAT_S`` seconds). Another driver
that finds the file is refused in one line, unless the hold is stale:

- on the same host, the holder's process no longer exists (a killed driver), or
- its heartbeat is older than ``STALE_S`` (a driver on another machine that died).

A stale hold is taken over, so ``--resume`` after a crash just works. On a local
folder the file is created exclusively (``O_EXCL``); object stores have no such
operation, so there the taker writes its hold and reads it back a moment later: of
two drivers that started within that moment, the one whose hold was overwritten
steps back.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime

from agd_ray.config import ConfigError
from agd_ray.storage import Storage

LOCK_FILE = ".agd-ray.lock"
BEAT_S = 15.0
STALE_S = 60.0
SETTLE_S = 1.0  # object stores: how long a hold must survive before it counts


class HomeLock:
    """``with HomeLock(home): ...`` holds ``home`` for this process, or raises
    ConfigError naming it and who holds it."""

    def __init__(self, home: str, beat_s: float = BEAT_S, stale_s: float = STALE_S):
        self.storage = Storage(home)
        self.beat_s, self.stale_s = beat_s, stale_s
        self.token = uuid.uuid4().hex
        self.since = time.time()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _record(self) -> dict:
        return {
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": self.since,
            "heartbeat": time.time(),
        }

    def _read(self) -> dict | None:
        data = self.storage.read_bytes(LOCK_FILE)
        try:
            return json.loads(data) if data else None
        except ValueError:  # a torn or foreign file: treat as no hold
            return None

    def stale(self, held: dict) -> bool:
        if time.time() - held.get("heartbeat", 0) > self.stale_s:
            return True
        if held.get("host") == socket.gethostname():
            try:
                os.kill(int(held["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, KeyError, ValueError):
                pass
        return False

    def _refuse(self, held: dict) -> ConfigError:
        since = datetime.fromtimestamp(held.get("since", 0)).strftime("%Y-%m-%d %H:%M:%S")
        return ConfigError(
            self.storage.uri,
            f"is in use by another driver (pid {held.get('pid')} on {held.get('host')}, "
            f"since {since}); wait for it to finish or stop it (a hold without a "
            f"heartbeat for {self.stale_s:.0f}s is taken over)",
        )

    def acquire(self) -> None:
        try:
            self._acquire()
        except OSError as err:  # no bucket, no credentials, not writable
            raise ConfigError(self.storage.uri, f"cannot write there: {err}") from None

    def _acquire(self) -> None:
        held = self._read()
        if held is not None and held.get("token") != self.token and not self.stale(held):
            raise self._refuse(held)
        if self.storage.local and held is None:
            self._create_exclusive()
        else:  # a stale hold to replace, or an object store
            self.storage.write_bytes(LOCK_FILE, json.dumps(self._record()).encode())
        if not self.storage.local:
            time.sleep(SETTLE_S)
            held = self._read()
            if held is None or held.get("token") != self.token:
                raise self._refuse(held or {})
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()

    def _create_exclusive(self) -> None:
        path = f"{self.storage.root}/{LOCK_FILE}"
        os.makedirs(self.storage.root, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # another driver got here first
            raise self._refuse(self._read() or {}) from None
        with os.fdopen(fd, "w") as f:
            json.dump(self._record(), f)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                self.storage.write_bytes(LOCK_FILE, json.dumps(self._record()).encode())
            except OSError:  # a storage hiccup; the next beat tries again
                continue

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=self.beat_s)
        held = self._read()
        if held is not None and held.get("token") == self.token:
            self.storage.delete(LOCK_FILE)
        if self.storage.local:  # leave no empty folder behind (e.g. a refused config)
            try:
                os.rmdir(self.storage.root)
            except OSError:
                pass

    def __enter__(self) -> HomeLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
