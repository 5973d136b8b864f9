"""Transcribe audio files with a trained model and print JSON.

    python transcribe.py --audio-path examples/an406-fcaw-b.wav
    python transcribe.py --model-path models/an4.pth --audio-path a.wav b.flac recordings/ --offsets
    python transcribe.py --audio-path a.wav --decoder beam --lm-path models/an4_3gram.arpa

Any sample rate or channel count works (resampled to the model's rate, averaged to mono).
Long recordings are cut into chunks of about --chunk-seconds at the quietest 20 ms near
each boundary, transcribed one chunk at a time (bounded memory) and joined. The output
follows deepspeech.pytorch's shape, one entry per file::

    {"output": [{"audio_path": ..., "transcription": ..., "duration": ..., "words": [...]}],
     "_meta": {"acoustic_model": {...}, "language_model": {...}, "decoder": {...}}}

A file that cannot be read gets an ``"error"`` entry and a message on stderr; the other
files are still transcribed, and the exit code is 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from data.data_loader import AudioConfig, AudioError, load_audio, spectrogram
from decoder import add_decoder_args, make_decoder, validate_decoder_args
from utils import CheckpointError, add_inference_args, inference_device, load_model, package_audio_config

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_args(p)
    g = p.add_argument_group("audio")
    g.add_argument("--audio-path", nargs="+", required=True,
                   help="audio files, or folders searched recursively for audio files")
    g.add_argument("--offsets", action="store_true", help="add word start/end times in seconds")
    g.add_argument("--chunk-seconds", type=float, default=30.0,
                   help="cut longer audio into chunks of about this length (0: never cut)")
    add_decoder_args(p)
    return p


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; folders expanded to the audio files below them, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            out.extend(found)
        else:
            out.append(p)
    return out


def chunk_bounds(audio: np.ndarray, cfg: AudioConfig, chunk_seconds: float) -> list[tuple[int, int]]:
    """Sample ranges covering ``audio``, each about ``chunk_seconds`` long, cut at the
    quietest 20 ms window within the last quarter of each chunk."""
    n = len(audio)
    size = int(chunk_seconds * cfg.sample_rate)
    if chunk_seconds <= 0 or n <= size:
        return [(0, n)]
    win = max(1, int(0.02 * cfg.sample_rate))
    bounds, start = [], 0
    while n - start > size:
        lo, hi = start + (3 * size) // 4, start + size
        frames = audio[lo:hi][: (hi - lo) // win * win].reshape(-1, win)
        cut = lo + int(np.argmin((frames**2).sum(axis=1))) * win + win // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


@torch.no_grad()
def transcribe_audio(model, decoder, audio: np.ndarray, cfg: AudioConfig, device: torch.device,
                     chunk_seconds: float = 30.0, half: bool = False) -> dict:
    """Transcribe one waveform (mono, at ``cfg.sample_rate``).

    Returns ``{"transcription", "words": [{"word", "start", "end"}], "alternatives": [...]}``
    with times in seconds from the start of the audio.
    """
    frame_shift = model.frame_shift(cfg)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    texts, words, alternatives = [], [], []
    for start, end in chunk_bounds(audio, cfg, chunk_seconds):
        spect = spectrogram(audio[start:end], cfg)  # (F, T)
        x = spect[None, None].to(device)  # (1, 1, F, T)
        lengths = torch.tensor([spect.shape[1]], device=device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=half):
            log_probs, out_lengths = model(x, lengths)
        paths = decoder.decode(log_probs.float().cpu(), out_lengths.cpu())[0]
        best = paths[0]
        offset = start / cfg.sample_rate
        if best.text:
            texts.append(best.text)
        words.extend({"word": w["word"], "start": round(w["start"] + offset, 3), "end": round(w["end"] + offset, 3)}
                     for w in best.words(frame_shift))
        alternatives.append([h.text for h in paths[1:]])
    result = {"transcription": " ".join(texts), "words": words}
    if any(alternatives):
        # alternatives of a single-chunk file; for long audio each chunk's list in order
        result["alternatives"] = alternatives[0] if len(alternatives) == 1 else alternatives
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.chunk_seconds < 0:
        parser.error("--chunk-seconds must be >= 0")
    try:
        validate_decoder_args(args)
        device = inference_device(args)
        model, pkg = load_model(args.model_path, device)
        cfg = package_audio_config(pkg)
        decoder = make_decoder(args, pkg["labels"])
        files = expand_paths(args.audio_path)
    except (CheckpointError, FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with decoder:
        outputs, failed = transcribe_files(files, model, decoder, cfg, device, args)
    meta = {
        "acoustic_model": {"path": str(args.model_path), "name": Path(args.model_path).name,
                           "epochs": pkg.get("epoch"), "architecture": pkg["model_config"].get("arch")},
        "language_model": {"path": str(args.lm_path), "name": Path(args.lm_path).name} if args.lm_path else None,
        "decoder": decoder.describe(),
    }
    print(json.dumps({"output": outputs, "_meta": meta}, indent=2, default=str))
    return 1 if failed else 0


def transcribe_files(files: list[Path], model, decoder, cfg: AudioConfig, device: torch.device,
                     args: argparse.Namespace) -> tuple[list[dict], int]:
    """One output entry per file; unreadable files get an ``"error"`` entry and are counted."""
    outputs, failed = [], 0
    for path in files:
        entry: dict = {"audio_path": str(path)}
        try:
            audio = load_audio(path, cfg.sample_rate)
        except (AudioError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            entry["error"] = str(e)
            failed += 1
            outputs.append(entry)
            continue
        result = transcribe_audio(model, decoder, audio, cfg, device, args.chunk_seconds, args.half)
        entry["transcription"] = result["transcription"]
        entry["duration"] = round(len(audio) / cfg.sample_rate, 3)
        if args.offsets:
            entry["words"] = result["words"]
        if "alternatives" in result:
            entry["alternatives"] = result["alternatives"]
        outputs.append(entry)
    return outputs, failed


if __name__ == "__main__":
    sys.exit(main())
