"""Evaluate a trained model on a manifest: corpus-level WER and CER.

    python test.py --model-path models/an4.pth --test-manifest data/an4_test_manifest.csv
    python test.py --decoder beam --lm-path models/an4_3gram.arpa --alpha 0.5 --beta 1.0
    python test.py --test-manifest data/an4_val_manifest.csv --save-output val_outputs.pt   # for LM tuning
    python test.py --model-path models/an4.onnx   # an exported model: log-probs from onnxruntime

Prints deepspeech.pytorch's ``Test Summary`` line; ``--report`` also writes the numbers and
every utterance's hypothesis as JSON. Audio settings and labels come from the checkpoint
(or from the metadata of an ``.onnx`` file, whose log-probs onnxruntime computes; the data
loader and the CTC loss still use PyTorch).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from checkpoint import CheckpointError
from data.audio import AudioError
from data.data_loader import AudioDataLoader, BucketingSampler, SpectrogramDataset
from data.manifest import ManifestError
from data.text import TranscriptError
from decoder import DecoderConfig, make_decoder, save_outputs
from inference import InferenceConfig, TorchRecognizer, evaluate, load_recognizer
from utils import make_parser, write_text_atomic


def build_parser():
    p = make_parser(__doc__)
    InferenceConfig.add_args(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--test-manifest", default="data/an4_test_manifest.csv", help="CSV manifest to evaluate")
    g.add_argument("--batch-size", type=int, default=20)
    g.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    g.add_argument("--verbose", action="store_true", help="print reference, hypothesis, WER and CER per utterance")
    g.add_argument("--report", default=None, help="write a JSON report (summary and every utterance) here")
    g.add_argument("--save-output", default=None, help="save model outputs and references here, for search_lm_params.py")
    g.add_argument("--silent", action="store_true", help="no progress reporting")
    DecoderConfig.add_args(p)
    return p


def run(
    inference: InferenceConfig,
    decoder_cfg: DecoderConfig,
    manifest: str | Path,
    batch_size: int = 20,
    num_workers: int = 0,
    save_output: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate a model on a manifest; returns the summary and every utterance's result."""
    recognizer = load_recognizer(inference)
    labels = recognizer.labels
    decoder = make_decoder(decoder_cfg, labels)
    dataset = SpectrogramDataset(manifest, recognizer.audio_config, labels, on_error="raise")
    loader = AudioDataLoader(
        dataset,
        batch_sampler=BucketingSampler(len(dataset), batch_size=batch_size, shuffle=False),
        num_workers=num_workers,
    )
    start = time.perf_counter()
    with decoder:
        if isinstance(recognizer, TorchRecognizer):
            result = evaluate(
                recognizer.model,
                loader,
                decoder,
                recognizer.device,
                amp=inference.amp,
                keep_outputs=save_output is not None,
                progress=progress,
            )
        else:
            result = evaluate(recognizer, loader, decoder, keep_outputs=save_output is not None, progress=progress)
    elapsed = time.perf_counter() - start
    if save_output is not None:
        save_outputs(save_output, result.outputs, [u["reference"] for u in result.utterances], labels, recognizer.frame_shift)
    return {
        "model_path": str(inference.model_path),
        "manifest": str(manifest),
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
    if args.batch_size < 1 or args.num_workers < 0:
        parser.error("--batch-size must be >= 1 and --num-workers >= 0")
    logging.basicConfig(level=logging.WARNING if args.silent else logging.INFO, format="%(levelname)s %(message)s")
    try:
        report = run(
            InferenceConfig.from_args(args),
            DecoderConfig.from_args(args),
            args.test_manifest,
            args.batch_size,
            args.num_workers,
            args.save_output,
            progress=not args.silent,
        )
    except (CheckpointError, AudioError, ManifestError, TranscriptError, FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.verbose:
        for u in report["utterances"]:
            print(f"{u['path']}\n  Ref: {u['reference']}\n  Hyp: {u['hypothesis']}\n  WER: {u['wer']:.1f}  CER: {u['cer']:.1f}")
    print(f"Test Summary \tAverage WER {report['wer']:.3f}\tAverage CER {report['cer']:.3f}")
    if args.report:
        write_text_atomic(args.report, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
