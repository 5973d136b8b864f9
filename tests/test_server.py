"""server.py: the /transcribe contract, the /stream protocol (final text == transcribe.py), every
limit and bad input, health, docs, robustness and a clean shutdown. Tiny random models."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

for _module in ("fastapi", "uvicorn", "websockets", "httpx", "multipart"):  # pip install -r requirements-dev.txt
    pytest.importorskip(_module)

import httpx  # noqa: E402
from conftest import REPO  # noqa: E402
from serve import free_port, make_service, serve  # noqa: E402
from stream_models import save_model, speechlike, tiny_offline_model, tiny_stream_model  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

import server  # noqa: E402
import transcribe  # noqa: E402

LIMITS = dict(
    max_upload_bytes=400_000,
    max_upload_seconds=6.0,
    max_stream_seconds=5.0,
    max_streams=3,
    max_pending=3,
    idle_timeout=1.5,
    max_message_bytes=64_000,
    workers=2,
    stream_workers=2,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("server_models")
    offline, offline_audio = tiny_offline_model(21)
    streaming, stream_audio = tiny_stream_model(22, lookahead_context=3)
    return {
        "offline": save_model(root / "offline.pth", offline, offline_audio),
        "stream": save_model(root / "stream.pth", streaming, stream_audio),
        "root": root,
    }


@pytest.fixture(scope="module")
def running(models, tmp_path_factory) -> tuple[str, Path]:
    """("127.0.0.1:PORT", the folder where the server records its streams)."""
    record = tmp_path_factory.mktemp("records")
    service = make_service(models["offline"], models["stream"], record_dir=record, **LIMITS)
    with serve(service) as address:
        yield address, record


@pytest.fixture(scope="module")
def addr(running) -> str:
    return running[0]


def wav_bytes(audio: np.ndarray, rate: int = 16000, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def offline(model: Path, path: Path, capsys, *flags: str) -> dict:
    """transcribe.py's entry for one file (with word offsets, the whole file as one chunk)."""
    capsys.readouterr()
    assert (
        transcribe.main(["--model-path", str(model), "--audio-path", str(path), "--offsets", "--chunk-seconds", "0", *flags]) == 0
    )
    return json.loads(capsys.readouterr().out)


def post(addr: str, data: bytes, name: str = "a.wav", field: str = "file", **kw) -> httpx.Response:
    return httpx.post(f"http://{addr}/transcribe", files={field: (name, data)}, timeout=60, **kw)


