"""Helpers for the corpus preparation tests: tiny audio, tar archives in a corpus's real
layout (odd members included), a local HTTP server with Range support, file mtimes."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

SYMLINK = object()  # a member value (SYMLINK, target) makes a symbolic link


def tone(seconds: float, rate: int = 16000, seed: str = "") -> np.ndarray:
    """Deterministic float32 audio in [-0.5, 0.5]: a sine plus a little noise."""
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    n = round(seconds * rate)
    t = np.arange(n) / rate
    x = 0.4 * np.sin(2 * np.pi * rng.uniform(150, 600) * t) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


def encode(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def write_tar(path: Path, members: dict[str, object], mode: str = "w:gz") -> Path:
    """A tar archive of ``members`` in the given order: bytes make a regular file,
    ``(SYMLINK, target)`` a symbolic link."""
    with tarfile.open(path, mode) as tar:
        for name, value in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(value, tuple) and value[0] is SYMLINK:
                info.type = tarfile.SYMTYPE
                info.linkname = value[1]
                tar.addfile(info)
                continue
            info.size = len(value)
            tar.addfile(info, io.BytesIO(value))
    return path


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` ({url path: bytes}) with Range support; ``server.mode``
    "drop_half" breaks the next transfer half way."""

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.mode == "drop_half":
            srv.mode = "normal"
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(files: dict[str, bytes]) -> Iterator[http.server.ThreadingHTTPServer]:
    """A local HTTP server on 127.0.0.1; ``server.url`` is its base URL (no trailing /)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = dict(files)
    srv.mode = "normal"
    srv.requests = []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def drop_lines(out: str) -> dict[tuple[str, str], int]:
    """``dropped in <split>: <n> <reason> (e.g. ...)`` lines of a summary as {(split, reason): n}."""
    found = {}
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("dropped in "):
            continue
        where, _, rest = line[len("dropped in ") :].partition(": ")
        n, _, reason = rest.partition(" ")
        found[(where, reason.rsplit(" (e.g. ", 1)[0])] = int(n)
    return found
