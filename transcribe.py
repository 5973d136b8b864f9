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

import json
import sys
from pathlib import Path

from data.audio import AudioError, load_audio
from decoder import DecoderConfig, make_decoder
from inference import InferenceConfig, Recognizer, load_recognizer, transcribe_audio
from utils import make_parser

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


def build_parser():
    p = make_parser(__doc__)
    InferenceConfig.add_args(p)
    g = p.add_argument_group("audio")
    g.add_argument("--audio-path", nargs="+", required=True,
                   help="audio files, or folders searched recursively for audio files")
    g.add_argument("--offsets", action="store_true", help="add word start/end times in seconds")
    g.add_argument("--chunk-seconds", type=float, default=30.0,
                   help="cut longer audio into chunks of about this length (0: never cut)")
    DecoderConfig.add_args(p)
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.chunk_seconds < 0:
        parser.error("--chunk-seconds must be >= 0")
    try:
        decoder_cfg = DecoderConfig.from_args(args)
        recognizer = load_recognizer(InferenceConfig.from_args(args))
        decoder = make_decoder(decoder_cfg, recognizer.labels)
        files = expand_paths(args.audio_path)
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with decoder:
        outputs, failed = transcribe_files(files, recognizer, decoder, args.chunk_seconds, args.offsets)
    meta = {
        "acoustic_model": recognizer.info,
        "language_model": ({"path": str(decoder_cfg.lm_path), "name": Path(decoder_cfg.lm_path).name}
                           if decoder_cfg.lm_path else None),
        "decoder": decoder.describe(),
    }
    print(json.dumps({"output": outputs, "_meta": meta}, indent=2, default=str))
    return 1 if failed else 0


def transcribe_files(files: list[Path], recognizer: Recognizer, decoder, chunk_seconds: float = 30.0,
                     offsets: bool = False) -> tuple[list[dict], int]:
    """One output entry per file; unreadable files get an ``"error"`` entry and are counted."""
    outputs, failed = [], 0
    rate = recognizer.audio_config.sample_rate
    for path in files:
        entry: dict = {"audio_path": str(path)}
        try:
            audio = load_audio(path, rate)
        except (AudioError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            entry["error"] = str(e)
            failed += 1
            outputs.append(entry)
            continue
        result = transcribe_audio(recognizer, decoder, audio, chunk_seconds)
        entry["transcription"] = result["transcription"]
        entry["duration"] = round(len(audio) / rate, 3)
        if offsets:
            entry["words"] = result["words"]
        if "alternatives" in result:
            entry["alternatives"] = result["alternatives"]
        outputs.append(entry)
    return outputs, failed


if __name__ == "__main__":
    sys.exit(main())
