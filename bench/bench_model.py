"""Time one CTC training step (forward + loss + backward) of the acoustic models on CPU.

Compares, on an AN4-like batch (16 utterances of ~3 s, mixed lengths):

* ``padded``: model.py as shipped (padding masked with tensor ops, the backward RNN
  direction reversed within each length, RNNs run on the padded batch);
* ``packed``: the same network with deepspeech.pytorch's RNN path
  (``pack_padded_sequence`` into a bidirectional RNN, directions summed), built here;
* GRU against LSTM, and (``--bf16``) the padded model under CPU bf16 autocast.

Prints a table and, as the last line, a JSON object with every number.

    python bench/bench_model.py --quick        # < 2 minutes
    python bench/bench_model.py --threads 2 --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from model import RNN_TYPES, BatchRNN, ModelConfig, build_model, count_parameters, forward_flops  # noqa: E402


class PackedBatchRNN(nn.Module):
    """deepspeech.pytorch's BatchRNN: (masked) BatchNorm, then one bidirectional RNN over a
    PackedSequence, directions summed. Same parameter count as :class:`model.BatchRNN`."""

    def __init__(self, layer: BatchRNN, rnn_type: str, bidirectional: bool) -> None:
        super().__init__()
        self.batch_norm = layer.batch_norm
        self.rnn = RNN_TYPES[rnn_type](layer.rnn.input_size, layer.rnn.hidden_size, bidirectional=bidirectional)

    def forward(self, x: Tensor, mask: Tensor, rev_index: Tensor | None) -> Tensor:
        if self.batch_norm is not None:
            x = self.batch_norm(x, mask)
        lengths = mask.sum(0).cpu()
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.rnn(packed)[0], total_length=x.size(0))  # (T, B, dirs*H)
        if self.rnn.bidirectional:
            out = out.view(out.size(0), out.size(1), 2, -1).sum(2)
        return out


def packed_reference(cfg: ModelConfig) -> nn.Module:
    model = build_model(cfg)
    model.rnns = nn.ModuleList(PackedBatchRNN(layer, cfg.rnn_type, cfg.bidirectional) for layer in model.rnns)
    return model


def make_batch(batch_size: int, max_frames: int, n_features: int, equal: bool, seed: int = 0):
    """Zero-padded inputs, lengths spread over the top 20% (a duration-sorted AN4 bucket),
    and random targets of about one label per 4 output frames."""
    g = torch.Generator().manual_seed(seed)
    if equal:
        lengths = torch.full((batch_size,), max_frames, dtype=torch.long)
    else:
        lengths = torch.linspace(int(max_frames * 0.8), max_frames, batch_size).long()
    x = torch.randn(batch_size, 1, n_features, max_frames, generator=g)
    x = x * (torch.arange(max_frames)[None, :] < lengths[:, None])[:, None, None, :]
    target_lengths = torch.clamp(lengths // 8, min=1)
    targets = torch.randint(1, 29, (int(target_lengths.sum()),), generator=g)
    return x, lengths, targets, target_lengths


def train_step(model: nn.Module, batch, bf16: bool) -> float:
    """Seconds for zero_grad + forward + CTC loss + backward."""
    x, lengths, targets, target_lengths = batch
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        log_probs, out_lengths = model(x, lengths)
    loss = nn.functional.ctc_loss(
        log_probs.float().transpose(0, 1), targets, out_lengths, target_lengths, zero_infinity=True
    )  # CTC wants (T, B, C)
    loss.backward()
    return time.perf_counter() - start


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3x512 GRU/LSTM only, 3 timed runs (< 2 min)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--runs", type=int, default=5, help="timed steps per configuration (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="longest utterance; 100 frames per second")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[320, 512])
    parser.add_argument("--hidden-layers", type=int, default=3)
    parser.add_argument("--rnn-types", nargs="+", default=["gru", "lstm"], choices=sorted(RNN_TYPES))
    parser.add_argument("--bf16", action="store_true", help="also time the padded model under bf16 autocast")
    parser.add_argument("--ds1", action="store_true", help="also time Deep Speech 1 (hidden = largest size)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1 or args.runs < 1 or args.warmup < 0 or args.batch_size < 1 or args.seconds <= 0:
        print("error: --threads, --runs, --batch-size and --seconds must be positive", file=sys.stderr)
        return 2
    if args.quick:
        args.hidden_sizes, args.runs = [512], min(args.runs, 3)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    max_frames = int(args.seconds * 100)
    batches = {
        "mixed": make_batch(args.batch_size, max_frames, 161, equal=False),
        "equal": make_batch(args.batch_size, max_frames, 161, equal=True),
    }
    mm = matmul_gflops()

    groups = []  # (cfg, [(impl, batch name, bf16), ...])
    for hidden in args.hidden_sizes:
        for rnn_type in args.rnn_types:
            cfg = ModelConfig(hidden_size=hidden, hidden_layers=args.hidden_layers, rnn_type=rnn_type)
            variants = [("padded", "mixed", False), ("packed", "mixed", False)]
            if not args.quick:
                variants.append(("packed", "equal", False))
            if args.bf16:
                variants.append(("padded", "mixed", True))
            groups.append((cfg, variants))
    if args.ds1:
        for rnn_type in args.rnn_types:
            cfg = ModelConfig(arch="ds1", hidden_size=max(args.hidden_sizes), hidden_layers=1, rnn_type=rnn_type)
            groups.append((cfg, [("padded", "mixed", False)] + ([("padded", "mixed", True)] if args.bf16 else [])))

    header = (
        f"{'model':<24} {'impl':<7} {'lengths':<7} {'dtype':<5} {'params':>7} {'median s':>9} "
        f"{'min s':>6} {'GFLOP/s':>8} {'MFU':>5}"
    )
    print(
        f"threads {args.threads}, batch {args.batch_size} x {args.seconds:g} s (T={max_frames}), "
        f"median of {args.runs} after {args.warmup} warm-up, variants of a model interleaved; "
        f"fp32 2048^2 matmul: {mm:.0f} GFLOP/s (MFU = GFLOP/s of the step / that; bf16 can pass 100%)"
    )
    print(header)
    print("-" * len(header))
    results = []
    for cfg, variants in groups:
        # Variants of one model run round-robin, so machine-load drift hits them alike.
        models = [build_model(cfg) if impl == "padded" else packed_reference(cfg) for impl, _, _ in variants]
        for model in models:
            model.train()
        times: list[list[float]] = [[] for _ in variants]
        for i in range(args.warmup + args.runs):
            for j, (model, (_, batch_name, bf16)) in enumerate(zip(models, variants)):
                seconds = train_step(model, batches[batch_name], bf16)
                if i >= args.warmup:
                    times[j].append(seconds)
        name = f"{cfg.arch} {cfg.hidden_layers}x{cfg.hidden_size} {'bi' if cfg.bidirectional else 'uni'}{cfg.rnn_type}"
        for model, (impl, batch_name, bf16), ts in zip(models, variants, times):
            median = statistics.median(ts)
            # A training step ~ 3x forward FLOPs, counted over each utterance's real frames.
            flops = 3 * sum(forward_flops(cfg, int(n)) for n in batches[batch_name][1])
            row = {
                "model": name,
                "impl": impl,
                "lengths": batch_name,
                "dtype": "bf16" if bf16 else "fp32",
                "params": count_parameters(model),
                "median_s": round(median, 4),
                "times_s": [round(t, 4) for t in ts],
                "gflops": round(flops / median / 1e9, 1),
                "mfu": round(flops / median / 1e9 / mm, 3),
            }
            results.append(row)
            print(
                f"{name:<24} {impl:<7} {batch_name:<7} {row['dtype']:<5} {row['params'] / 1e6:>6.1f}M "
                f"{median:>9.3f} {min(ts):>6.3f} {row['gflops']:>8.1f} {row['mfu']:>5.0%}",
                flush=True,
            )
    print(
        json.dumps(
            {
                "threads": args.threads,
                "batch_size": args.batch_size,
                "max_frames": max_frames,
                "runs": args.runs,
                "matmul_gflops": round(mm, 1),
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
