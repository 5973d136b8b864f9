"""The streaming engine alone: algorithmic latency and compute per chunk.

    python bench/bench_streaming.py [--model-path M] [--chunk-ms 10 20 50 100 200 500 1000 2000]
                                    [--seconds 10] [--runs 3] [--threads 1] [--lookahead 1 3 5 10]
                                    [--streams 1 4 8 16 24 32] [--stream-chunk-ms 100]

Without ``--model-path`` the model is the recipe's size as a streaming model (DS2, 3 x 384
unidirectional LSTM, the default lookahead context) with random weights, which is all a speed figure
needs. Each chunk size streams ``--seconds`` of generated audio through
streaming.StreamingRecognizer (``accept`` per chunk, then ``finish``), ``--runs`` times after one
warm-up; it reports the median and 95th percentile of the compute per chunk and the real-time
factor. Then, for each ``--streams`` N, N streams advance in lockstep by one ``--stream-chunk-ms``
chunk per tick, fed one recognizer at a time (``accept`` N times) and as one batch
(``streaming.accept_many``, what the server does), side by side in the same run: the median and
95th percentile of the compute per tick with every stream running (real time allows one chunk's
duration). Prints tables and, as its last line, JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.audio import AudioConfig, with_feature_stats  # noqa: E402
from model import ModelConfig, build_model  # noqa: E402
from streaming import StreamingRecognizer, accept_many, algorithmic_latency, check_streamable  # noqa: E402

LABELS = list("_'ABCDEFGHIJKLMNOPQRSTUVWXYZ ")


def recipe_stream_model() -> tuple[torch.nn.Module, AudioConfig, list[str]]:
    """train.py's default architecture made streamable, random weights; global feature statistics."""
    base = AudioConfig(normalize="none")
    audio_config = with_feature_stats(base, np.full(base.n_freq, 0.5), np.ones(base.n_freq))
    cfg = ModelConfig(bidirectional=False, n_features=base.n_freq, n_classes=len(LABELS))
    torch.manual_seed(0)
    return build_model(cfg).eval(), audio_config, LABELS


def test_audio(seconds: float, rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 300 * t * (1 + 0.5 * np.sin(t))) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def time_chunks(rec: StreamingRecognizer, audio: np.ndarray, chunk: int) -> tuple[list[float], float]:
    """(seconds per accept call, total seconds including finish)."""
    rec.reset()
    per_chunk = []
    start = time.perf_counter()
    for i in range(0, len(audio), chunk):
        t = time.perf_counter()
        rec.accept(audio[i : i + chunk])
        per_chunk.append(time.perf_counter() - t)
    rec.finish()
    return per_chunk, time.perf_counter() - start