def assert_error(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == "error" and set(body) == {"status", "message"}, body
    for word in words:
        assert word in body["message"], body["message"]
    assert "Traceback" not in r.text


def run_stream(
    addr: str, chunks: list, config: dict | str | bytes | None = None, eof: bool = True
) -> tuple[list[dict], int | None]:
    """Open /stream, send the config, the chunks and eof; returns (JSON messages received, close code)."""
    messages: list[dict] = []
    with connect(f"ws://{addr}/stream", max_size=None, compression=None, open_timeout=30) as ws:
        try:
            if config is not None:
                ws.send(config if isinstance(config, (str, bytes)) else json.dumps(config))
            for chunk in chunks:
                ws.send(chunk)
            if eof:
                ws.send(json.dumps({"eof": 1}))
        except ConnectionClosed:
            pass
        try:
            for message in ws:
                messages.append(json.loads(message))
        except ConnectionClosed:
            pass
        return messages, ws.close_code


def chunked(data: bytes, rng: np.random.Generator, width: int, low: int = 1, high: int = 8000) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = int(rng.integers(low, high)) * width
        out.append(data[pos : pos + size])
        pos += size
    return out


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def health(addr: str) -> dict:
    r = httpx.get(f"http://{addr}/health", timeout=30)
    assert r.status_code == 200
    return r.json()


# ---------------------------------------------------------------------------- /transcribe


@pytest.mark.parametrize(
    "rate, channels, fmt, subtype",
    [
        (16000, 1, "WAV", "PCM_16"),
        (44100, 2, "FLAC", "PCM_16"),
        (8000, 1, "WAV", "FLOAT"),
        (22050, 1, "OGG", "VORBIS"),
    ],
)
def test_transcribe_matches_transcribe_py(addr, models, tmp_path, capsys, rate, channels, fmt, subtype):
    audio = speechlike(1.4, rate, seed=rate)
    if channels == 2:
        audio = np.stack([audio, 0.5 * audio], axis=1)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(str(path), audio, rate, format=fmt, subtype=subtype)
    r = post(addr, path.read_bytes(), path.name)
    assert r.status_code == 200, r.text
    body = r.json()
    expected = offline(models["offline"], path, capsys)
    entry = expected["output"][0]
    assert body["status"] == "OK"
    assert body["transcription"] == entry["transcription"] and body["transcription"]
    assert body["words"] == entry["words"] and body["duration"] == entry["duration"]
    assert body["_meta"]["acoustic_model"]["name"] == "offline.pth"
    assert body["_meta"]["decoder"] == expected["_meta"]["decoder"] == {"type": "greedy"}


def test_transcribe_with_beam_and_lm_matches_transcribe_py(tmp_path, capsys):
    pytest.importorskip("flashlight.lib.text")
    from decoder import DecoderConfig

    lm = REPO / "models" / "an4_3gram.arpa"
    model = REPO / "models" / "an4.pth"
    clip = REPO / "examples" / "an421-menk-b.wav"
    service = make_service(model, None, decoder=DecoderConfig(decoder="beam", lm_path=lm), **LIMITS)
    with serve(service) as address:
        r = post(address, clip.read_bytes(), clip.name)
        assert health(address)["stream"]["available"] is False
    expected = offline(model, clip, capsys, "--decoder", "beam", "--lm-path", str(lm))
    assert r.status_code == 200
    assert r.json()["transcription"] == expected["output"][0]["transcription"] == "ENTER TWENTY ONE"
    assert r.json()["_meta"]["language_model"]["name"] == "an4_3gram.arpa"
    assert r.json()["_meta"]["decoder"]["type"] == "beam"


def test_transcribe_with_an_onnx_model_matches_transcribe_py(models, tmp_path, capsys):
    """--model-path M.onnx: uploads run on onnxruntime and give transcribe.py's result with the same file."""
    pytest.importorskip("onnxruntime")
    from checkpoint import load_checkpoint
    from onnx_export import export_onnx

    ckpt = load_checkpoint(models["offline"])
    onnx_path = export_onnx(ckpt.build_model(), ckpt.audio_config, ckpt.labels, tmp_path / "offline.onnx")
    clip = tmp_path / "clip.wav"
    sf.write(str(clip), speechlike(1.6, 16000, seed=5), 16000, subtype="PCM_16")
    with serve(make_service(onnx_path, models["stream"], **LIMITS)) as address:
        r = post(address, clip.read_bytes(), clip.name)
        h = health(address)
    assert r.status_code == 200, r.text
    expected = offline(onnx_path, clip, capsys)["output"][0]
    assert r.json()["transcription"] == expected["transcription"] and expected["transcription"]
    assert r.json()["words"] == expected["words"]
    assert r.json()["_meta"]["acoustic_model"]["format"] == "onnx"
    assert h["transcribe"]["acoustic_model"]["name"] == "offline.onnx" and h["stream"]["available"] is True


def test_transcribe_without_a_file(addr):
    message = "audio file should be passed for the transcription"
    assert_error(httpx.post(f"http://{addr}/transcribe", timeout=30), 400, message)
    assert_error(httpx.post(f"http://{addr}/transcribe", data={"other": "x"}, timeout=30), 400, message)
    assert_error(post(addr, b"RIFF", field="audio"), 400, message)
    assert_error(
        httpx.post(f"http://{addr}/transcribe", content=b"\x00" * 100, timeout=30, headers={"content-type": "audio/wav"}),
        400,
        message,
    )


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"", 400, ["empty"]),
        (b"this is not audio" * 100, 400, ["cannot read audio"]),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", 400, ["cannot read audio"]),
    ],
)
def test_transcribe_bad_audio(addr, data, status, words):
    r = post(addr, data, "bad.wav")
    assert_error(r, status, *words)
    assert "BytesIO" not in r.json()["message"]


def test_transcribe_wav_holding_no_samples(addr):
    assert_error(post(addr, wav_bytes(np.zeros(0, dtype=np.float32))), 400, "no samples")


