"""Feature extraction throughput, in audio seconds per wall second on one core ("x realtime").

    python bench/bench_features.py            # 50 x 3 s utterances, 5 timed runs
    python bench/bench_features.py --quick    # a few seconds

Measured (each after one warm-up run, median/min/max of the timed runs, with
``torch.set_num_threads(1)``) on synthetic utterances (noise plus a sine):

* ``spectrogram``: :func:`data.data_loader.spectrogram` on in-memory float32 audio.
* ``spectrogram, level_db``: the same with level normalisation (``AudioConfig.level_db``).
* ``spectrogram, numpy.fft``: the same features with ``numpy.fft.rfft`` in place of
  ``scipy.fft.rfft`` (what the loader used before), side by side.
* ``load+spectrogram wav16k``: ``load_audio`` of a 16 kHz 16-bit WAV, then the features.
* ``load+spectrogram wav44k``: the same from 44.1 kHz WAV (includes resampling).
* ``dataset cached``: ``SpectrogramDataset[i]`` with the audio cache warm, plus ``collate``
  into batches of 16: what a training step waits for.
* ``dataset augmented``: the same with speed/gain, noise (prob 1) and SpecAugment on.

The last line is JSON: ``{"features_x_realtime": <median spectrogram x realtime>, ...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from data.audio import AudioConfig, load_audio, spectrogram  # noqa: E402
from data.augment import AugmentConfig  # noqa: E402
from data.data_loader import SpectrogramDataset, collate  # noqa: E402
from data.manifest import write_manifest  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 utterances and 3 timed runs")
    parser.add_argument("--n-utts", type=int, default=None, help="utterances per run (default 50, 10 with --quick)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each utterance in seconds")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per row (default 5, 3 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    return parser


def synthetic(n: int, seconds: float, sample_rate: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return [
        (0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        for _ in range(n)
    ]


def measure(fn: Callable[[], None], audio_seconds: float, runs: int) -> dict[str, float]:
    """x realtime of ``fn`` (which processes ``audio_seconds`` of audio): one warm-up, then ``runs``."""
    fn()
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        rates.append(audio_seconds / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    n_utts = args.n_utts if args.n_utts is not None else (10 if args.quick else 50)
    runs = args.runs if args.runs is not None else (3 if args.quick else 5)
    if n_utts < 1 or runs < 1 or args.seconds <= 0 or args.threads < 1:
        print("error: --n-utts, --runs, --threads and --seconds must be positive", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg = AudioConfig()
    audio = synthetic(n_utts, args.seconds, cfg.sample_rate, seed=0)
    total = n_utts * args.seconds
    results: dict[str, dict[str, float]] = {}

    results["spectrogram"] = measure(lambda: [spectrogram(x, cfg) for x in audio], total, runs)
    level_cfg = dataclasses.replace(cfg, level_db=-23.0)
    results["spectrogram, level_db"] = measure(lambda: [spectrogram(x, level_cfg) for x in audio], total, runs)
    with mock.patch.object(scipy.fft, "rfft", np.fft.rfft):
        results["spectrogram, numpy.fft"] = measure(lambda: [spectrogram(x, cfg) for x in audio], total, runs)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        for i, x in enumerate(audio):
            wav, txt = root / "wav" / f"u{i}.wav", root / "txt" / f"u{i}.txt"
            wav.parent.mkdir(exist_ok=True)
            txt.parent.mkdir(exist_ok=True)
            sf.write(str(wav), x, cfg.sample_rate, subtype="PCM_16")
            txt.write_text("HELLO WORLD\n")
            rows.append((wav, txt))
        for i, x in enumerate(synthetic(n_utts, args.seconds, 44100, seed=1)):
            sf.write(str(root / f"r{i}.wav"), x, 44100, subtype="PCM_16")
        (root / "noise").mkdir()
        sf.write(str(root / "noise" / "n.wav"), synthetic(1, 5.0, cfg.sample_rate, seed=2)[0], cfg.sample_rate)
        manifest = root / "manifest.csv"
        write_manifest(manifest, rows)

        results["load+spectrogram wav16k"] = measure(
            lambda: [spectrogram(load_audio(w, cfg.sample_rate), cfg) for w, _ in rows], total, runs
        )
        results["load+spectrogram wav44k"] = measure(
            lambda: [spectrogram(load_audio(root / f"r{i}.wav", cfg.sample_rate), cfg) for i in range(n_utts)],
            total,
            runs,
        )

        def batches(ds: SpectrogramDataset) -> Callable[[], None]:
            def run() -> None:
                for start in range(0, len(ds), 16):
                    collate([ds[i] for i in range(start, min(start + 16, len(ds)))])

            return run

        plain = SpectrogramDataset(manifest, cfg)
        plain.preload()
        results["dataset cached + collate"] = measure(batches(plain), total, runs)
        augment = AugmentConfig(speed_volume_perturb=True, spec_augment=True, noise_dir=str(root / "noise"), noise_prob=1.0)
        augmented = SpectrogramDataset(manifest, cfg, augment=augment)
        augmented.preload()
        results["dataset augmented + collate"] = measure(batches(augmented), total, runs)

    print(f"{n_utts} utterances x {args.seconds:g} s, {runs} timed runs, torch threads {args.threads}")
    print(f"{'stage':<30} {'x realtime (median)':>20} {'min':>9} {'max':>9}")
    for name, r in results.items():
        print(f"{name:<30} {r['median']:>20.0f} {r['min']:>9.0f} {r['max']:>9.0f}")
    summary = {
        "features_x_realtime": round(results["spectrogram"]["median"], 1),
        "features_numpy_fft_x_realtime": round(results["spectrogram, numpy.fft"]["median"], 1),
        "features_level_norm_x_realtime": round(results["spectrogram, level_db"]["median"], 1),
        "load_features_x_realtime": round(results["load+spectrogram wav16k"]["median"], 1),
        "load_resample_features_x_realtime": round(results["load+spectrogram wav44k"]["median"], 1),
        "dataset_x_realtime": round(results["dataset cached + collate"]["median"], 1),
        "dataset_augmented_x_realtime": round(results["dataset augmented + collate"]["median"], 1),
        "threads": args.threads,
        "utterance_seconds": args.seconds,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
