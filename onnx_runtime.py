"""The exported ONNX file format: metadata, graph names and onnxruntime sessions, without PyTorch.

    python transcribe.py --model-path models/an4.onnx --audio-path a.wav
    python test.py --model-path models/an4_int8.onnx --test-manifest data/an4_test_manifest.csv

Files come from ``python model.py --export-onnx`` (onnx_export.py). Each is self-describing:
its ``metadata_props`` hold, as JSON, the fields of :data:`METADATA_FIELDS`: ``format``
(``"deepspeech-ctc-onnx"``), ``format_version``, ``labels``, ``audio_config`` (the
:class:`data.audio.AudioConfig`, feature statistics included), ``model_config``,
``frame_shift`` (seconds per output frame), ``precision`` (``float32``, ``int8-dynamic``
or ``int8-static-conv``), ``opset`` and ``info`` (source checkpoint, epochs).

The graph takes ``features`` (B, F, T) float32 zero-padded spectrograms with ``lengths``
(B,) int64 and returns ``log_probs`` (B, T', C) and ``output_lengths`` (B,). Features are
computed by :func:`data.audio.spectrogram` in numpy, exactly as for the PyTorch model.
Only numpy and onnxruntime are needed here (``requirements-onnx.txt``);
:class:`inference.OnnxRecognizer` runs such a file.

A streaming step graph (``python model.py --export-onnx S.onnx --streaming``) has one more
metadata field, ``streaming`` (:data:`STREAMING_FIELD`): its inputs, state tensors and the
geometry the host needs (see onnx_export.py); :class:`onnx_streaming.OnnxStreamingRecognizer`
runs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data.audio import AudioConfig

FORMAT = "deepspeech-ctc-onnx"
FORMAT_VERSION = 1
METADATA_FIELDS = (
    "format",
    "format_version",
    "labels",
    "audio_config",
    "model_config",
    "frame_shift",
    "precision",
    "opset",
    "info",
)
STREAMING_FIELD = "streaming"  # only in streaming step graphs
INPUT_NAMES = ("features", "lengths")
OUTPUT_NAMES = ("log_probs", "output_lengths")


class OnnxModelError(ValueError):
    """An ONNX file that cannot be used; the message names the file and the fix."""


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("running an .onnx model needs onnxruntime: pip install -r requirements-onnx.txt") from None
    return onnxruntime


def session_options(threads: int | None = None) -> Any:
    """onnxruntime session options: ``threads`` intra-op threads (None: onnxruntime's
    default, one per physical core), one inter-op thread, sequential execution, all
    graph optimizations."""
    ort = _import_onnxruntime()
    so = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError("--threads must be >= 1")
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: onnxruntime's warnings go to stderr otherwise
    return so


def parse_metadata(props: dict[str, str], path: str | Path) -> dict[str, Any]:
    """Check and decode the metadata of an exported file (every field JSON)."""
    if "format" not in props:
        raise OnnxModelError(
            f"{path}: an ONNX model without deepspeech-ctc metadata (not exported by this toolkit?); "
            "export one with: python model.py --model-path M.pth --export-onnx OUT.onnx"
        )
    try:
        meta = {k: json.loads(props[k]) for k in (*METADATA_FIELDS, STREAMING_FIELD) if k in props}
    except json.JSONDecodeError as e:
        raise OnnxModelError(f"{path}: damaged deepspeech-ctc metadata ({e}); export the model again") from None
    if meta["format"] != FORMAT:
        raise OnnxModelError(f"{path}: metadata format {meta['format']!r} is not {FORMAT!r}; export the model again")
    version = meta.get("format_version")
    if type(version) is not int or version < 1:
        raise OnnxModelError(f"{path}: unknown format_version {version!r}; export the model again")
    if version > FORMAT_VERSION:
        raise OnnxModelError(
            f"{path}: format_version {version} is newer than this code reads ({FORMAT_VERSION}); update deepspeech-ctc"
        )
    missing = [k for k in METADATA_FIELDS if k not in meta]
    if missing:
        raise OnnxModelError(f"{path}: metadata lacks {missing}; export the model again")
    try:
        meta["audio_config"] = AudioConfig.from_dict(meta["audio_config"])
    except (TypeError, ValueError) as e:
        raise OnnxModelError(f"{path}: bad audio_config in the metadata ({e})") from None
    labels = meta["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(c, str) and len(c) == 1 for c in labels):
        raise OnnxModelError(f"{path}: metadata labels must be a list of single characters")
    if not isinstance(meta["frame_shift"], (int, float)) or meta["frame_shift"] <= 0:
        raise OnnxModelError(f"{path}: metadata frame_shift must be a positive number of seconds")
    return meta


def open_session(path: str | Path, threads: int | None = None, cuda: bool = False) -> tuple[Any, dict[str, Any]]:
    """An onnxruntime session for an exported file and its decoded metadata (:func:`parse_metadata`).

    ``cuda``: run on the CUDA execution provider (onnxruntime-gpu), the CPU taking what it cannot.
    Missing, empty, damaged or foreign files give one :class:`OnnxModelError` naming the file.
    """
    import os

    ort = _import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"{path}: ONNX model not found; export one with python model.py --export-onnx")
    if path.stat().st_size == 0:
        raise OnnxModelError(f"{path}: ONNX model is empty (0 bytes), probably an interrupted copy")
    providers = ["CPUExecutionProvider"]
    if cuda:
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("--cuda with an .onnx model needs onnxruntime-gpu; drop --cuda to run on the CPU")
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(os.fspath(path), session_options(threads), providers=providers)
    except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxModelError(f"{path}: not a usable ONNX model ({first[:200]})") from None
    return session, parse_metadata(session.get_modelmeta().custom_metadata_map, path)


def model_info(path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Plain data about an exported model, for the ``_meta`` of transcribe.py's output."""
    path = Path(path)
    model_cfg = meta["model_config"]
    info = meta["info"] if isinstance(meta["info"], dict) else {}
    return {
        "path": str(path),
        "name": path.name,
        "format": "onnx",
        "precision": meta["precision"],
        "epochs": info.get("epochs"),
        "architecture": model_cfg.get("arch") if isinstance(model_cfg, dict) else None,
    }
