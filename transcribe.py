"""Transcribe audio files with a trained model and print JSON.

    python transcribe.py --audio-path examples/an406-fcaw-b.wav
    python transcribe.py --model-path models/an4.pth --audio-path a.wav b.flac recordings/ --offsets
    python transcribe.py --audio-path a.wav --decoder beam --lm-path models/an4_3gram.arpa
    python transcribe.py --model-path models/an4.onnx --audio-path recordings/ --batch-size 16 --threads 2

Any sample rate or channel count works (resampled to the model's rate, averaged to mono).
Long recordings are cut into chunks of about --chunk-seconds at the quietest 20 ms near
each boundary, transcribed chunk by chunk and joined. Files are taken in order of duration
and run through the model --batch-size chunks at a time, at most 120 s of padded audio per
batch (padding is masked, so batching changes speed, not results). An ``.onnx`` model (``python model.py --export-onnx``) runs on
onnxruntime, and this script then never imports PyTorch. The output
follows deepspeech.pytorch's shape, one entry per file::

    {"output": [{"audio_path": ..., "transcription": ..., "duration": ..., "words": [...]}],
     "_meta": {"acoustic_model": {...}, "language_model": {...}, "decoder": {...}}}

A file that cannot be read gets an ``"error"`` entry and a message on stderr; the other
files are still transcribed, and the exit code is 1.

``--stream`` feeds each file to the streaming engine (streaming.py) in chunks of ``--chunk-ms``,
at real-time pace (``--stream-speed`` 0: as fast as possible), for unidirectional models
trained with ``--normalize global``. Each new partial text is printed as one JSON line
``{"audio_path", "partial", "audio_s"}``; the usual JSON follows, with the same transcription
as without ``--stream`` (the whole file is one utterance: as ``--chunk-seconds 0``). The model
is a checkpoint, or its streaming step graph (``python model.py --export-onnx S.onnx
--streaming``), which onnxruntime runs without PyTorch (onnx_streaming.py)::

    python transcribe.py --stream --model-path models/an4_stream.pth --audio-path a.wav --chunk-ms 100
    python transcribe.py --stream --model-path models/an4_stream.onnx --audio-path a.wav --chunk-ms 100
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from data.audio import AudioError, load_audio, probe_audio
from decoder import DecoderConfig, make_decoder
from inference import InferenceConfig, Recognizer, is_onnx_path, load_recognizer, transcribe_many
from utils import make_parser

DEFAULT_CHUNK_MS = 100.0
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


def build_parser():
    p = make_parser(__doc__)
    InferenceConfig.add_args(p)
    g = p.add_argument_group("audio")
    g.add_argument("--audio-path", nargs="+", required=True, help="audio files, or folders searched recursively for audio files")
    g.add_argument("--offsets", action="store_true", help="add word start/end times in seconds")
    g.add_argument(
        "--chunk-seconds", type=float, default=30.0, help="cut longer audio into chunks of about this length (0: never cut)"
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="chunks run through the model at once, files taken in order of duration (1: one at a time; results are the same)",
    )
    g = p.add_argument_group("streaming")
    g.add_argument(
        "--stream",
        action="store_true",
        help="feed each file to the streaming engine chunk by chunk (unidirectional models with "
        "--normalize global: a checkpoint, or an .onnx step graph from model.py --export-onnx --streaming), "
        "printing a JSON line per new partial text before the usual JSON",
    )
    g.add_argument(
        "--chunk-ms",
        type=float,
        default=None,
        help=f"with --stream: milliseconds of audio per chunk (default: {DEFAULT_CHUNK_MS:g})",
    )
    g.add_argument(
        "--stream-speed",
        type=float,
        default=None,
        help="with --stream: feed the audio at this multiple of real time; 0 feeds it as fast as "
        "possible (default: 1, real time)",
    )
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
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.stream:
        args.chunk_ms = DEFAULT_CHUNK_MS if args.chunk_ms is None else args.chunk_ms
        args.stream_speed = 1.0 if args.stream_speed is None else args.stream_speed
        if not args.chunk_ms > 0:
            parser.error("--chunk-ms must be > 0")
        if not args.stream_speed >= 0:
            parser.error("--stream-speed must be >= 0")
        if args.amp:
            parser.error("--amp does not apply to --stream (the streaming engine runs in fp32)")
        if args.batch_size != parser.get_default("batch_size"):
            parser.error("--batch-size does not apply to --stream (each file is fed as one stream)")
    elif args.chunk_ms is not None or args.stream_speed is not None:
        parser.error("--chunk-ms and --stream-speed apply to --stream")
    try:
        decoder_cfg = DecoderConfig.from_args(args)
        inference_cfg = InferenceConfig.from_args(args)
        if args.stream and is_onnx_path(inference_cfg.model_path):
            recognizer = streamer = load_onnx_streamer(inference_cfg)
            decoder = streamer.decoder = make_decoder(decoder_cfg, streamer.labels)
            files = expand_paths(args.audio_path)
        else:
            recognizer = load_recognizer(inference_cfg)
            decoder = make_decoder(decoder_cfg, recognizer.labels)
            files = expand_paths(args.audio_path)
            streamer = make_streamer(recognizer, decoder) if args.stream else None
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extra_meta = {}
    with decoder:
        if streamer is not None:
            outputs, failed, extra_meta["streaming"] = stream_files(
                files, streamer, args.chunk_ms, args.stream_speed, args.offsets
            )
        else:
            outputs, failed = transcribe_files(files, recognizer, decoder, args.chunk_seconds, args.offsets, args.batch_size)
    meta = {
        "acoustic_model": recognizer.info,
        "language_model": (
            {"path": str(decoder_cfg.lm_path), "name": Path(decoder_cfg.lm_path).name} if decoder_cfg.lm_path else None
        ),
        "decoder": decoder.describe(),
        **extra_meta,
    }
    print(json.dumps({"output": outputs, "_meta": meta}, indent=2, default=str))
    return 1 if failed else 0


def transcribe_files(
    files: list[Path], recognizer: Recognizer, decoder, chunk_seconds: float = 30.0, offsets: bool = False, batch_size: int = 1
) -> tuple[list[dict], int]:
    """One output entry per file, in the order given; unreadable files get an ``"error"``
    entry and are counted.

    Files are read ``batch_size`` at a time in order of duration (from their headers), and
    their chunks go through the model in batches of ``batch_size``
    (:func:`inference.transcribe_many`), so at most ``batch_size`` files are in memory.
    """
    rate = recognizer.audio_config.sample_rate
    outputs: list[dict] = [{"audio_path": str(path)} for path in files]
    failed = 0

    def fail(i: int, e: Exception) -> None:
        nonlocal failed
        print(f"error: {e}", file=sys.stderr)
        outputs[i]["error"] = str(e)
        failed += 1

    durations: dict[int, float] = {}
    for i, path in enumerate(files):
        try:
            durations[i] = probe_audio(path).duration
        except (AudioError, FileNotFoundError) as e:
            fail(i, e)
    order = sorted(durations, key=lambda i: durations[i])
    for start in range(0, len(order), batch_size):
        group, audios = [], []
        for i in order[start : start + batch_size]:
            try:
                audios.append(load_audio(files[i], rate))
                group.append(i)
            except (AudioError, FileNotFoundError) as e:
                fail(i, e)
        for i, audio, result in zip(group, audios, transcribe_many(recognizer, decoder, audios, chunk_seconds, batch_size)):
            entry = outputs[i]
            entry["transcription"] = result["transcription"]
            entry["duration"] = round(len(audio) / rate, 3)
            if offsets:
                entry["words"] = result["words"]
            if "alternatives" in result:
                entry["alternatives"] = result["alternatives"]
    return outputs, failed


def make_streamer(recognizer: Recognizer, decoder):
    """A streaming.StreamingRecognizer over the loaded model (StreamingError if it cannot stream)."""
    from streaming import StreamingError, StreamingRecognizer

    model = getattr(recognizer, "model", None)
    if model is None:
        raise StreamingError("--stream needs a PyTorch checkpoint or an ONNX streaming step graph")
    return StreamingRecognizer(model, recognizer.audio_config, recognizer.labels, decoder)


def load_onnx_streamer(cfg: InferenceConfig):
    """An onnx_streaming.OnnxStreamingRecognizer for a streaming step graph (no PyTorch);
    OnnxModelError for an offline export."""
    from onnx_streaming import OnnxStreamingRecognizer

    return OnnxStreamingRecognizer(cfg.model_path, threads=cfg.threads, cuda=cfg.cuda)


def stream_files(
    files: list[Path], streamer, chunk_ms: float, speed: float = 1.0, offsets: bool = False
) -> tuple[list[dict], int, dict]:
    """Feed each file to ``streamer`` in chunks of ``chunk_ms``, each once it would have been
    recorded at ``speed`` x real time (0: no waiting), printing a JSON line per new partial text.
    Returns the output entries (as :func:`transcribe_files`), the number of unreadable files, and
    timing figures for ``_meta``."""
    outputs, failed = [], 0
    rate = streamer.audio_config.sample_rate
    size = max(1, round(chunk_ms * rate / 1000))
    compute: list[float] = []
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
        streamer.reset()
        last = ""
        start = time.monotonic()
        for begin in range(0, len(audio), size):
            end = min(len(audio), begin + size)
            if speed > 0:
                time.sleep(max(0.0, start + end / rate / speed - time.monotonic()))
            t = time.perf_counter()
            partial = streamer.accept(audio[begin:end])
            compute.append(time.perf_counter() - t)
            if partial != last:
                print(json.dumps({"audio_path": str(path), "partial": partial, "audio_s": round(end / rate, 3)}), flush=True)
                last = partial
        t = time.perf_counter()
        result = streamer.finish()
        compute.append(time.perf_counter() - t)
        entry["transcription"] = result["text"]
        entry["duration"] = round(len(audio) / rate, 3)
        if offsets:
            entry["words"] = result["words"]
        if "alternatives" in result:
            entry["alternatives"] = result["alternatives"]
        outputs.append(entry)
    ms = sorted(1000 * c for c in compute)
    stats = {
        "chunk_ms": chunk_ms,
        "speed": speed,
        "algorithmic_latency_ms": streamer.latency.as_ms(),
        "compute_ms_per_chunk": (
            {
                "median": round(statistics.median(ms), 3),
                "p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
                "max": round(ms[-1], 3),
            }
            if ms
            else None
        ),
    }
    return outputs, failed, stats


if __name__ == "__main__":
    sys.exit(main())
