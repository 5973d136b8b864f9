"""Speech recognition server: file uploads over HTTP, live streaming over a WebSocket, and a
page that uses both from a browser (microphone or file).

    pip install -r requirements-server.txt        # or: pip install -e ".[server]"
    python server.py                              # http://127.0.0.1:8888/
    python server.py --model-path models/an4.pth --stream-model-path models/an4_stream.pth \\
        --decoder beam --lm-path models/an4_3gram.arpa --host 127.0.0.1 --port 8888

Endpoints (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

* ``GET /``: the live page (static/index.html).
* ``POST /transcribe``: multipart field ``file`` holding audio in any format and sample rate
  soundfile reads (WAV, FLAC, OGG, MP3). Answers deepspeech.pytorch's
  ``{"status": "OK", "transcription": ...}`` plus ``words`` (start/end seconds), ``duration``
  and ``_meta`` as transcribe.py prints them; errors are ``{"status": "error", "message": ...}``
  with a 4xx status (400 bad or empty audio, 413 too large or too long, 503 busy).
* ``WebSocket /stream``: first a JSON text message ``{"sample_rate": 16000, "format": "pcm16"}``
  (any rate, resampled to the model's; ``format`` ``"pcm16"`` little-endian int16, the default,
  or ``"float32"`` little-endian), then binary messages of audio; the server answers
  ``{"partial": text, "audio_s": seconds received, "frames": n}`` whenever new output frames
  are final, and after a text message ``{"eof": 1}`` the final
  ``{"text", "words", "duration"}``, then closes. Errors are ``{"error": message}`` followed by
  a close (1008 bad input or limit, 1009 message too large, 1011 server-side, 1013 busy).
  The final text equals transcribe.py's on the same audio and model (``--chunk-seconds 0``).
* ``GET /health``: models, limits and load.

The streaming model needs to be unidirectional with global feature normalisation
(``train.py --no-bidirectional --normalize global``); without one (``--stream-model-path``
missing or not streamable) ``/stream`` answers an error and the page says streaming is
unavailable, while ``/transcribe`` works. Recognition runs in worker threads, never on the
event loop; the chunks of all the streams waiting run through the model as one batch.
``--workers`` bounds the uploads transcribed at once (``--max-pending`` waiting or running,
then 503) and ``--max-streams`` the open streams. SIGTERM or Ctrl-C stops cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import logging
import math
import os
import re
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from fastapi import FastAPI, File, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketDisconnect

from data.audio import AudioError, read_audio_bytes
from decoder import DecoderConfig, GreedyDecoder, make_decoder
from inference import DEFAULT_MODEL, InferenceConfig, load_recognizer, transcribe_audio
from utils import make_parser

log = logging.getLogger("deepspeech.server")

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
DEFAULT_STREAM_MODEL = "models/an4_stream.pth"
FORMATS = ("pcm16", "float32")
CONFIG_KEYS = ("sample_rate", "format")
MIN_RATE, MAX_RATE = 1000, 384000
UPLOAD_PATH = "/transcribe"


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server."""

    max_upload_bytes: int = 20 * 2**20
    max_upload_seconds: float = 120.0
    max_stream_seconds: float = 300.0
    max_streams: int = 24  # docs/benchmarks.md: 28 real-time streams fit 2 cores with one core busy
    max_pending: int = 16  # uploads waiting or being transcribed
    idle_timeout: float = 15.0  # seconds without a message on a stream
    max_message_bytes: int = 2**20  # one binary stream message
    max_backlog_seconds: float = 10.0  # received stream audio not yet processed: stop reading beyond this
    workers: int = max(1, os.cpu_count() or 1)  # threads transcribing uploads
    stream_workers: int = max(1, os.cpu_count() or 1)  # threads running streams

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")


