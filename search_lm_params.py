"""Tune the LM weight alpha and word bonus beta by grid search over saved model outputs.

    python test.py --model-path M --test-manifest data/an4_val_manifest.csv --save-output val_out.pt
    python search_lm_params.py --saved-output val_out.pt --lm-path an4_3gram.arpa

Tune on the validation set, never on the test set. Every (alpha, beta) point of the
grid decodes all saved utterances with beam search + LM; points run in parallel
(``--num-workers`` processes, each loading the LM once). Prints the best pair (lowest
WER, then lowest CER, then the smallest alpha and beta) and writes every point to
``--output-path`` as JSON: ``{"results": [{"alpha", "beta", "wer", "cer"}, ...],
"best": {...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from decoder import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_CUTOFF_PROB,
    DEFAULT_CUTOFF_TOP_N,
    BeamCTCDecoder,
    BeamSearchUnavailable,
    DecoderError,
    ErrorRate,
    load_outputs,
    save_lm_defaults,
)


def grid(start: float, stop: float, num: int) -> list[float]:
    """``num`` evenly spaced values from ``start`` to ``stop`` (both included)."""
    return [float(v) for v in np.linspace(start, stop, num)]


def best_point(results: list[dict[str, float]]) -> dict[str, float]:
    """Lowest WER, ties broken by CER, then by the smaller alpha and beta."""
    return min(results, key=lambda r: (r["wer"], r["cer"], r["alpha"], r["beta"]))


class _Evaluator:
    """Decodes the saved outputs for one (alpha, beta) at a time."""

    def __init__(self, saved_output: str, decoder_kwargs: dict[str, Any]) -> None:
        data = load_outputs(saved_output)
        self.references: list[str] = data["references"]
        self.decoder = BeamCTCDecoder(data["labels"], **decoder_kwargs)
        self.emissions = [self.decoder.prepare_emissions(lp) for lp in data["log_probs"]]

    def __call__(self, point: tuple[float, float]) -> dict[str, float]:
        alpha, beta = point
        self.decoder.set_lm_weights(alpha, beta)
        hyps = [self.decoder.decode_emissions(e)[0].text for e in self.emissions]
        rate = ErrorRate()
        rate.update(self.references, hyps)
        return {"alpha": alpha, "beta": beta, "wer": rate.wer, "cer": rate.cer}


_EVALUATOR: _Evaluator | None = None


def _init_worker(saved_output: str, decoder_kwargs: dict[str, Any]) -> None:
    global _EVALUATOR
    _EVALUATOR = _Evaluator(saved_output, decoder_kwargs)


def _evaluate(point: tuple[float, float]) -> dict[str, float]:
    assert _EVALUATOR is not None
    return _EVALUATOR(point)


def search(
    saved_output: str | Path,
    lm_path: str | Path,
    alphas: list[float],
    betas: list[float],
    beam_width: int = DEFAULT_BEAM_WIDTH,
    cutoff_top_n: int = DEFAULT_CUTOFF_TOP_N,
    cutoff_prob: float = DEFAULT_CUTOFF_PROB,
    lexicon: str | Path | None = None,
    num_workers: int = 1,
    progress: bool = True,
) -> list[dict[str, float]]:
    """WER/CER for every (alpha, beta) pair, in grid order (alpha-major)."""
    decoder_kwargs = dict(
        beam_width=beam_width,
        lm_path=str(lm_path),
        cutoff_top_n=cutoff_top_n,
        cutoff_prob=cutoff_prob,
        lexicon=str(lexicon) if lexicon else None,
    )
    points = [(a, b) for a in alphas for b in betas]
    bar = tqdm(total=len(points), desc="alpha/beta grid", disable=not progress, file=sys.stderr)
    results: list[dict[str, float]] = []
    if num_workers <= 1 or len(points) == 1:
        evaluator = _Evaluator(str(saved_output), decoder_kwargs)
        for point in points:
            results.append(evaluator(point))
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(
            min(num_workers, len(points)), initializer=_init_worker, initargs=(str(saved_output), decoder_kwargs)
        ) as pool:
            for row in pool.imap(_evaluate, points):
                results.append(row)
                bar.update()
    bar.close()
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument(
        "--saved-output", type=Path, required=True, help="model outputs on the validation set, from test.py --save-output"
    )
    parser.add_argument("--lm-path", type=Path, required=True, help="ARPA (or KenLM binary + --lexicon)")
    parser.add_argument("--lexicon", type=Path, default=None, help="word list restricting the output words")
    parser.add_argument("--lm-alpha-from", type=float, default=0.0)
    parser.add_argument("--lm-alpha-to", type=float, default=3.0)
    parser.add_argument("--lm-num-alphas", type=int, default=45)
    parser.add_argument("--lm-beta-from", type=float, default=0.0)
    parser.add_argument("--lm-beta-to", type=float, default=0.5)
    parser.add_argument("--lm-num-betas", type=int, default=8)
    parser.add_argument("--beam-width", type=int, default=DEFAULT_BEAM_WIDTH)
    parser.add_argument("--cutoff-top-n", type=int, default=DEFAULT_CUTOFF_TOP_N)
    parser.add_argument("--cutoff-prob", type=float, default=DEFAULT_CUTOFF_PROB)
    parser.add_argument(
        "--num-workers", type=int, default=os.cpu_count() or 1, help="processes evaluating grid points in parallel"
    )
    parser.add_argument("--output-path", type=Path, default=Path("tune_results.json"))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--save-defaults", action="store_true", help="store the best alpha/beta next to the LM (LM.json) as its decoder defaults"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for name in ("lm_num_alphas", "lm_num_betas", "num_workers", "beam_width", "cutoff_top_n"):
            if getattr(args, name) < 1:
                raise DecoderError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if args.lm_alpha_to < args.lm_alpha_from or args.lm_beta_to < args.lm_beta_from:
            raise DecoderError("--lm-alpha-to/--lm-beta-to must not be below the matching --*-from")
        alphas = grid(args.lm_alpha_from, args.lm_alpha_to, args.lm_num_alphas)
        betas = grid(args.lm_beta_from, args.lm_beta_to, args.lm_num_betas)
        # Fail fast (before starting workers) on a bad saved-output, LM or lexicon file.
        data = load_outputs(args.saved_output)
        BeamCTCDecoder(
            data["labels"],
            beam_width=args.beam_width,
            lm_path=args.lm_path,
            cutoff_top_n=args.cutoff_top_n,
            cutoff_prob=args.cutoff_prob,
            lexicon=args.lexicon,
        )
        n_utts = len(data["references"])
        del data
        results = search(
            args.saved_output,
            args.lm_path,
            alphas,
            betas,
            beam_width=args.beam_width,
            cutoff_top_n=args.cutoff_top_n,
            cutoff_prob=args.cutoff_prob,
            lexicon=args.lexicon,
            num_workers=args.num_workers,
            progress=not args.quiet,
        )
    except (BeamSearchUnavailable, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    best = best_point(results)
    report = {
        "saved_output": str(args.saved_output),
        "lm_path": str(args.lm_path),
        "lexicon": str(args.lexicon) if args.lexicon else None,
        "n_utterances": n_utts,
        "beam_width": args.beam_width,
        "cutoff_top_n": args.cutoff_top_n,
        "cutoff_prob": args.cutoff_prob,
        "results": results,
        "best": best,
    }
    args.output_path.parent.mkdir(parents=True, exist_ok=True)
    args.output_path.write_text(json.dumps(report, indent=2) + "\n")
    if args.save_defaults:
        path = save_lm_defaults(
            args.lm_path, best["alpha"], best["beta"], tuned_on=str(args.saved_output), beam_width=args.beam_width
        )
        print(f"Saved alpha/beta as the decoder defaults for {args.lm_path} in {path}")
    print(
        f"Best: alpha {best['alpha']:.4g}  beta {best['beta']:.4g}  "
        f"WER {best['wer']:.3f}  CER {best['cer']:.3f}  ({len(results)} points, "
        f"results in {args.output_path})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
