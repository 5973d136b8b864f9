"""Run an exported ONNX acoustic model with onnxruntime, without PyTorch.

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
Only numpy and onnxruntime are needed here (``requirements-onnx.txt``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from data.audio import AudioConfig
from inference import InferenceConfig, Recognizer

FORMAT = "deepspeech-ctc-onnx"
FORMAT_VERSION = 1
METADATA_FIELDS = ("format", "format_version", "labels", "audio_config", "model_config", "frame_shift",
                   "precision", "opset", "info")
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
        meta = {k: json.loads(props[k]) for k in METADATA_FIELDS if k in props}
    except json.JSONDecodeError as e:
        raise OnnxModelError(f"{path}: damaged deepspeech-ctc metadata ({e}); export the model again") from None
    if meta["format"] != FORMAT:
        raise OnnxModelError(f"{path}: metadata format {meta['format']!r} is not {FORMAT!r}; export the model again")
    version = meta.get("format_version")
    if type(version) is not int or version < 1:
        raise OnnxModelError(f"{path}: unknown format_version {version!r}; export the model again")
    if version > FORMAT_VERSION:
        raise OnnxModelError(f"{path}: format_version {version} is newer than this code reads ({FORMAT_VERSION}); "
                             "update deepspeech-ctc")
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


def describe_onnx(path: str | Path) -> list[str]:
    """Human-readable lines about an exported file (``python model.py --model-path M.onnx``)."""
    rec = OnnxRecognizer(path, threads=1)
    meta, audio = rec.metadata, rec.audio_config.to_dict()
    if audio.get("feature_mean") is not None:
        audio["feature_mean"] = audio["feature_std"] = f"<{rec.audio_config.n_freq} values>"
    cfg = meta["model_config"]
    arch = ", ".join(f"{k}={v}" for k, v in cfg.items()) if isinstance(cfg, dict) else str(cfg)
    lines = [
        f"format:        ONNX (opset {meta['opset']}), {meta['precision']}, "
        f"{Path(path).stat().st_size / 2**20:.1f} MiB",
        f"architecture:  {arch}",
        f"labels ({len(rec.labels)}):   {''.join(rec.labels)!r}",
        "audio:         " + ", ".join(f"{k}={v}" for k, v in audio.items()),
        f"frame shift:   {rec.frame_shift * 1000:g} ms",
    ]
    if meta["info"]:
        lines.append("exported from: " + ", ".join(f"{k} {v}" for k, v in meta["info"].items()))
    return lines


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of an exported file (loads the file into onnxruntime)."""
    return OnnxRecognizer(path, threads=1).metadata


class OnnxRecognizer(Recognizer):
    """An exported model run by onnxruntime on the CPU (or CUDA with onnxruntime-gpu)."""

    def __init__(self, path: str | Path, threads: int | None = None, cuda: bool = False) -> None:
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
            self.session = ort.InferenceSession(os.fspath(path), session_options(threads), providers=providers)
        except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for bad files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OnnxModelError(f"{path}: not a usable ONNX model ({first[:200]})") from None
        self.metadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        inputs = tuple(i.name for i in self.session.get_inputs())
        outputs = tuple(o.name for o in self.session.get_outputs())
        if inputs != INPUT_NAMES or outputs != OUTPUT_NAMES:
            raise OnnxModelError(f"{path}: graph inputs {inputs} / outputs {outputs}, expected {INPUT_NAMES} / "
                                 f"{OUTPUT_NAMES}; export the model again")
        self.path = path
        self.audio_config: AudioConfig = self.metadata["audio_config"]
        self.labels = list(self.metadata["labels"])
        self.frame_shift = float(self.metadata["frame_shift"])
        model_cfg = self.metadata["model_config"]
        self.info = {"path": str(path), "name": path.name, "format": "onnx",
                     "precision": self.metadata["precision"], "epochs": self.metadata["info"].get("epochs"),
                     "architecture": model_cfg.get("arch") if isinstance(model_cfg, dict) else None}

    @classmethod
    def load(cls, cfg: InferenceConfig) -> "OnnxRecognizer":
        if cfg.amp:
            raise ValueError("--half/--amp applies to PyTorch models; for a faster ONNX model export with --int8")
        return cls(cfg.model_path, cfg.threads, cfg.cuda)

    def forward_padded(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_probs, out_lengths = self.session.run(None, {
            "features": np.ascontiguousarray(features, dtype=np.float32),
            "lengths": np.asarray(lengths, dtype=np.int64).reshape(-1),
        })
        return log_probs, out_lengths