class ClientError(Exception):
    """A request the server refuses; ``status`` is the HTTP status or the WebSocket close code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Locked:
    """A decoder used from several threads: one decode at a time (flashlight's search is not thread-safe)."""

    def __init__(self, decoder: Any) -> None:
        self.inner = decoder
        self._lock = threading.Lock()

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self.inner.decode(*args, **kwargs)

    def describe(self) -> dict:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()


def _thread_safe(decoder: Any) -> Any:
    return decoder if isinstance(decoder, GreedyDecoder) else _Locked(decoder)


def _model_info(path: Path, ckpt: Any, arch: str) -> dict:
    return {"path": str(path), "name": path.name, "epochs": ckpt.training.epoch if ckpt.training else None, "architecture": arch}


# ---------------------------------------------------------------------------- the service


class StreamBatcher:
    """Worker threads that run the streams' audio through the streaming model.

    A stream's handler waits for the answer to its last chunk before it submits the next (audio
    that arrives meanwhile joins that next chunk), so every chunk waiting belongs to a different
    stream: a free worker takes all of them (up to
    ``max_batch``) and runs them as one batch (:func:`streaming.accept_many`). A recurrent
    layer call has a fixed cost of a few milliseconds whatever its length; batched, that cost
    is paid once per batch instead of once per stream. Finishing a stream is a job of its own.
    """

    def __init__(self, workers: int, max_batch: int = 64) -> None:
        self.max_batch = max_batch
        self.counters = {"stream_batches": 0, "stream_chunks": 0}
        self._cond = threading.Condition()
        self._jobs: list[tuple[StreamSession, np.ndarray | None, asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._closed = False
        for i in range(workers):
            threading.Thread(target=self._work, name=f"stream-{i}", daemon=True).start()

    def accept(self, session: StreamSession, samples: np.ndarray) -> asyncio.Future:
        """Feed ``samples`` to ``session``; the future's result is :meth:`StreamSession.accept`'s."""
        return self._submit(session, samples)

    def finish(self, session: StreamSession) -> asyncio.Future:
        """End ``session``'s utterance; the future's result is :meth:`StreamSession.finish`'s."""
        return self._submit(session, None)

    def _submit(self, session: StreamSession, samples: np.ndarray | None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._jobs.append((session, samples, loop, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        """Let the workers finish the jobs already queued, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                jobs, self._jobs = self._jobs[: self.max_batch], self._jobs[self.max_batch :]
                accepts = [job for job in jobs if job[1] is not None]
                if accepts:
                    self.counters["stream_batches"] += 1
                    self.counters["stream_chunks"] += len(accepts)
            if accepts:
                try:
                    results = accept_sessions([job[0] for job in accepts], [job[1] for job in accepts])
                except Exception as e:
                    for job in accepts:
                        _resolve(job[2], job[3], error=e)
                else:
                    for job, result in zip(accepts, results):
                        _resolve(job[2], job[3], result)
            for session, _, loop, future in (job for job in jobs if job[1] is None):
                try:
                    result = session.finish()
                except Exception as e:
                    _resolve(loop, future, error=e)
                else:
                    _resolve(loop, future, result)


def _resolve(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any = None, error: BaseException | None = None
) -> None:
    """Set an asyncio future from a worker thread (unless its stream is gone or the loop closed)."""

    def settle() -> None:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody waits any more
        loop.call_soon_threadsafe(settle)


class Service:
    """The models, decoders, thread pools and counters behind the app (no web framework here).

    Raises on a bad ``--model-path`` or decoder settings; a missing or non-streamable stream
    model only sets :attr:`stream_error`.
    """

    def __init__(
        self,
        inference: InferenceConfig,
        stream_model_path: Path | None,
        decoder_cfg: DecoderConfig,
        limits: Limits = Limits(),
        record_dir: Path | None = None,
    ) -> None:
        self.limits = limits
        self.decoder_cfg = decoder_cfg
        self.recognizer = load_recognizer(inference)
        self.decoder = _thread_safe(make_decoder(decoder_cfg, self.recognizer.labels))
        self.lm = {"path": str(decoder_cfg.lm_path), "name": Path(decoder_cfg.lm_path).name} if decoder_cfg.lm_path else None
        self.stream_model: Any = None
        self.stream_error: str | None = None
        self.stream_info: dict | None = None
        self._load_stream_model(stream_model_path, inference)
        self.record_dir = Path(record_dir) if record_dir else None
        if self.record_dir:
            self.record_dir.mkdir(parents=True, exist_ok=True)
        self._record_ids = itertools.count(1)
        self.pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="transcribe")
        self.streams = StreamBatcher(limits.stream_workers)
        self.active_streams = 0
        self.pending = 0
        self.counters = {"transcribed": 0, "streams_finished": 0, "rejected": 0}

    def _load_stream_model(self, path: Path | None, inference: InferenceConfig) -> None:
        from checkpoint import CheckpointError, load_checkpoint
        from streaming import StreamingError, algorithmic_latency, check_streamable

        if path is None:
            self.stream_error = "streaming is unavailable: the server was started without a streaming model"
            return
        path = Path(path)
        if not path.is_file():
            self.stream_error = (
                f"streaming is unavailable: no streaming model at {path} (train one with train.py "
                "--no-bidirectional --normalize global and save it there, or pass --stream-model-path)"
            )
            return
        try:
            ckpt = load_checkpoint(path)
            check_streamable(ckpt.model_config, ckpt.audio_config)
            model = ckpt.build_model("cuda" if inference.cuda else "cpu")
            decoder = _thread_safe(make_decoder(self.decoder_cfg, ckpt.labels))
        except (CheckpointError, StreamingError, ValueError) as e:
            self.stream_error = f"streaming is unavailable: {e}"
            return
        self.stream_model, self.stream_audio_config, self.stream_labels = model, ckpt.audio_config, ckpt.labels
        self.stream_decoder = decoder
        self.stream_info = _model_info(path, ckpt, model.cfg.arch)
        self.stream_latency = algorithmic_latency(model.cfg, ckpt.audio_config)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.streams.close()
        self.decoder.close()
        if self.stream_model is not None:
            self.stream_decoder.close()

    # -- uploads (run in self.pool)

    def meta(self) -> dict:
        return {"acoustic_model": self.recognizer.info, "language_model": self.lm, "decoder": self.decoder.describe()}

    def transcribe_bytes(self, data: bytes, filename: str) -> dict:
        """Decode, check and transcribe an uploaded file; :class:`ClientError` for unusable audio."""
        import soundfile as sf

        rate = self.recognizer.audio_config.sample_rate
        limit = self.limits.max_upload_seconds
        try:
            info = sf.info(io.BytesIO(data))
        except Exception:  # soundfile raises several types for bytes it cannot parse
            info = None
        if info is not None and info.samplerate > 0 and info.frames > 0 and info.frames / info.samplerate > limit:
            raise ClientError(f"{filename}: audio lasts {info.frames / info.samplerate:.1f} s; the limit is {limit:g} s", 413)
        try:
            audio = read_audio_bytes(data, rate, source=filename)
        except AudioError as e:  # soundfile names the in-memory file object: leave that out
            raise ClientError(re.sub(r"Error opening <[^>]*>: ", "", str(e)), 400) from None
        if len(audio) / rate > limit:
            raise ClientError(f"{filename}: audio lasts {len(audio) / rate:.1f} s; the limit is {limit:g} s", 413)
        result = transcribe_audio(self.recognizer, self.decoder, audio)
        out = {
            "status": "OK",
            "transcription": result["transcription"],
            "words": result["words"],
            "duration": round(len(audio) / rate, 3),
        }
        if "alternatives" in result:
            out["alternatives"] = result["alternatives"]
        out["_meta"] = self.meta()
        return out

    # -- streams

    def health(self) -> dict:
        stream = {"available": self.stream_model is not None, "error": self.stream_error}
        if self.stream_model is not None:
            stream.update(
                model=self.stream_info,
                sample_rate=self.stream_audio_config.sample_rate,
                algorithmic_latency_ms=self.stream_latency.as_ms(),
                decoder=self.stream_decoder.describe(),
                partials="greedy",
            )
        return {
            "status": "ok",
            "transcribe": {**self.meta(), "sample_rate": self.recognizer.audio_config.sample_rate},
            "stream": stream,
            "load": {
                "active_streams": self.active_streams,
                "pending_transcriptions": self.pending,
                **self.counters,
                **self.streams.counters,
            },
            "limits": asdict(self.limits),
        }

    def new_session(self, sample_rate: int, fmt: str) -> "StreamSession":
        return StreamSession(self, sample_rate, fmt)

    def record(self, samples: np.ndarray, sample_rate: int, fmt: str, result: dict | None) -> None:
        """Test mode (``--record-dir``): the audio a stream received, as float32 WAV at its rate, and its result."""
        import soundfile as sf

        if self.record_dir is None:
            return
        stem = self.record_dir / f"stream-{next(self._record_ids):05d}"
        sf.write(str(stem.with_suffix(".wav")), samples, sample_rate, subtype="FLOAT")
        stem.with_suffix(".json").write_text(
            json.dumps({"sample_rate": sample_rate, "format": fmt, "samples": int(len(samples)), "result": result})
        )


class StreamSession:
    """One WebSocket stream: resampling to the model's rate and the streaming recognizer.
    Its methods run in a :class:`StreamBatcher` worker, one call at a time."""

    def __init__(self, service: Service, sample_rate: int, fmt: str) -> None:
        from streaming import StreamingRecognizer, StreamResampler

        self.service = service
        self.sample_rate, self.format = sample_rate, fmt
        self.recognizer = StreamingRecognizer(
            service.stream_model, service.stream_audio_config, service.stream_labels, service.stream_decoder
        )
        self.resampler = StreamResampler(sample_rate, service.stream_audio_config.sample_rate)
        self.samples_in = 0
        self.recorded: list[np.ndarray] | None = [] if service.record_dir else None

    def decode(self, data: bytes) -> np.ndarray:
        """A binary message as float32 samples (:class:`ClientError` if it does not hold whole finite samples)."""
        width = 2 if self.format == "pcm16" else 4
        if len(data) % width:
            raise ClientError(f"a {self.format} message must hold whole {width}-byte samples; got {len(data)} bytes", 1008)
        if self.format == "pcm16":
            # soundfile's scaling of 16-bit PCM, so that a WAV file and its samples streamed agree exactly
            return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)
        x = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise ClientError("audio holds NaN or infinite samples", 1008)
        return x

    def resample(self, samples: np.ndarray) -> np.ndarray:
        """Count, record and resample received samples to the model's rate."""
        self.samples_in += len(samples)
        if self.recorded is not None:
            self.recorded.append(samples)
        return self.resampler.push(samples)

    def finish(self) -> dict:
        self.recognizer.accept(self.resampler.finish())
        result = self.recognizer.finish()
        result["duration"] = round(self.samples_in / self.sample_rate, 3)
        self.save(result)
        return result

    def save(self, result: dict | None) -> None:
        if self.recorded is not None:
            samples = np.concatenate(self.recorded) if self.recorded else np.zeros(0, dtype=np.float32)
            self.recorded = None
            self.service.record(samples, self.sample_rate, self.format, result)


def accept_sessions(sessions: Sequence[StreamSession], chunks: Sequence[np.ndarray]) -> list[tuple[str, int, float]]:
    """Feed one chunk to each of several streams at once; (partial text, final output frames,
    seconds received) for each."""
    from streaming import accept_many

    resampled = [session.resample(chunk) for session, chunk in zip(sessions, chunks)]
    partials = accept_many([session.recognizer for session in sessions], resampled)
    return [(p, s.recognizer.n_frames, round(s.samples_in / s.sample_rate, 3)) for p, s in zip(partials, sessions)]


def parse_config(text: str | None) -> tuple[int, str]:
    """(sample_rate, format) from the first stream message; :class:`ClientError` if it is not a valid config."""
    example = '{"sample_rate": 16000, "format": "pcm16"}'
    if text is None:
        raise ClientError(f"the first message must be the JSON config as text, e.g. {example}; got binary data", 1008)
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError:
        raise ClientError(f"the first message must be a JSON config such as {example}; got {text[:80]!r}", 1008) from None
    if not isinstance(cfg, dict):
        raise ClientError(f"the config must be a JSON object such as {example}", 1008)
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ClientError(f"unknown config keys {unknown}; known keys: {list(CONFIG_KEYS)}", 1008)
    rate = cfg.get("sample_rate")
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if type(rate) is not int or not MIN_RATE <= rate <= MAX_RATE:
        raise ClientError(
            f"config 'sample_rate' must be an integer number of Hz in [{MIN_RATE}, {MAX_RATE}], got {cfg.get('sample_rate')!r}",
            1008,
        )
    fmt = cfg.get("format", "pcm16")
    if fmt not in FORMATS:
        raise ClientError(f"config 'format' must be one of {list(FORMATS)}, got {fmt!r}", 1008)
    return rate, fmt


# ---------------------------------------------------------------------------- the app


def error_body(message: str) -> dict:
    return {"status": "error", "message": message}


class UploadLimit:
    """ASGI middleware: refuse an upload body over ``limit`` bytes with a JSON 413, whether the
    client declares its length or not. The refused body is read and dropped (up to a bound) so
    that the client sees the answer rather than a reset connection."""

    def __init__(self, app: Any, limit: int, path: str = UPLOAD_PATH) -> None:
        self.app, self.limit, self.path = app, limit, path
        self.drain_limit = max(4 * limit, 16 * 2**20)

    def _message(self) -> str:
        return f"upload larger than the limit of {self.limit} bytes (--max-upload-mb)"

    async def _drain(self, receive: Any, already: int) -> None:
        seen = already
        while seen <= self.drain_limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await JSONResponse(error_body("bad Content-Length header"), 400)(scope, receive, send)
                return
            if size > self.limit:
                await self._drain(receive, 0)
                await JSONResponse(error_body(self._message()), 413)(scope, receive, send)
                return
        seen = 0
        drain, message = self._drain, self._message()

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    if msg.get("more_body", False):
                        await drain(receive, seen)
                    raise StarletteHTTPException(413, message)
            return msg

        await self.app(scope, limited_receive, send)


def create_app(service: Service) -> Any:
    """The FastAPI app serving ``service``."""
    limits = service.limits

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="deepspeech-ctc server",
        description="Speech recognition with DeepSpeech 2 / CTC: upload a file to /transcribe, or stream audio "
        "over the WebSocket /stream (protocol in server.py's docstring).",
        version="1",
        lifespan=lifespan,
        debug=False,
    )
    app.state.service = service

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(error_body(message), status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Any, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Any, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        return error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def internal_error(request: Any, exc: Exception) -> JSONResponse:
        log.error("internal error on %s: %r", request.url.path, exc, exc_info=exc)
        return error(500, "internal server error")

    responses = {
        code: {"description": text, "content": {"application/json": {"example": error_body(text)}}}
        for code, text in (
            (400, "bad or empty audio, or no file"),
            (413, "upload too large or too long"),
            (503, "too many transcriptions waiting"),
        )
    }

    @app.post(UPLOAD_PATH, responses=responses, summary="Transcribe an audio file")
    async def transcribe(
        file: UploadFile | None = File(None, description="audio file: WAV, FLAC, OGG or MP3, any sample rate and channel count"),
    ):
        """deepspeech.pytorch's contract: ``{"status": "OK", "transcription": ...}``, plus word times
        (``words``), ``duration`` (seconds) and ``_meta`` (model, LM, decoder)."""
        if file is None or isinstance(file, str):
            return error(400, "audio file should be passed for the transcription (multipart field 'file')")
        name = file.filename or "upload"
        data = await file.read()
        if len(data) > limits.max_upload_bytes:
            return error(413, f"upload larger than the limit of {limits.max_upload_bytes} bytes (--max-upload-mb)")
        if not data:
            return error(400, f"{name}: empty file")
        if service.pending >= limits.max_pending:
            service.counters["rejected"] += 1
            return error(
                503, f"server busy: {service.pending} transcriptions waiting or running; try again later", {"Retry-After": "1"}
            )
        service.pending += 1
        try:
            result = await asyncio.get_running_loop().run_in_executor(service.pool, service.transcribe_bytes, data, name)
        except ClientError as e:
            return error(e.status, str(e))
        finally:
            service.pending -= 1
        service.counters["transcribed"] += 1
        return result

    @app.get("/health", summary="Models, limits and load")
    async def health() -> dict:
        return service.health()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def receive(ws: WebSocket) -> tuple[str | None, bytes | None]:
        """The next message as (text, bytes); WebSocketDisconnect when the client is gone."""
        try:
            message = await asyncio.wait_for(ws.receive(), limits.idle_timeout)
        except asyncio.TimeoutError:
            raise ClientError(f"idle timeout: no message for {limits.idle_timeout:g} s", 1008) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message.get("text"), message.get("bytes")

    async def close_with_error(ws: WebSocket, message: str, code: int) -> None:
        with contextlib.suppress(Exception):
            await ws.send_text(json.dumps({"error": message}))
            await ws.close(code)

    async def run_stream(ws: WebSocket) -> None:
        text, _ = await receive(ws)
        sample_rate, fmt = parse_config(text)
        session = service.new_session(sample_rate, fmt)
        loop = asyncio.get_running_loop()
        pending: list[np.ndarray] = []
        backlog = {"samples": 0, "eof": False}
        wake, drained = asyncio.Event(), asyncio.Event()
        max_samples = limits.max_stream_seconds * sample_rate
        max_backlog = limits.max_backlog_seconds * sample_rate
        try:

            async def reader() -> None:
                received = 0
                while True:
                    text, data = await receive(ws)
                    if data is not None:
                        if len(data) > limits.max_message_bytes:
                            raise ClientError(
                                f"binary message of {len(data)} bytes; the limit is "
                                f"{limits.max_message_bytes}: send smaller chunks",
                                1009,
                            )
                        samples = session.decode(data)
                        received += len(samples)
                        if received > max_samples:
                            raise ClientError(f"stream longer than the limit of {limits.max_stream_seconds:g} s", 1008)
                        while backlog["samples"] > max_backlog:  # the recognizer is behind: stop reading
                            drained.clear()
                            await drained.wait()
                        pending.append(samples)
                        backlog["samples"] += len(samples)
                        wake.set()
                        continue
                    try:
                        msg = json.loads(text or "")
                    except json.JSONDecodeError:
                        msg = None
                    if isinstance(msg, dict) and msg.get("eof"):
                        backlog["eof"] = True
                        wake.set()
                        return
                    raise ClientError('unexpected text message: send audio as binary messages and {"eof": 1} at the end', 1008)

            async def processor() -> None:
                frames_sent = 0
                while True:
                    await wake.wait()
                    wake.clear()
                    if pending:
                        chunk = np.concatenate(pending)
                        pending.clear()
                        backlog["samples"] = 0
                        drained.set()
                        partial, frames, audio_s = await service.streams.accept(session, chunk)
                        if frames != frames_sent:
                            frames_sent = frames
                            await ws.send_text(json.dumps({"partial": partial, "audio_s": audio_s, "frames": frames}))
                    if backlog["eof"] and not pending:
                        if session.samples_in == 0:
                            raise ClientError('empty audio: no samples arrived before {"eof": 1}', 1008)
                        result = await service.streams.finish(session)
                        await ws.send_text(json.dumps(result))
                        with contextlib.suppress(Exception):
                            await ws.close(1000)
                        service.counters["streams_finished"] += 1
                        return

            proc_task = asyncio.create_task(processor())
            tasks = {asyncio.create_task(reader()), proc_task}
            try:
                while not proc_task.done():
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        if task.exception() is not None:
                            raise task.exception()
                    tasks = {t for t in tasks if not t.done()}
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if session.recorded is not None:
                await loop.run_in_executor(None, session.save, None)

    @app.websocket("/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        if service.stream_model is None:
            await close_with_error(ws, service.stream_error or "streaming is unavailable", 1011)
            return
        if service.active_streams >= limits.max_streams:
            service.counters["rejected"] += 1
            await close_with_error(ws, f"too many concurrent streams (the limit is {limits.max_streams}); try again later", 1013)
            return
        service.active_streams += 1
        try:
            await run_stream(ws)
        except WebSocketDisconnect:
            pass
        except ClientError as e:
            await close_with_error(ws, str(e), e.status)
        except Exception as e:  # a bug or a failed send: log it, tell the client nothing more than this
            log.error("stream failed: %r", e, exc_info=e)
            await close_with_error(ws, "internal server error", 1011)
        finally:
            service.active_streams -= 1

    app.add_middleware(UploadLimit, limit=limits.max_upload_bytes)
    return app


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    d = Limits()
    p = make_parser(__doc__)
    InferenceConfig.add_args(p, default_model=DEFAULT_MODEL)
    p.add_argument(
        "--stream-model-path",
        type=Path,
        default=Path(DEFAULT_STREAM_MODEL),
        help="unidirectional model with global normalisation for /stream",
    )
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)")
    g.add_argument("--port", type=int, default=8888)
    g.add_argument("--workers", type=int, default=d.workers, help="threads transcribing uploads")
    g.add_argument(
        "--stream-workers",
        type=int,
        default=d.stream_workers,
        help="threads running streams; each runs the chunks of all streams waiting as one batch",
    )
    g.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    g.add_argument(
        "--shutdown-timeout", type=float, default=5.0, help="on SIGTERM, seconds to let open requests finish before closing them"
    )
    g.add_argument(
        "--record-dir",
        type=Path,
        default=None,
        help="testing and debugging: write the audio each stream received (float32 WAV at the client's rate) and its result here",
    )
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / 2**20, help="largest upload")
    g.add_argument("--max-upload-seconds", type=float, default=d.max_upload_seconds, help="longest uploaded audio")
    g.add_argument("--max-stream-seconds", type=float, default=d.max_stream_seconds, help="longest stream")
    g.add_argument("--max-streams", type=int, default=d.max_streams, help="streams open at once")
    g.add_argument("--max-pending", type=int, default=d.max_pending, help="uploads waiting or being transcribed; more get 503")
    g.add_argument(
        "--idle-timeout", type=float, default=d.idle_timeout, help="close a stream after this many seconds without a message"
    )
    g.add_argument("--max-message-kb", type=float, default=d.max_message_bytes / 1024, help="largest binary message on a stream")
    DecoderConfig.add_args(p)
    return p


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_upload_seconds=args.max_upload_seconds,
        max_stream_seconds=args.max_stream_seconds,
        max_streams=args.max_streams,
        max_pending=args.max_pending,
        idle_timeout=args.idle_timeout,
        max_message_bytes=int(args.max_message_kb * 1024),
        workers=args.workers,
        stream_workers=args.stream_workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.amp:
        parser.error("--amp is not supported by the server")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in [0, 65535]")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        limits = limits_from_args(args)
        decoder_cfg = DecoderConfig.from_args(args)
        inference = InferenceConfig.from_args(args)
        if inference.threads is None:  # concurrency comes from the thread pools: one torch thread each
            inference = InferenceConfig(inference.model_path, inference.cuda, inference.amp, 1)
        service = Service(inference, args.stream_model_path, decoder_cfg, limits, args.record_dir)
    except (ImportError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if service.stream_error:
        log.warning("%s", service.stream_error)
    import uvicorn

    config = uvicorn.Config(
        create_app(service),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        ws_max_size=max(2 * service.limits.max_message_bytes, 2**16),
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=max(1, math.ceil(args.shutdown_timeout)),
        lifespan="on",
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then hands the signal back to the previous
    # handler: make that one a no-op so that a requested stop exits with status 0.
    stops: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stops.append(signum))
    server.run()
    if stops:
        log.info("stopped by signal %d", stops[0])
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
