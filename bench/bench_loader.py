"""Data loading at corpus scale: manifest load time, decode throughput, memory over an epoch.

    python bench/bench_loader.py            # 281k-row manifest, 60 FLAC files, 20,000 streamed utterances
    python bench/bench_loader.py --quick    # smaller counts, a few seconds

Measured on generated data (noise plus a sine; nothing is downloaded):

* ``manifest_load_s``: constructing a :class:`SpectrogramDataset` from a manifest of
  ``--rows`` rows with a duration column and ``lazy_transcripts=True`` (nothing is opened;
  LibriSpeech's 960 h train set is 281,241 rows). Target <= 10 s.
* ``flac_x_realtime``: ``SpectrogramDataset[i]`` with the cache off (decode a 16 kHz FLAC
  file, read its transcript, compute the features) in one process with one torch thread,
  i.e. per DataLoader worker; seconds of audio per wall second. Target >= 2000x.
* ``rss_growth_mb``: growth of this process's resident memory (VmRSS) while
  ``--stream`` utterances (a manifest repeating a few short files) go through the dataset
  with the cache off, measured after a warm-up of 500. Target <= 200 MB.

The last line is JSON with those three keys.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from data.data_loader import SpectrogramDataset  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_utterances(folder: Path, n: int, seconds: float, fmt: str, seed: int = 0) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = seconds * rng.uniform(0.5, 1.5)
        t = np.arange(int(length * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(t.size)
        wav = folder / f"u{i}.{fmt}"
        sf.write(str(wav), x.astype(np.float32), 16000, subtype="PCM_16", format=fmt.upper())
        txt = folder / f"u{i}.txt"
        txt.write_text("THE QUICK BROWN FOX\n")
        rows.append((wav.name, txt.name, t.size / 16000))
    return rows


def write_rows(path: Path, rows: list[tuple[str, str, float]]) -> None:
    with open(path, "w") as f:
        f.writelines(f"{w},{t},{d:.3f}\n" for w, t, d in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20k rows, 10 files, 2,000 streamed utterances")
    p.add_argument("--rows", type=int, default=None, help="manifest rows for the load time (default 281,241)")
    p.add_argument("--files", type=int, default=None, help="FLAC files for the throughput (default 60)")
    p.add_argument("--seconds", type=float, default=12.0, help="mean FLAC length (LibriSpeech: ~12.3 s)")
    p.add_argument("--stream", type=int, default=None, help="utterances streamed for the memory (default 20,000)")
    p.add_argument("--runs", type=int, default=3, help="timed runs of the load and throughput (median)")
    args = p.parse_args(argv)
    rows_n = args.rows or (20_000 if args.quick else 281_241)
    files_n = args.files or (10 if args.quick else 60)
    stream_n = args.stream or (2_000 if args.quick else 20_000)
    torch.set_num_threads(1)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # (a) manifest load
        big = tmp / "big.csv"
        rng = np.random.default_rng(1)
        write_rows(
            big,
            [
                (f"a/{i // 1000}/u{i}.flac", f"a/{i // 1000}/u{i}.txt", float(d))
                for i, d in enumerate(np.sort(rng.uniform(1.0, 35.0, rows_n)))
            ],
        )
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            ds = SpectrogramDataset(big, lazy_transcripts=True, cache_bytes=0)
            times.append(time.perf_counter() - start)
            assert len(ds) == rows_n
            del ds
        result["manifest_load_s"] = statistics.median(times)
        print(
            f"manifest load, {rows_n} rows with durations, lazy transcripts: "
            f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})",
            file=sys.stderr,
        )
        # (b) FLAC throughput per worker
        flac_dir = tmp / "flac"
        flac_dir.mkdir()
        rows = write_utterances(flac_dir, files_n, args.seconds, "flac")
        write_rows(flac_dir / "m.csv", rows)
        ds = SpectrogramDataset(flac_dir / "m.csv", cache_bytes=0, lazy_transcripts=True)
        audio_s = sum(ds.durations)
        ds[0]
        rates = []
        for _ in range(args.runs):
            start = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            rates.append(audio_s / (time.perf_counter() - start))
        result["flac_x_realtime"] = statistics.median(rates)
        print(
            f"FLAC decode + transcript + features, cache off, 1 thread: {statistics.median(rates):.0f}x realtime "
            f"(min {min(rates):.0f}, max {max(rates):.0f}; {files_n} files, {audio_s:.0f} s)",
            file=sys.stderr,
        )
        # (c) memory over an epoch without cache
        short_dir = tmp / "short"
        short_dir.mkdir()
        short = write_utterances(short_dir, 20, 0.5, "flac", seed=2)
        write_rows(short_dir / "m.csv", [short[i % len(short)] for i in range(stream_n)])
        ds = SpectrogramDataset(short_dir / "m.csv", cache_bytes=0, lazy_transcripts=True)
        warm = min(500, stream_n // 4)
        for i in range(warm):
            ds[i]
        before = rss_mb()
        for i in range(warm, len(ds)):
            ds[i]
        result["rss_growth_mb"] = rss_mb() - before
        print(
            f"RSS growth over {stream_n - warm} utterances streamed, cache off: {result['rss_growth_mb']:.1f} MB "
            f"(RSS {rss_mb():.0f} MB)",
            file=sys.stderr,
        )
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
