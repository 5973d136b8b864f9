"""Decoding speed: greedy and beam search (beam 32 + 3-gram word LM) in × realtime, one thread.

Log-probs are synthetic but shaped like a trained CTC model's: 50 output frames per
second, each character one or two peaky frames followed by blanks, and competing labels
on some frames so that greedy decoding makes character errors (see :func:`render`). Transcripts come from
``--manifest`` (e.g. AN4 train) or from a built-in AN4-like generator (commands, digits,
spelled letters); the LM is ``--lm-path`` or a 3-gram built from those transcripts by
data/build_lm.py. Reports the median, min and max of ``--runs`` timings and the WER each
decoder gets; the last line is JSON.

    python bench/bench_decode.py
    python bench/bench_decode.py --manifest data/an4_train_manifest.csv --runs 7
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from data.build_lm import KneserNeyModel, read_sentences  # noqa: E402
from data.data_loader import LABELS  # noqa: E402
from decoder import BeamCTCDecoder, ErrorRate, GreedyDecoder  # noqa: E402

FRAMES_PER_SECOND = 50
WORDS = {
    "command": "ENTER ERASE RUBOUT STOP GO YES NO REPEAT HELP START".split(),
    "digit": "ZERO OH ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN TWENTY THIRTY HUNDRED".split(),
    "letter": list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    "word": "MY NAME IS THE FIRST LAST STREET CITY CODE NUMBER PHONE BIRTH MONTH DAY YEAR".split(),
}


def synthetic_corpus(n: int, rng: random.Random) -> list[list[str]]:
    """AN4-like sentences: a command, a number, a spelled word, or a short phrase + number."""
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.25:
            s = [rng.choice(WORDS["command"])]
            s += [rng.choice(WORDS["digit"]) for _ in range(rng.randint(0, 3))]
        elif kind < 0.5:
            s = [rng.choice(WORDS["digit"]) for _ in range(rng.randint(2, 7))]
        elif kind < 0.75:
            s = [rng.choice(WORDS["letter"]) for _ in range(rng.randint(3, 9))]
        else:
            s = ["MY", rng.choice(WORDS["word"][3:]), "IS"] + [rng.choice(WORDS["digit"]) for _ in range(3)]
        out.append(s)
    return out


def render(
    words: list[str], n_frames: int, confusion: float, rng: random.Random, gen: torch.Generator
) -> tuple[torch.Tensor, str]:
    """(n_frames, C) log-probs spelling as many leading ``words`` as fit, and that text.

    Like a trained model's output: every frame has one dominant label (logit 8); with
    probability ``confusion`` a character frame also gets a competing character or the
    blank, and a blank frame a competing character, at logit 8 + N(-1.5, 1.5) (so
    sometimes winning); small N(0, 0.5) noise everywhere.
    """
    labels = list(LABELS)
    letters = [i for i, c in enumerate(labels) if c.isalpha()]
    path: list[int] = [0] * rng.randint(3, 10)
    kept: list[str] = []
    for word in words:
        piece = [] if not kept else [labels.index(" ")] + [0] * rng.randint(0, 2)
        for ch in word:
            piece += [labels.index(ch)] * rng.randint(1, 2) + [0] * rng.randint(1, 3)
        if len(path) + len(piece) > n_frames:
            break
        path += piece
        kept.append(word)
    path += [0] * (n_frames - len(path))
    logits = 0.5 * torch.randn(n_frames, len(labels), generator=gen)
    for t, target in enumerate(path):
        logits[t, target] += 8.0
        if rng.random() < (confusion if target else confusion / 4):
            rival = rng.choice(letters) if (target == 0 or rng.random() < 0.7) else 0
            if rival != target:
                logits[t, rival] += 8.0 + rng.gauss(-1.5, 1.5)
    return logits.log_softmax(-1), " ".join(kept)


def time_decoder(decoder: GreedyDecoder | BeamCTCDecoder, log_probs: torch.Tensor, runs: int) -> tuple[list[float], list[str]]:
    decoder.decode(log_probs[:2])  # warm-up
    times, texts = [], []
    for _ in range(runs):
        start = time.perf_counter()
        hyps = decoder.decode(log_probs)
        times.append(time.perf_counter() - start)
        texts = [h[0].text for h in hyps]
    return times, texts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=None, help="take transcripts (and the LM corpus) from this manifest")
    parser.add_argument("--lm-path", type=Path, default=None, help="LM to use instead of building one")
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0, help="audio seconds per utterance")
    parser.add_argument("--beam-width", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=0.8)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument(
        "--confusion",
        type=float,
        default=0.3,
        help="share of character frames with a competing label (a quarter of that for blank frames)",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.utterances < 1 or args.runs < 1 or args.seconds <= 0:
        print("error: --utterances, --runs and --seconds must be positive", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    try:
        corpus = read_sentences([args.manifest], LABELS) if args.manifest else synthetic_corpus(1000, rng)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    corpus = [s for s in corpus if s]
    n_frames = int(round(args.seconds * FRAMES_PER_SECOND))
    rendered = [render(rng.choice(corpus), n_frames, args.confusion, rng, gen) for _ in range(args.utterances)]
    log_probs = torch.stack([lp for lp, _ in rendered])  # (B, T, C)
    refs = [text for _, text in rendered]
    audio_s = args.utterances * args.seconds

    with tempfile.TemporaryDirectory() as tmp:
        lm_path = args.lm_path
        if lm_path is None:
            lm_path = Path(tmp) / "bench_3gram.arpa"
            KneserNeyModel(corpus, 3).write_arpa(lm_path)
        decoders = {
            "greedy": GreedyDecoder(LABELS),
            "beam_nolm": BeamCTCDecoder(LABELS, beam_width=args.beam_width),
            "beam": BeamCTCDecoder(LABELS, beam_width=args.beam_width, lm_path=lm_path, alpha=args.alpha, beta=args.beta),
        }
        report: dict[str, float | int | str] = {}
        print(
            f"{args.utterances} utterances x {args.seconds:g} s, {n_frames} frames each, "
            f"{args.threads} thread(s), beam width {args.beam_width}, "
            f"LM vocabulary {len(decoders['beam'].vocabulary)} words"
        )
        print(f"{'decoder':<10} {'x realtime (median [min, max])':>34} {'ms/utt':>8} {'WER':>7} {'CER':>7}")
        for name, decoder in decoders.items():
            times, texts = time_decoder(decoder, log_probs, args.runs)
            speeds = sorted(audio_s / t for t in times)
            rate = ErrorRate()
            rate.update(refs, texts)
            med = statistics.median(speeds)
            print(
                f"{name:<10} {med:>14.1f} [{speeds[0]:.1f}, {speeds[-1]:.1f}]".ljust(45)
                + f" {1000 * statistics.median(times) / args.utterances:>8.2f}"
                + f" {rate.wer:>7.2f} {rate.cer:>7.2f}"
            )
            report[f"decode_{name}_x_realtime"] = round(med, 1)
            report[f"decode_{name}_x_realtime_min"] = round(speeds[0], 1)
            report[f"decode_{name}_x_realtime_max"] = round(speeds[-1], 1)
            report[f"{name}_wer"] = round(rate.wer, 2)
    source = str(args.manifest) if args.manifest else "synthetic corpus"
    report.update(
        beam_width=args.beam_width,
        utterances=args.utterances,
        seconds=args.seconds,
        threads=args.threads,
        runs=args.runs,
        lm=str(args.lm_path) if args.lm_path else f"3-gram from {source}",
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