def time_ticks(recs: list[StreamingRecognizer], audio: np.ndarray, chunk: int, batched: bool) -> list[float]:
    """Seconds per tick for ``len(recs)`` streams each fed the same ``audio`` chunk by chunk, one
    accept per stream per tick, their starts spread over the first half of the audio (as real
    clients start at different times); only the ticks with every stream running are timed."""
    for rec in recs:
        rec.reset()
    n = len(audio) // chunk
    starts = [k * (n // 2) // len(recs) for k in range(len(recs))]
    ticks = []
    for step in range(n + starts[-1]):
        live = [(rec, (step - s) * chunk) for rec, s in zip(recs, starts) if 0 <= step - s < n]
        t = time.perf_counter()
        if batched:
            accept_many([rec for rec, _ in live], [audio[i : i + chunk] for _, i in live])
        else:
            for rec, i in live:
                rec.accept(audio[i : i + chunk])
        if len(live) == len(recs):
            ticks.append(time.perf_counter() - t)
    return ticks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", default=None, help="a streamable checkpoint (default: the recipe's size, random)")
    p.add_argument("--chunk-ms", type=float, nargs="+", default=[10, 20, 50, 100, 200, 500, 1000, 2000])
    p.add_argument("--seconds", type=float, default=10.0, help="audio streamed per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lookahead", type=int, nargs="+", default=[1, 3, 5, 10], help="lookahead contexts for the latency table")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8, 16, 24, 32], help="concurrent streams (0: skip)")
    p.add_argument("--stream-chunk-ms", type=float, default=100.0, help="chunk per stream per tick")
    args = p.parse_args(argv)
    if any(n > 0 for n in args.streams) and args.seconds * 1000 < 4 * args.stream_chunk_ms:
        p.error("--seconds must hold at least 4 chunks of --stream-chunk-ms")
    torch.set_num_threads(args.threads)
    if args.model_path:
        from checkpoint import load_checkpoint

        ckpt = load_checkpoint(args.model_path)
        check_streamable(ckpt.model_config, ckpt.audio_config)
        model, audio_config, labels = ckpt.build_model(), ckpt.audio_config, ckpt.labels
    else:
        model, audio_config, labels = recipe_stream_model()
    rec = StreamingRecognizer(model, audio_config, labels)
    audio = test_audio(args.seconds, audio_config.sample_rate)
    latency = {
        str(k): algorithmic_latency(ModelConfig(bidirectional=False, lookahead_context=k), audio_config).as_ms()
        for k in args.lookahead
    }
    latency["model"] = rec.latency.as_ms()
    rows = []
    for chunk_ms in args.chunk_ms:
        chunk = max(1, round(chunk_ms * audio_config.sample_rate / 1000))
        time_chunks(rec, audio[: 20 * chunk], chunk)  # warm-up
        per_chunk, totals = [], []
        for _ in range(args.runs):
            times, total = time_chunks(rec, audio, chunk)
            per_chunk += times
            totals.append(total)
        ms = sorted(1000 * t for t in per_chunk)
        rows.append(
            {
                "chunk_ms": chunk_ms,
                "median_ms": round(statistics.median(ms), 2),
                "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
                "x_realtime": round(args.seconds / statistics.median(totals), 1),
            }
        )
    streams = []
    chunk = max(1, round(args.stream_chunk_ms * audio_config.sample_rate / 1000))
    for n in (n for n in args.streams if n > 0):
        recs = [StreamingRecognizer(model, audio_config, labels) for _ in range(n)]
        time_ticks(recs, audio[: 8 * chunk], chunk, True)  # warm-up
        row = {"streams": n}
        for mode, batched in (("separate", False), ("batched", True)):
            ticks = []
            for _ in range(args.runs):
                ticks += time_ticks(recs, audio, chunk, batched)
            row[f"{mode}_median_ms"] = round(1000 * statistics.median(ticks), 2)
            row[f"{mode}_p95_ms"] = round(1000 * sorted(ticks)[int(0.95 * (len(ticks) - 1))], 2)
        row["speedup"] = round(row["separate_median_ms"] / row["batched_median_ms"], 2)
        streams.append(row)
    print(
        "algorithmic latency (ms): " + ", ".join(f"lookahead {k}: {v['total_ms']:g}" for k, v in latency.items() if k != "model")
    )
    print(
        f"model: {model.cfg.hidden_layers} x {model.cfg.hidden_size} {model.cfg.rnn_type}, lookahead "
        f"{model.cfg.lookahead_context}: {latency['model']}"
    )
    print(f"{'chunk ms':>9} {'median ms':>10} {'p95 ms':>8} {'x realtime':>11}   ({args.threads} thread(s))")
    for r in rows:
        print(f"{r['chunk_ms']:9g} {r['median_ms']:10.2f} {r['p95_ms']:8.2f} {r['x_realtime']:11.1f}")
    if streams:
        print(f"\n{len(streams)} stream counts, one {args.stream_chunk_ms:g} ms chunk each per tick: compute per tick (ms)")
        print(f"{'streams':>8} {'separate p50':>13} {'p95':>8} {'batched p50':>12} {'p95':>8} {'speed-up':>9}")
        for r in streams:
            print(
                f"{r['streams']:8d} {r['separate_median_ms']:13.2f} {r['separate_p95_ms']:8.2f} "
                f"{r['batched_median_ms']:12.2f} {r['batched_p95_ms']:8.2f} {r['speedup']:9.2f}"
            )
    print(
        json.dumps(
            {
                "latency_ms": latency,
                "chunks": rows,
                "streams": streams,
                "stream_chunk_ms": args.stream_chunk_ms,
                "threads": args.threads,
                "seconds": args.seconds,
                "runs": args.runs,
                "model": model.cfg.__dict__,
                "torch": torch.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
