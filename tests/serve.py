"""Run server.py's app on 127.0.0.1 in a background thread for the tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import uvicorn

import server
from decoder import DecoderConfig
from inference import InferenceConfig


def make_service(
    model_path: Path,
    stream_model_path: Path | None,
    record_dir: Path | None = None,
    decoder: DecoderConfig = DecoderConfig(),
    **limits,
) -> server.Service:
    return server.Service(
        InferenceConfig(Path(model_path), threads=1), stream_model_path, decoder, server.Limits(**limits), record_dir
    )


@contextlib.contextmanager
def serve(service: server.Service) -> Iterator[str]:
    """Serve ``service`` on a free port of 127.0.0.1; yields "127.0.0.1:PORT"; stops the server after."""
    config = uvicorn.Config(
        server.create_app(service),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        ws_per_message_deflate=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        ws_max_size=4 * service.limits.max_message_bytes,
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
