"""Model forward variants for transcription speed: fp32, channels-last, bf16 autocast.

    python bench/bench_inference.py [--model-path models/an4.pth] [--threads 2] [--runs 5] [--compile]

Times the model's forward pass (no features, no decoding) on a batch of 16 utterances of
2.7 s, median of --runs after one warm-up, and how much of it the two DS2 convolutions take.
With ``--compile`` it also times ``torch.compile(model)`` (inductor) and reports the seconds the first
call spends compiling. Prints a table and, as its last line, a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from checkpoint import CheckpointError, load_model  # noqa: E402


def median_seconds(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", default="models/an4.pth")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--frames", type=int, default=270, help="input frames per utterance (100 per second)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    args = p.parse_args(argv)
    try:
        model, _ = load_model(args.model_path)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    batch = 16
    x = torch.randn(batch, 1, model.cfg.n_features, args.frames)
    lengths = torch.full((batch,), args.frames)
    audio_s = batch * args.frames / 100
    results = {}
    with torch.inference_mode():
        results["fp32"] = median_seconds(lambda: model(x, lengths), args.runs)

        def convs_only() -> None:
            h = x
            for conv in getattr(model, "convs", []):
                h = conv(h)

        conv_share = median_seconds(convs_only, args.runs) / results["fp32"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results["bf16 autocast"] = median_seconds(lambda: model(x, lengths), args.runs)
        extra = {}
        if args.compile:
            start = time.perf_counter()
            compiled = torch.compile(model)
            compiled(x, lengths)
            extra["compile_s"] = round(time.perf_counter() - start, 1)
            results["torch.compile"] = median_seconds(lambda: compiled(x, lengths), args.runs)
        model_cl = model.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        results["channels-last"] = median_seconds(lambda: model_cl(x_cl, lengths), args.runs)
    print(f"{'variant':16} {'x realtime':>10}  (forward only, batch {batch} x {args.frames / 100:.2f} s, {args.threads} threads)")
    for name, seconds in results.items():
        print(f"{name:16} {audio_s / seconds:10.1f}")
    print(f"conv layers: {100 * conv_share:.0f}% of the fp32 forward")
    if extra:
        print(f"torch.compile: first call took {extra['compile_s']} s")
    print(json.dumps({name: round(audio_s / s, 1) for name, s in results.items()} | {"conv_share": round(conv_share, 3)} | extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
