"""Evaluate a trained model on a manifest: corpus-level WER and CER.

    python test.py --model-path models/an4.pth --test-manifest data/an4_test_manifest.csv
    python test.py --decoder beam --lm-path models/an4_3gram.arpa --alpha 0.5 --beta 1.0
    python test.py --test-manifest data/an4_val_manifest.csv --save-output val_outputs.pt   # for LM tuning

Prints deepspeech.pytorch's ``Test Summary`` line; ``--report`` also writes the numbers and
every utterance's hypothesis as JSON. Audio settings and labels come from the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from data.data_loader import (
    AudioDataLoader,
    AudioError,
    BucketingSampler,
    ManifestError,
    SpectrogramDataset,
    TranscriptError,
)
from decoder import add_decoder_args, make_decoder, save_outputs, validate_decoder_args
from utils import CheckpointError, add_inference_args, evaluate, inference_device, load_model, package_audio_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_inference_args(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--test-manifest", default="data/an4_test_manifest.csv", help="CSV manifest to evaluate")
    g.add_argument("--batch-size", type=int, default=20)
    g.add_argument("--num-workers", type=int, default=0)
    g.add_argument("--verbose", action="store_true", help="print reference, hypothesis, WER and CER per utterance")
    g.add_argument("--report", default=None, help="write a JSON report (summary and every utterance) here")
    g.add_argument("--save-output", default=None,
                   help="save model outputs and references here, for search_lm_params.py")
    g.add_argument("--silent", action="store_true", help="no progress bar")
    add_decoder_args(p)
    return p


def run(args: argparse.Namespace) -> dict:
    validate_decoder_args(args)
    device = inference_device(args)
    model, pkg = load_model(args.model_path, device)
    audio_cfg = package_audio_config(pkg)
    labels = pkg["labels"]
    decoder = make_decoder(args, labels)
    dataset = SpectrogramDataset(args.test_manifest, audio_cfg, labels, on_error="raise")
    loader = AudioDataLoader(
        dataset,
        batch_sampler=BucketingSampler(len(dataset), batch_size=args.batch_size, shuffle=False),
        num_workers=args.num_workers,
    )
    start = time.perf_counter()
    with decoder:
        result = evaluate(model, loader, decoder, device, amp=args.half, keep_outputs=bool(args.save_output),
                          progress=not args.silent)
    elapsed = time.perf_counter() - start
    if args.save_output:
        save_outputs(args.save_output, result.outputs, [u["reference"] for u in result.utterances], labels,
                     model.frame_shift(audio_cfg))
    return {
        "model_path": str(args.model_path),
        "manifest": str(args.test_manifest),
        "decoder": decoder.describe(),
        "wer": result.wer,
        "cer": result.cer,
        "loss": result.loss,
        "n_utterances": result.n_utterances,
        "seconds": elapsed,
        "utterances": result.utterances,
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        report = run(args)
    except (CheckpointError, AudioError, ManifestError, TranscriptError, FileNotFoundError, ImportError,
            ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.verbose:
        for u in report["utterances"]:
            print(f"{u['path']}\n  Ref: {u['reference']}\n  Hyp: {u['hypothesis']}\n"
                  f"  WER: {u['wer']:.1f}  CER: {u['cer']:.1f}")
    print(f"Test Summary \tAverage WER {report['wer']:.3f}\tAverage CER {report['cer']:.3f}")
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
