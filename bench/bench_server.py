"""Load test of server.py on 127.0.0.1: upload throughput, streaming capacity, and good clients
among bad ones.

    python bench/bench_server.py [--model-path models/an4.pth] [--stream-model-path PATH]
        [--http-concurrency 1 2 4] [--http-seconds 8] [--streams 1 2 4 6 8 12 16 24 32]
        [--stream-seconds 6] [--chunk-ms 100] [--latency-budget-ms 300] [--mix-seconds 15]
        [--budget-seconds 400]

It starts ``python server.py`` on a free port of 127.0.0.1 (2 upload threads, 2 stream threads,
1 torch thread each), runs every client in this process with asyncio, and stops the server at
the end. All clients are bounded: ``--http-seconds`` per upload level, ``--stream-seconds`` of
audio per stream, at most the largest ``--streams`` count, and the ramp stops at the first
level that fails or when ``--budget-seconds`` have passed.

* **uploads**: ``--http-concurrency`` clients each post the AN4 example clips (1.5 s) in a loop;
  throughput in seconds of audio per second (x realtime), p50/p95 request latency.
* **streams**: N clients each stream ``--stream-seconds`` of audio (the example clips end to
  end) as 16-bit PCM in ``--chunk-ms`` messages at real-time pace, starts spread over one
  second. A chunk's latency is the time from sending it to the first message covering it
  (``audio_s``), counted for the chunks after the first ``algorithmic latency`` of audio (before
  that no frame can be final). A level passes when the p95 over all chunks is at most
  ``--latency-budget-ms`` and every final text equals the offline transcription of the same
  audio. Capacity = the largest passing N.
* **mix**: for ``--mix-seconds``, half the capacity of good streams and two good upload loops run
  beside bad clients: garbage uploads (expect 400), oversized uploads (413), streams cut off
  mid-way without a close frame, a slow sender (a third of real time; it must still get its
  text), a stalled stream (idle timeout), bad configs and NaN audio (1008). Every good client
  must get its correct text and every bad one its error; the server must be healthy after.

Without ``--stream-model-path`` the streaming model is the recipe's size made streamable (DS2,
3 x 384 unidirectional LSTM, the default lookahead) with random weights: speed does not depend on the
weights, and its (meaningless) text is still deterministic, so correctness is checked against
the offline forward of the same model. Prints a table and, as its last line, JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import websockets  # noqa: E402

EXAMPLES = sorted((ROOT / "examples").glob("*.wav"))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def rounded(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def wav_bytes(audio: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def pcm16(audio: np.ndarray) -> np.ndarray:
    """Int16 samples as a PCM16 WAV file holds them (what the server decodes back exactly)."""
    samples, _ = sf.read(io.BytesIO(wav_bytes(audio)), dtype="int16")
    return samples.astype("<i2")


# ---------------------------------------------------------------------------- setup


class Setup:
    """Models, audio and the texts the server must return, computed offline before any load."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        import torch

        from checkpoint import Checkpoint, load_checkpoint, save_checkpoint
        from data.audio import load_audio
        from decoder import GreedyDecoder
        from inference import InferenceConfig, TorchRecognizer, transcribe_audio

        torch.set_num_threads(1)
        self.model_path = Path(args.model_path)
        if args.stream_model_path:
            self.stream_model_path = Path(args.stream_model_path)
            self.stream_note = str(self.stream_model_path)
        else:
            from bench.bench_streaming import recipe_stream_model

            model, audio_config, labels = recipe_stream_model()
            self.stream_model_path = save_checkpoint(work / "stream.pth", Checkpoint.from_model(model, audio_config, labels))
            self.stream_note = (
                f"random weights, DS2 3 x 384 unidirectional LSTM, lookahead {model.cfg.lookahead_context} (the recipe's size)"
            )
        offline = TorchRecognizer.load(InferenceConfig(self.model_path, threads=1))
        greedy = GreedyDecoder(offline.labels)
        self.clips = [load_audio(p, 16000) for p in EXAMPLES]
        self.clip_bytes = [wav_bytes(a) for a in self.clips]
        self.clip_texts = [transcribe_audio(offline, greedy, a)["transcription"] for a in self.clips]
        self.clip_seconds = [len(a) / 16000 for a in self.clips]

        ckpt = load_checkpoint(self.stream_model_path)
        stream = TorchRecognizer(ckpt.build_model(), ckpt.audio_config, ckpt.labels)
        stream_greedy = GreedyDecoder(ckpt.labels)
        from streaming import algorithmic_latency

        self.latency_s = algorithmic_latency(ckpt.model_config, ckpt.audio_config).total_s
        self.model_cfg = ckpt.model_config

        def expected(audio: np.ndarray) -> tuple[np.ndarray, str]:
            samples = pcm16(audio)
            as_read = samples.astype(np.float32) / np.float32(32768.0)
            return samples, transcribe_audio(stream, stream_greedy, as_read, chunk_seconds=0)["transcription"]

        joined = np.concatenate(self.clips)
        long = np.tile(joined, int(np.ceil(args.stream_seconds * 16000 / len(joined))))[: int(args.stream_seconds * 16000)]
        self.stream_pcm, self.stream_text = expected(long)
        self.slow_pcm, self.slow_text = expected(joined[: 2 * 16000])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(setup: Setup, port: int, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(ROOT / "server.py"),
        "--model-path",
        str(setup.model_path),
        "--stream-model-path",
        str(setup.stream_model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
        "--stream-workers",
        "2",
        "--threads",
        "1",
        "--max-streams",
        "64",
        "--max-pending",
        "64",
        "--max-upload-mb",
        "1",
        "--idle-timeout",
        "3",
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)


async def wait_up(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("the server exited at start-up")
            try:
                if (await client.get(f"{base}/health", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not start")


# ---------------------------------------------------------------------------- clients


async def upload_loop(client: httpx.AsyncClient, base: str, setup: Setup, until: float, out: dict) -> None:
    i = random.randrange(len(setup.clips))
    while time.monotonic() < until:
        i = (i + 1) % len(setup.clips)
        start = time.monotonic()
        r = await client.post(f"{base}/transcribe", files={"file": ("clip.wav", setup.clip_bytes[i])}, timeout=120)
        latency = time.monotonic() - start
        ok = r.status_code == 200 and r.json().get("transcription") == setup.clip_texts[i]
        out["latencies"].append(latency)
        out["audio_s"] += setup.clip_seconds[i] if ok else 0.0
        out["ok" if ok else "wrong"] += 1


async def stream_client(
    ws_url: str, samples: np.ndarray, expected: str, chunk_ms: float, speed: float = 1.0, delay: float = 0.0, skip_s: float = 0.0
) -> dict:
    """Stream 16 kHz PCM16 samples at ``speed`` x real time; per-chunk latencies and the final text."""
    await asyncio.sleep(delay)
    chunk = int(16000 * chunk_ms / 1000)
    ends, sent_at, received = [], [], []
    result: dict = {"ok": False}
    async with websockets.connect(ws_url, max_size=None, compression=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"sample_rate": 16000, "format": "pcm16"}))

        async def reader() -> None:
            async for message in ws:
                msg = json.loads(message)
                received.append((time.monotonic(), msg))

        task = asyncio.create_task(reader())
        start = time.monotonic()
        for i in range(0, len(samples), chunk):
            end = min(len(samples), i + chunk)
            await asyncio.sleep(max(0.0, start + end / 16000 / speed - time.monotonic()))
            await ws.send(samples[i:end].tobytes())
            ends.append(end / 16000)
            sent_at.append(time.monotonic())
        eof_at = time.monotonic()
        await ws.send(json.dumps({"eof": 1}))
        try:
            await asyncio.wait_for(task, 120)
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            pass
    finals = [(t, m) for t, m in received if "text" in m]
    if finals:
        t_final, final = finals[-1]
        result.update(ok=final["text"] == expected, final_latency=t_final - eof_at)
    errors = [m["error"] for _, m in received if "error" in m]
    latencies = []
    covered = [(t, m.get("audio_s", m.get("duration", 0.0))) for t, m in received if "error" not in m]
    j = 0
    for end, t_sent in zip(ends, sent_at):
        while j < len(covered) and covered[j][1] < end - 1e-3:
            j += 1
        if j == len(covered):
            break
        if end > skip_s:
            latencies.append(covered[j][0] - t_sent)
    result.update(latencies=latencies, errors=errors)
    return result


async def expect_stream_error(ws_url: str, first: str | bytes, then: list = (), wait: float = 30) -> str | None:
    """Send a config (or anything) and more; returns the error the server answers, or None."""
    try:
        async with websockets.connect(ws_url, max_size=None, compression=None, open_timeout=60) as ws:
            await ws.send(first)
            for item in then:
                await ws.send(item)
            async for message in ws:
                msg = json.loads(message)
                if "error" in msg:
                    return msg["error"]
    except websockets.ConnectionClosed:
        pass
    return None


async def cut_off_stream(ws_url: str, samples: np.ndarray) -> bool:
    ws = await websockets.connect(ws_url, max_size=None, compression=None, open_timeout=60)
    await ws.send(json.dumps({"sample_rate": 16000, "format": "pcm16"}))
    for i in range(0, 16000, 1600):
        await ws.send(samples[i : i + 1600].tobytes())
        await asyncio.sleep(0.1)
    ws.transport.abort()  # gone without a close frame
    return True


async def stalled_stream(ws_url: str, samples: np.ndarray) -> str | None:
    return await expect_stream_error(ws_url, json.dumps({"sample_rate": 16000}), [samples[:3200].tobytes()])


# ---------------------------------------------------------------------------- phases


async def http_phase(base: str, setup: Setup, levels: list[int], seconds: float) -> list[dict]:
    rows = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
        for c in levels:
            out = {"latencies": [], "audio_s": 0.0, "ok": 0, "wrong": 0}
            start = time.monotonic()
            await asyncio.gather(*(upload_loop(client, base, setup, start + seconds, out) for _ in range(c)))
            wall = time.monotonic() - start
            rows.append(
                {
                    "clients": c,
                    "requests": out["ok"] + out["wrong"],
                    "wrong": out["wrong"],
                    "x_realtime": rounded(out["audio_s"] / wall),
                    "p50_ms": rounded(1000 * percentile(out["latencies"], 50), 0),
                    "p95_ms": rounded(1000 * percentile(out["latencies"], 95), 0),
                }
            )
            print(f"uploads x{c}: {rows[-1]}", file=sys.stderr)
    return rows


async def stream_phase(
    ws_url: str, setup: Setup, levels: list[int], chunk_ms: float, budget_ms: float, deadline: float
) -> tuple[list[dict], int]:
    rows, capacity = [], 0
    for n in levels:
        if time.monotonic() > deadline:
            print(f"streams: time budget reached before {n} streams", file=sys.stderr)
            break
        results = await asyncio.gather(
            *(
                stream_client(
                    ws_url,
                    setup.stream_pcm,
                    setup.stream_text,
                    chunk_ms,
                    delay=i / max(1, n),
                    skip_s=setup.latency_s + chunk_ms / 1000,
                )
                for i in range(n)
            )
        )
        lat = [x for r in results for x in r["latencies"]]
        finals = [r["final_latency"] for r in results if "final_latency" in r]
        correct = sum(r["ok"] for r in results)
        p95 = percentile(lat, 95)
        passed = correct == n and p95 is not None and 1000 * p95 <= budget_ms
        rows.append(
            {
                "streams": n,
                "correct": correct,
                "p50_ms": rounded(1000 * percentile(lat, 50), 0),
                "p95_ms": rounded(1000 * p95, 0) if p95 is not None else None,
                "max_ms": rounded(1000 * max(lat), 0) if lat else None,
                "final_p50_ms": rounded(1000 * percentile(finals, 50), 0),
                "passed": passed,
                "errors": sorted({e for r in results for e in r["errors"]}),
            }
        )
        print(f"streams x{n}: {rows[-1]}", file=sys.stderr)
        if not passed:
            break
        capacity = n
    return rows, capacity


async def mix_phase(base: str, ws_url: str, setup: Setup, good_streams: int, seconds: float, chunk_ms: float) -> dict:
    until = time.monotonic() + seconds
    uploads = {"latencies": [], "audio_s": 0.0, "ok": 0, "wrong": 0}
    bad = {"garbage_400": 0, "oversized_413": 0, "cut_off": 0, "stalled_idle": 0, "bad_config_1008": 0, "nan_1008": 0}

    async def bad_clients(client: httpx.AsyncClient) -> None:
        rng = np.random.default_rng(0)
        big = rng.integers(0, 256, size=3 * 2**20, dtype=np.uint8).tobytes()
        while time.monotonic() < until:
            r = await client.post(f"{base}/transcribe", files={"file": ("x.wav", rng.bytes(5000))}, timeout=60)
            bad["garbage_400"] += r.status_code == 400 and r.json()["status"] == "error"
            r = await client.post(f"{base}/transcribe", files={"file": ("big.wav", big)}, timeout=60)
            bad["oversized_413"] += r.status_code == 413 and r.json()["status"] == "error"
            bad["cut_off"] += await cut_off_stream(ws_url, setup.stream_pcm)
            err = await expect_stream_error(ws_url, b"\x00\x01")
            bad["bad_config_1008"] += bool(err and "config" in err)
            err = await expect_stream_error(
                ws_url, json.dumps({"sample_rate": 16000, "format": "float32"}), [np.array([np.nan] * 4, "<f4").tobytes()]
            )
            bad["nan_1008"] += bool(err and "NaN" in err)

    async def stalled() -> None:
        err = await stalled_stream(ws_url, setup.stream_pcm)
        bad["stalled_idle"] += bool(err and "idle timeout" in err)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
        tasks = [upload_loop(client, base, setup, until, uploads) for _ in range(2)]
        tasks.append(bad_clients(client))
        tasks.append(stalled())
        stream_tasks = [
            stream_client(
                ws_url, setup.stream_pcm, setup.stream_text, chunk_ms, delay=i * 0.3, skip_s=setup.latency_s + chunk_ms / 1000
            )
            for i in range(good_streams)
        ]
        slow = stream_client(
            ws_url, setup.slow_pcm, setup.slow_text, chunk_ms, speed=1 / 3, skip_s=setup.latency_s + chunk_ms / 1000
        )
        gathered = await asyncio.gather(*tasks, slow, *stream_tasks, return_exceptions=True)
        health = (await client.get(f"{base}/health", timeout=30)).json()
    failures = [repr(g) for g in gathered if isinstance(g, BaseException)]
    slow_result, streams = gathered[len(tasks)], gathered[len(tasks) + 1 :]
    stream_ok = [isinstance(r, dict) and r["ok"] for r in streams]
    lat = [x for r in streams if isinstance(r, dict) for x in r["latencies"]]
    return {
        "good_streams": good_streams,
        "good_streams_correct": int(sum(stream_ok)),
        "slow_sender_correct": bool(isinstance(slow_result, dict) and slow_result["ok"]),
        "uploads": uploads["ok"] + uploads["wrong"],
        "uploads_correct": uploads["ok"],
        "upload_p95_ms": rounded(1000 * percentile(uploads["latencies"], 95), 0) if uploads["latencies"] else None,
        "stream_p95_ms": rounded(1000 * percentile(lat, 95), 0) if lat else None,
        "bad": bad,
        "client_failures": failures,
        "healthy_after": health.get("status") == "ok",
        "active_streams_after": health["load"]["active_streams"],
    }


# ---------------------------------------------------------------------------- main


def render(result: dict) -> str:
    lines = [
        f"server bench: {result['machine']['cpu']}, {result['machine']['cpus']} CPUs; {result['date']}",
        f"/transcribe model: {result['model']}; /stream model: {result['stream_model']}",
        f"algorithmic latency of the streaming model: {result['algorithmic_latency_ms']:g} ms",
        "",
        f"{'upload clients':>15} {'requests':>9} {'x realtime':>11} {'p50 ms':>7} {'p95 ms':>7}",
    ]
    for r in result["http"]:
        lines.append(f"{r['clients']:15d} {r['requests']:9d} {r['x_realtime']:11} {r['p50_ms']:7} {r['p95_ms']:7}")
    lines += ["", f"{'streams':>8} {'correct':>8} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'final p50':>10}  pass"]
    for r in result["streams"]:
        lines.append(
            f"{r['streams']:8d} {r['correct']:8d} {r['p50_ms']!s:>7} {r['p95_ms']!s:>7} {r['max_ms']!s:>7} "
            f"{r['final_p50_ms']!s:>10}  {r['passed']}"
        )
    lines.append(
        f"capacity: {result['capacity']} real-time streams with p95 chunk latency <= "
        f"{result['latency_budget_ms']:g} ms beyond the algorithmic latency"
    )
    lines.append(f"mix: {json.dumps(result['mix'])}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        work = Path(tmp)
        print("computing the expected texts offline...", file=sys.stderr)
        setup = Setup(args, work)
        port = free_port()
        base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/stream"
        proc = start_server(setup, port, work / "server.log")
        try:
            await wait_up(base, proc)
            await asyncio.gather(
                *(stream_client(ws_url, setup.stream_pcm[:16000], "", args.chunk_ms) for _ in range(2))
            )  # warm-up
            http_rows = await http_phase(base, setup, args.http_concurrency, args.http_seconds)
            stream_rows, capacity = await stream_phase(
                ws_url, setup, args.streams, args.chunk_ms, args.latency_budget_ms, started + args.budget_seconds
            )
            mix = await mix_phase(base, ws_url, setup, max(1, capacity // 2), args.mix_seconds, args.chunk_ms)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            server_log = (work / "server.log").read_text()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_revision(),
        "machine": {
            "cpu": cpu_model(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "python": platform.python_version(),
        "model": str(setup.model_path),
        "stream_model": setup.stream_note,
        "algorithmic_latency_ms": round(1000 * setup.latency_s, 1),
        "chunk_ms": args.chunk_ms,
        "stream_seconds": args.stream_seconds,
        "latency_budget_ms": args.latency_budget_ms,
        "http": http_rows,
        "streams": stream_rows,
        "capacity": capacity,
        "mix": mix,
        "server_exit_code": proc.returncode,
        "server_log_tracebacks": server_log.count("Traceback"),
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", default=str(ROOT / "models" / "an4.pth"), help="model for /transcribe")
    p.add_argument(
        "--stream-model-path", default=None, help="model for /stream (default: the recipe's size, unidirectional, random weights)"
    )
    p.add_argument("--http-concurrency", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--http-seconds", type=float, default=8.0)
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 6, 8, 12, 16, 24, 32])
    p.add_argument("--stream-seconds", type=float, default=6.0)
    p.add_argument("--chunk-ms", type=float, default=100.0)
    p.add_argument("--latency-budget-ms", type=float, default=300.0)
    p.add_argument("--mix-seconds", type=float, default=15.0)
    p.add_argument("--budget-seconds", type=float, default=400.0, help="stop ramping streams after this")
    args = p.parse_args(argv)
    if min(args.http_concurrency + args.streams) < 1 or max(args.streams) > 64:
        p.error("client counts must be in [1, 64]")
    result = asyncio.run(run(args))
    print(render(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
