"""Model forward variants for transcription speed: fp32, channels-last, bf16 autocast.

    python bench/bench_inference.py [--model-path models/an4.pth] [--threads 2] [--runs 5] [--compile]
    python bench/bench_inference.py --front-ends --threads 1     # lighter DS2 conv front ends

Times the model's forward pass (no features, no decoding) on a batch of 16 utterances of
2.7 s, median of --runs after one warm-up, and how much of it the two DS2 convolutions take.
With ``--compile`` it also times ``torch.compile(model)`` (inductor) and reports the seconds the first
call spends compiling. With ``--front-ends`` it instead times the model's architecture with each of
four DS2 conv front ends: 32 or 16 conv channels, ``conv_time_stride`` 2 or 4 (32 / 2 is
deepspeech.pytorch's, 16 / 4 the default; random weights: the speed side of the trade-off
only), fp32 and bf16, each variant timed once per round in turn so that a change in the
machine's load hits them all alike.
Prints a table and, as its last line, a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from checkpoint import CheckpointError, load_model  # noqa: E402
from model import build_model  # noqa: E402


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
    p.add_argument("--front-ends", action="store_true", help="time lighter DS2 conv front ends (channels, time stride) instead")
    args = p.parse_args(argv)
    if args.runs < 1 or args.frames < 1 or args.threads < 1:
        p.error("--runs, --frames and --threads must be positive")
    if args.front_ends and args.compile:
        p.error("--compile applies to the model's own variants, not with --front-ends")
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
    if args.front_ends:
        if model.cfg.arch != "ds2":
            print("error: --front-ends needs a ds2 model", file=sys.stderr)
            return 2
        return front_ends(model.cfg, x, lengths, audio_s, args.runs, args.threads)
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


def front_ends(cfg, x: torch.Tensor, lengths: torch.Tensor, audio_s: float, runs: int, threads: int) -> int:
    """The ``--front-ends`` table: x realtime of each conv front end, fp32 and bf16, interleaved."""
    variants = {
        f"{channels} ch, stride {stride}": {"conv_channels": channels, "conv_time_stride": stride}
        for stride in (2, 4)
        for channels in (32, 16)
    }
    fns = {}
    for name, change in variants.items():
        model = build_model(replace(cfg, **change)).eval()
        fns[f"{name}, fp32"] = lambda m=model: m(x, lengths)

        def bf16(m=model) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                m(x, lengths)

        fns[f"{name}, bf16"] = bf16
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for fn in fns.values():  # warm-up
            fn()
        for _ in range(runs):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    rates = {name: audio_s / statistics.median(t) for name, t in times.items()}
    base = rates[next(iter(rates))]
    shape = f"batch {x.size(0)} x {x.size(3) / 100:.2f} s, {threads} threads"
    print(f"{'front end':28} {'x realtime':>10} {'vs first':>9}  (forward only, {shape})")
    for name, rate in rates.items():
        print(f"{name:28} {rate:10.1f} {rate / base:8.2f}x")
    print(json.dumps({name: round(rate, 1) for name, rate in rates.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