def test_transcribe_garbage_multipart(addr):
    r = httpx.post(
        f"http://{addr}/transcribe",
        content=b"--x\r\ngarbage",
        timeout=30,
        headers={"content-type": "multipart/form-data; boundary=zzz"},
    )
    assert_error(r, 400)


def test_upload_limits(addr):
    big = b"\x00" * (LIMITS["max_upload_bytes"] + 1)
    assert_error(post(addr, big), 413, "upload larger than the limit of 400000 bytes")
    # without a Content-Length: the body is counted as it arrives
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def gen():
        for i in range(0, len(body), 50_000):
            yield body[i : i + 50_000]

    r = httpx.post(
        f"http://{addr}/transcribe",
        content=gen(),
        timeout=30,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(r, 413, "upload larger than the limit")
    # small in bytes but too long: 8 kHz 16-bit, 7 s = 112 kB
    assert_error(post(addr, wav_bytes(speechlike(7.0, 8000), 8000)), 413, "lasts 7.0 s", "limit is 6 s")
    assert health(addr)["status"] == "ok"


def test_unknown_routes_and_methods_answer_json(addr):
    r = httpx.get(f"http://{addr}/nope", timeout=30)
    assert r.status_code == 404 and r.json()["status"] == "error"
    r = httpx.get(f"http://{addr}/transcribe", timeout=30)
    assert r.status_code == 405 and r.json()["status"] == "error"


def test_busy_server_answers_503_and_health_stays_responsive(models, monkeypatch):
    """Uploads beyond --max-pending get 503; inference runs off the event loop, so /health
    answers at once while every worker is busy."""
    service = make_service(models["offline"], None, **{**LIMITS, "max_pending": 2, "workers": 1})
    fast_forward = service.recognizer.forward_padded

    def slow(features, lengths):
        time.sleep(1.0)
        return fast_forward(features, lengths)

    monkeypatch.setattr(service.recognizer, "forward_padded", slow)
    data = wav_bytes(speechlike(0.5))
    results: list[httpx.Response] = []
    with serve(service) as address:
        threads = [threading.Thread(target=lambda: results.append(post(address, data))) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        time.sleep(0.2)
        start = time.monotonic()
        h = health(address)
        assert time.monotonic() - start < 0.5
        assert h["load"]["pending_transcriptions"] == 2
        for t in threads:
            t.join(30)
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 503, 503]
    busy = next(r for r in results if r.status_code == 503)
    assert_error(busy, 503, "server busy")
    assert busy.headers["retry-after"] == "1"


# ---------------------------------------------------------------------------- health, docs, page


def test_health(addr):
    h = health(addr)
    assert h["status"] == "ok"
    assert h["stream"]["available"] is True and h["stream"]["sample_rate"] == 16000
    assert h["stream"]["algorithmic_latency_ms"]["total_ms"] == 10 + 150 + 2 * 40
    assert h["transcribe"]["acoustic_model"]["name"] == "offline.pth"
    assert h["limits"]["max_streams"] == 3 and h["limits"]["max_upload_bytes"] == 400_000


def test_openapi_docs_and_page(addr):
    schema = httpx.get(f"http://{addr}/openapi.json", timeout=30).json()
    assert {"/transcribe", "/health"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/transcribe"]["post"]["requestBody"]["content"]
    assert httpx.get(f"http://{addr}/docs", timeout=30).status_code == 200
    page = httpx.get(f"http://{addr}/", timeout=30)
    assert page.status_code == 200 and "Microphone" in page.text and "/static/app.js" in page.text
    for name in ("app.js", "recorder-worklet.js", "style.css"):
        assert httpx.get(f"http://{addr}/static/{name}", timeout=30).status_code == 200


# ---------------------------------------------------------------------------- /stream


@pytest.mark.parametrize("rate, fmt", [(16000, "pcm16"), (16000, "float32"), (44100, "float32"), (8000, "pcm16")])
def test_stream_final_equals_transcribe_py(addr, models, tmp_path, capsys, rate, fmt):
    rng = np.random.default_rng(rate)
    audio = speechlike(2.2, rate, seed=rate + 1)
    if fmt == "pcm16":
        path = tmp_path / "clip.wav"
        sf.write(str(path), audio, rate, subtype="PCM_16")
        pcm, _ = sf.read(str(path), dtype="int16")
        data, width = pcm.astype("<i2").tobytes(), 2
    else:
        path = tmp_path / "clip.wav"
        sf.write(str(path), audio, rate, subtype="FLOAT")
        data, width = audio.astype("<f4").tobytes(), 4
    config = {"sample_rate": rate} if fmt == "pcm16" else {"sample_rate": rate, "format": fmt}
    messages, code = run_stream(addr, chunked(data, rng, width, 1, 6000), config)
    expected = offline(models["stream"], path, capsys)["output"][0]
    final = messages[-1]
    assert code == 1000
    assert final["text"] == expected["transcription"] and final["text"]
    assert final["words"] == expected["words"] and final["duration"] == expected["duration"]
    partials = [m for m in messages[:-1]]
    assert partials and all(set(m) == {"partial", "audio_s", "frames"} for m in partials)
    for before, after in zip(partials, partials[1:]):
        assert after["frames"] > before["frames"] and after["audio_s"] >= before["audio_s"]
        assert after["partial"].startswith(before["partial"].rstrip())
    assert final["text"].startswith(partials[-1]["partial"].rstrip())


def test_stream_records_what_it_received(running):
    addr, record_dir = running
    audio = speechlike(0.8, 16000, seed=3)
    messages, _ = run_stream(addr, [audio[:5000].tobytes(), audio[5000:].tobytes()], {"sample_rate": 16000, "format": "float32"})
    assert "text" in messages[-1]
    newest = max(record_dir.glob("stream-*.json"), key=lambda p: p.stat().st_mtime_ns)
    meta = json.loads(newest.read_text())
    assert meta["result"]["text"] == messages[-1]["text"]
    recorded, rate = sf.read(str(newest.with_suffix(".wav")), dtype="float32")
    assert rate == 16000 and np.array_equal(recorded, audio)


@pytest.mark.parametrize(
    "config, words",
    [
        (b"\x00\x01", "first message must be the JSON config"),
        ("not json", "must be a JSON config"),
        ("[16000]", "must be a JSON object"),
        ({"rate": 16000}, "unknown config keys ['rate']"),
        ({}, "'sample_rate' must be an integer"),
        ({"sample_rate": "16000"}, "'sample_rate' must be an integer"),
        ({"sample_rate": 0}, "'sample_rate' must be an integer"),
        ({"sample_rate": 10**7}, "'sample_rate' must be an integer"),
        ({"sample_rate": True}, "'sample_rate' must be an integer"),
        ({"sample_rate": 16000, "format": "mp3"}, "'format' must be one of ['pcm16', 'float32']"),
    ],
)
def test_stream_bad_config(addr, config, words):
    messages, code = run_stream(addr, [], config, eof=False)
    assert code == 1008
    assert len(messages) == 1 and words in messages[0]["error"]


@pytest.mark.parametrize(
    "config, chunks, code, words",
    [
        ({"sample_rate": 16000}, [b"\x00\x01\x02"], 1008, "whole 2-byte samples"),
        ({"sample_rate": 16000, "format": "float32"}, [b"\x00" * 6], 1008, "whole 4-byte samples"),
        ({"sample_rate": 16000, "format": "float32"}, [np.array([0.1, np.nan], "<f4").tobytes()], 1008, "NaN"),
        ({"sample_rate": 16000}, [b"\x00" * 70_000], 1009, "the limit is 64000"),
        ({"sample_rate": 16000}, ["hello"], 1008, "unexpected text message"),
        ({"sample_rate": 16000}, [], 1008, "empty audio"),
        ({"sample_rate": 16000}, [b"\x00" * 32000] * 6, 1008, "stream longer than the limit of 5 s"),
    ],
)
def test_stream_bad_audio_and_limits(addr, config, chunks, code, words):
    messages, close_code = run_stream(addr, chunks, config)
    assert close_code == code
    assert "error" in messages[-1] and words in messages[-1]["error"], messages
    assert health(addr)["status"] == "ok"


def test_stream_idle_timeout(addr):
    with connect(f"ws://{addr}/stream", open_timeout=30) as ws:
        ws.send(json.dumps({"sample_rate": 16000}))
        ws.send(b"\x00" * 3200)
        start = time.monotonic()
        messages = []
        with pytest.raises(ConnectionClosed):
            while True:
                messages.append(json.loads(ws.recv(timeout=10)))
        assert 1.0 < time.monotonic() - start < 5
        assert "idle timeout" in messages[-1]["error"] and ws.close_code == 1008


def test_stream_idle_timeout_before_the_config(addr):
    messages, code = run_stream(addr, [], None, eof=False)
    assert code == 1008 and "idle timeout" in messages[0]["error"]


def test_max_concurrent_streams_and_recovery(addr):
    with contextlib.ExitStack() as stack:
        for _ in range(LIMITS["max_streams"]):
            ws = stack.enter_context(connect(f"ws://{addr}/stream", open_timeout=30))
            ws.send(json.dumps({"sample_rate": 16000}))
        assert wait_for(lambda: health(addr)["load"]["active_streams"] == 3)
        messages, code = run_stream(addr, [b"\x00" * 3200], {"sample_rate": 16000})
        assert code == 1013 and "too many concurrent streams (the limit is 3)" in messages[0]["error"]
    assert wait_for(lambda: health(addr)["load"]["active_streams"] == 0)
    messages, code = run_stream(addr, [speechlike(0.5).tobytes()], {"sample_rate": 16000, "format": "float32"})
    assert code == 1000 and "text" in messages[-1]


def test_concurrent_streams_run_as_batches_and_each_gets_its_own_text(models, tmp_path, capsys, monkeypatch):
    """Six streams at once through one stream worker: their chunks are batched together
    (fewer model calls than chunks) and every final text equals transcribe.py's."""
    audios = [speechlike(float(d), seed=40 + k) for k, d in enumerate([0.4, 0.7, 1.0, 1.2, 1.5, 1.8])]
    expected = []
    for k, audio in enumerate(audios):
        path = tmp_path / f"s{k}.wav"
        sf.write(str(path), audio, 16000, subtype="FLOAT")
        expected.append(offline(models["stream"], path, capsys)["output"][0]["transcription"])
    slow_accept = server.accept_sessions

    def accept_sessions(sessions, chunks):  # a slower model, so that chunks queue up behind a batch
        time.sleep(0.02)
        return slow_accept(sessions, chunks)

    monkeypatch.setattr(server, "accept_sessions", accept_sessions)
    service = make_service(models["offline"], models["stream"], **{**LIMITS, "max_streams": 6, "stream_workers": 1})
    results: list = [None] * len(audios)

    def client(k: int) -> None:
        audio = audios[k]
        results[k] = run_stream(
            address,
            [audio[i : i + 1600].tobytes() for i in range(0, len(audio), 1600)],
            {"sample_rate": 16000, "format": "float32"},
        )

    with serve(service) as address:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(len(audios))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        load = health(address)["load"]
    for k, (messages, code) in enumerate(results):
        assert code == 1000 and messages[-1]["text"] == expected[k], k
    assert load["streams_finished"] == 6
    assert 0 < load["stream_batches"] < load["stream_chunks"]


def test_abrupt_disconnects_leave_the_server_serving(addr):
    audio = speechlike(1.0, seed=9)
    for _ in range(3):
        with contextlib.suppress(ConnectionClosed, OSError), connect(f"ws://{addr}/stream", open_timeout=30) as ws:
            ws.send(json.dumps({"sample_rate": 16000, "format": "float32"}))
            ws.send(audio[:8000].tobytes())
            ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a close frame
    with socket.create_connection(tuple(addr.split(":"))) as s:  # an upload cut off mid-body
        s.sendall(
            b"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n"
        )
    assert wait_for(lambda: health(addr)["load"]["active_streams"] == 0)
    messages, code = run_stream(addr, [audio.tobytes()], {"sample_rate": 16000, "format": "float32"})
    assert code == 1000 and messages[-1]["text"]
    assert post(addr, wav_bytes(audio)).status_code == 200


def test_stream_unavailable_without_a_streaming_model(models, tmp_path):
    missing = tmp_path / "an4_stream.pth"
    service = make_service(models["offline"], missing, **LIMITS)
    with serve(service) as address:
        h = health(address)
        assert h["stream"]["available"] is False and "no streaming model at" in h["stream"]["error"]
        messages, code = run_stream(address, [b"\x00" * 320], {"sample_rate": 16000})
        assert code == 1011 and "streaming is unavailable" in messages[0]["error"]
        assert post(address, wav_bytes(speechlike(0.5))).status_code == 200
    bidirectional = make_service(models["offline"], models["offline"], **LIMITS)
    assert "bidirectional" in bidirectional.stream_error
    bidirectional.close()


def test_partials_arrive_while_audio_is_still_coming_and_slow_senders_are_served(addr, models, tmp_path, capsys):
    audio = speechlike(1.6, seed=12)
    path = tmp_path / "slow.wav"
    sf.write(str(path), audio, 16000, subtype="FLOAT")
    expected = offline(models["stream"], path, capsys)["output"][0]["transcription"]
    with connect(f"ws://{addr}/stream", open_timeout=30) as ws:
        ws.send(json.dumps({"sample_rate": 16000, "format": "float32"}))
        for i in range(0, len(audio), 3200):  # 200 ms of audio every 0.5 s: under half real time
            ws.send(audio[i : i + 3200].tobytes())
            time.sleep(0.5)
        first = json.loads(ws.recv(timeout=10))  # before eof
        assert first["partial"] and first["audio_s"] < 1.6
        ws.send(json.dumps({"eof": 1}))
        messages = [first] + [json.loads(m) for m in ws]
    assert messages[-1]["text"] == expected


def test_internal_errors_answer_json_without_details(models, monkeypatch):
    service = make_service(models["offline"], models["stream"], **LIMITS)

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(service, "transcribe_bytes", broken)
    monkeypatch.setattr(server.StreamSession, "resample", broken)
    with serve(service) as address:
        r = post(address, wav_bytes(speechlike(0.5)))
        assert_error(r, 500, "internal server error")
        assert "secret" not in r.text
        messages, code = run_stream(address, [b"\x00" * 3200], {"sample_rate": 16000})
        assert code == 1011 and messages == [{"error": "internal server error"}]
        assert health(address)["status"] == "ok"


# ---------------------------------------------------------------------------- the command line


def test_main_refuses_bad_settings(models, capsys, tmp_path):
    defaults = server.build_parser().parse_args([])
    assert (defaults.host, defaults.port) == ("127.0.0.1", 8888)  # never the network unless told
    assert str(defaults.model_path) == "models/an4.pth" and str(defaults.stream_model_path) == "models/an4_stream.pth"
    assert server.main(["--model-path", str(tmp_path / "none.pth")]) == 2
    assert "error: " in capsys.readouterr().err
    assert server.main(["--model-path", str(models["offline"]), "--max-streams", "0"]) == 2
    assert "--max-streams must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        server.main(["--amp"])


def test_server_process_serves_and_stops_cleanly_on_sigterm(models):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "server.py"),
            "--model-path",
            str(models["offline"]),
            "--stream-model-path",
            str(models["stream"]),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--shutdown-timeout",
            "2",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"http://{address}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(up, 60), "server did not start"
        with connect(f"ws://{address}/stream", open_timeout=30) as ws:  # a stream left open at shutdown
            ws.send(json.dumps({"sample_rate": 16000}))
            ws.send(b"\x00" * 3200)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{address}/health", timeout=2)


def test_defaults_serve_the_shipped_models(monkeypatch):
    """No flags: the shipped bidirectional model on /transcribe and the shipped streaming model
    on /stream, so the page works out of the box; a streamed example clip gets the text that
    transcribe.py gives with the streaming model."""
    monkeypatch.chdir(REPO)
    args = server.build_parser().parse_args([])
    service = make_service(args.model_path, args.stream_model_path)
    with serve(service) as address:
        h = health(address)
        assert h["stream"]["available"] is True and h["stream"]["algorithmic_latency_ms"]["total_ms"] <= 400
        audio, rate = sf.read(str(REPO / "examples" / "an421-menk-b.wav"), dtype="int16")
        messages, code = run_stream(
            address, [audio[i : i + 1600].tobytes() for i in range(0, len(audio), 1600)], {"sample_rate": rate}
        )
        assert code == 1000 and messages[-1]["text"] == "ENTER TWENTY ONE"
