"""Export an acoustic model to ONNX, optionally quantized to int8 (the PyTorch side).

    python model.py --model-path models/an4.pth --export-onnx models/an4.onnx
    python model.py --model-path models/an4.pth --export-onnx models/an4_int8.onnx --int8
    python model.py --model-path models/an4.pth --export-onnx models/an4_int8s.onnx --int8 \\
        --calibration-manifest data/an4_train_manifest.csv
    python model.py --model-path models/an4_stream.pth --export-onnx models/an4_stream.onnx --streaming [--int8]

The graph (ONNX opset :data:`OPSET`, written by ``torch.onnx.export``'s TorchScript
exporter) is the model's own forward pass, with batch and time as dynamic axes:

* inputs ``features`` (B, F, T) float32 zero-padded spectrograms (``data.audio.spectrogram``,
  computed in numpy outside the graph) and ``lengths`` (B,) int64 valid frames;
* outputs ``log_probs`` (B, T', C) float32 and ``output_lengths`` (B,) int64.

Padding is masked inside the graph as in PyTorch, so an utterance gets the same
log-probs alone or in a batch of any lengths. Before export the BatchNorm after each
convolution is folded into it (:func:`fold_batch_norms`), which changes no function.

The file describes itself: ``metadata_props`` holds JSON under the keys of
:data:`onnx_runtime.METADATA_FIELDS` (labels, AudioConfig with any feature statistics,
ModelConfig, frame shift, precision, training info). :mod:`onnx_runtime` runs it
without PyTorch.

int8 (:func:`quantize_onnx`): ``onnxruntime.quantization.quantize_dynamic`` turns the
RNNs into ``DynamicQuantizeLSTM`` / quantized GRU-RNN matmuls and the matrix products into
int8 ones (weights int8 per tensor, activations quantized per batch). Convolutions stay
fp32 there, since onnxruntime's dynamic ``ConvInteger`` is slower than its fp32 conv.
With a calibration manifest the convolutions are quantized statically as well
(QDQ, per-channel int8 weights, uint8 activations with ranges measured on that audio),
which onnxruntime runs as ``QLinearConv``.

Streaming step graph (:func:`export_streaming_onnx`, ``--streaming``; a unidirectional DS2
whose features are normalised with global statistics or not at all). One call takes the
stream's new feature frames and its state, and returns the output frames that became
computable and the new state; the host (:class:`onnx_streaming.OnnxStreamingRecognizer`,
without PyTorch) keeps the state between calls. The result equals the offline forward pass:

* inputs: ``features`` (1, F, T) float32, the new normalised feature frames, T a positive
  multiple of the product of the conv time strides (2); ``conv_valid`` (2, 2) int64, for each
  conv layer the ``[start, end)`` of this call's outputs that are real (the first layer's
  other outputs are zeroed, as the second layer's zero padding is; only the second layer's
  range, never empty, goes to the RNNs); then the state: ``conv1_cache`` (1, 1, F, 9) and
  ``conv2_cache`` (1, C, F', 10), the last ``kernel - stride`` input frames of each conv layer
  (which run on ``cat(cache, new)`` without time padding); ``rnn_h`` (L, 1, H) and, for LSTMs,
  ``rnn_c`` (L, 1, H); ``lookahead_cache`` (1, H, context - 1), the last RNN frames (none
  for context 1).
* outputs: ``log_probs`` (1, n + context - 1, C) for the call's n RNN frames: the first n are
  the lookahead's next outputs, the last ``context - 1`` the ones the stream would end with if
  it ended here (the future frames zeros, as offline); then each state as ``<name>_out``.

Every state starts as zeros. The ``streaming`` metadata field lists the states (names, shapes,
initial values), the conv time geometry and the lookahead context; onnx_streaming.py says how
the host computes ``conv_valid`` and which outputs it keeps. ``--int8`` quantizes the step
graph dynamically like the offline one; its activations are quantized per call, so int8
log-probs depend slightly on the chunking. Static conv quantization is for offline graphs only.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import operator
import random
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.audio import AudioConfig, spectrogram
from model import CLIP, AcousticModel, DeepSpeech2, ModelConfig, conv_out_size
from onnx_runtime import FORMAT, FORMAT_VERSION, INPUT_NAMES, METADATA_FIELDS, OUTPUT_NAMES, STREAMING_FIELD
from onnx_streaming import STEP_INPUTS, STEP_OUTPUT, StateSpec, StepSpec, conv_delays
from streaming_common import StreamingError, check_streamable
from utils import atomic_write

OPSET = 17  # onnxruntime >= 1.14 implements all of it; the graph needs nothing newer
EXPORT_FRAMES = 64  # time length of the example input traced at export (any works: T is dynamic)
DEFAULT_CALIBRATION_UTTERANCES = 256  # AN4 val greedy WER, one thread: 15.08 with 256, 15.28 with 64 (fp32 15.28)


class OnnxExportError(ValueError):
    """An export or quantization that cannot be done; the message says why and the fix."""


class NotStreamableError(OnnxExportError):
    """A streaming step graph asked of a model that cannot stream; the message says why."""


# ---------------------------------------------------------------------------- BatchNorm folding


class _NoNorm(nn.Module):
    """Stands in for a BatchNorm folded into a neighbouring layer; takes the same arguments."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference-mode BatchNorm as ``x * scale + shift`` per channel (float64)."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        shift = shift + bn.bias.double()
    return scale, shift


def fold_batch_norms(model: AcousticModel) -> AcousticModel:
    """A copy of ``model`` (eval mode, CPU, fp32) with each DS2 conv BatchNorm folded into
    its convolution (scaled weights and a new bias).

    The function is unchanged up to float rounding. The sequence-wise BatchNorms before the
    RNN layers and the head stay: folded into the RNN input weights or the output layer,
    their per-input-column scales would widen the range that int8's per-tensor weight
    quantization must cover (AN4 val greedy WER 15.48 -> 17.86 with dynamic int8 measured),
    and onnxruntime runs them in well under 1% of the time. DS1 has no BatchNorm.
    """
    model = copy.deepcopy(model).float().cpu().eval()
    if not isinstance(model, DeepSpeech2):
        return model
    with torch.no_grad():
        for i, (conv, bn) in enumerate(zip(model.convs, model.conv_norms)):
            scale, shift = _bn_scale_shift(bn)
            bias = shift if conv.bias is None else conv.bias.double() * scale + shift
            conv.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias.float())
            model.conv_norms[i] = _NoNorm()
    return model


# ---------------------------------------------------------------------------- export


class _OnnxGraph(nn.Module):
    """The exported function: (B, F, T) features and (B,) lengths -> log-probs and output lengths."""

    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(features.unsqueeze(1), lengths)  # (B, F, T) -> (B, 1, F, T)


def metadata(
    model_cfg: ModelConfig,
    audio_cfg: AudioConfig,
    labels: Sequence[str],
    frame_shift: float,
    precision: str = "float32",
    info: dict | None = None,
    streaming: dict | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` of an exported file: every value JSON; ``streaming`` (a step
    graph's :meth:`onnx_streaming.StepSpec.to_dict`) only for a streaming step graph."""
    values: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "labels": list(labels),
        "audio_config": audio_cfg.to_dict(),
        "model_config": asdict(model_cfg),
        "frame_shift": frame_shift,
        "precision": precision,
        "opset": OPSET,
        "info": info or {},
    }
    assert tuple(values) == METADATA_FIELDS, "metadata fields out of step with onnx_runtime"
    if streaming is not None:
        values[STREAMING_FIELD] = streaming
    return {name: json.dumps(value) for name, value in values.items()}


def set_metadata(onnx_model: Any, props: dict[str, str]) -> None:
    """Replace the deepspeech-ctc entries of an ``onnx.ModelProto``'s metadata_props."""
    kept = [p for p in onnx_model.metadata_props if p.key not in props]
    del onnx_model.metadata_props[:]
    onnx_model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata_props(onnx_model: Any) -> dict[str, str]:
    return {p.key: p.value for p in onnx_model.metadata_props}


def _save(onnx_model: Any, path: Path) -> Path:
    import onnx

    with atomic_write(path, "wb") as f:
        f.write(onnx_model.SerializeToString())
    onnx.checker.check_model(str(path))
    return path


def _trace(graph: nn.Module, example: tuple, input_names: list[str], output_names: list[str], dynamic_axes: dict) -> Any:
    """``graph`` traced on ``example`` by the TorchScript exporter at :data:`OPSET`, as an onnx ModelProto."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="onnx_export_") as tmp, warnings.catch_warnings():
        # The input checks of AcousticModel.forward run once on the example while tracing and
        # are not part of the graph; the warnings about them, and about the legacy exporter, say nothing new.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(
            graph,
            example,
            str(raw),
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
        return onnx.load(str(raw))


def export_onnx(
    model: AcousticModel, audio_cfg: AudioConfig, labels: Sequence[str], path: str | Path, info: dict | None = None
) -> Path:
    """Write ``model`` as a self-describing fp32 ONNX file (see the module docstring)."""

    path = Path(path)
    if len(labels) != model.cfg.n_classes:
        raise OnnxExportError(f"{len(labels)} labels for a model with {model.cfg.n_classes} classes")
    graph = _OnnxGraph(fold_batch_norms(model)).eval()
    example = (
        torch.zeros(2, model.cfg.n_features, EXPORT_FRAMES),
        torch.tensor([EXPORT_FRAMES, EXPORT_FRAMES - 7], dtype=torch.long),
    )
    onnx_model = _trace(
        graph,
        example,
        list(INPUT_NAMES),
        list(OUTPUT_NAMES),
        {
            "features": {0: "batch", 2: "time"},
            "lengths": {0: "batch"},
            "log_probs": {0: "batch", 1: "out_time"},
            "output_lengths": {0: "batch"},
        },
    )
    onnx_model.producer_name = "deepspeech-ctc"
    onnx_model.doc_string = f"deepspeech-ctc acoustic model ({model.cfg.arch}); metadata_props hold labels and configs"
    frame_shift = model.frame_shift(audio_cfg.hop_length / audio_cfg.sample_rate)
    set_metadata(onnx_model, metadata(model.cfg, audio_cfg, labels, frame_shift, "float32", info))
    return _save(onnx_model, path)


# ---------------------------------------------------------------------------- streaming step graph


class _StreamStep(nn.Module):
    """The exported streaming step (see the module docstring): new feature frames, the valid
    ranges of each conv layer's outputs and the state tensors -> log-probs and the new states."""

    def __init__(self, model: DeepSpeech2) -> None:
        super().__init__()
        self.model = model  # BatchNorms of the convs folded, eval mode
        self.lstm = model.cfg.rnn_type == "lstm"
        self.context = model.lookahead.context if model.lookahead is not None else 1

    def forward(self, features: torch.Tensor, conv_valid: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        n_convs = len(m.convs)
        new_states: list[torch.Tensor] = []
        x = features.unsqueeze(1)  # (1, F, T) -> (1, 1, F, T)
        for i, conv in enumerate(m.convs):
            buf = torch.cat([states[i], x], dim=3)
            new_states.append(buf[:, :, :, -(conv.kernel_size[1] - conv.stride[1]) :])
            y = F.conv2d(buf, conv.weight, conv.bias, stride=conv.stride, padding=(conv.padding[0], 0))
            y = F.hardtanh(y, 0.0, CLIP)
            start, end = conv_valid[i, 0], conv_valid[i, 1]
            if i < n_convs - 1:  # outside the valid range: the next layer's zero padding
                t = torch.arange(y.size(3), device=y.device)
                y = y * ((t >= start) & (t < end)).to(y.dtype)
            else:  # only the valid outputs go to the RNNs
                y = y.index_select(3, torch.arange(start, end, device=y.device))
            x = y
        b, c, f, t = x.shape
        x = x.reshape(b, c * f, t).permute(2, 0, 1)  # (T, 1, C*F)
        h = states[n_convs]
        cell = states[n_convs + 1] if self.lstm else None
        hs, cs = [], []
        for i, rnn in enumerate(m.rnns):
            if rnn.batch_norm is not None:
                x = rnn.batch_norm(x)
            if self.lstm:
                x, (h_i, c_i) = rnn.rnn(x, (h[i : i + 1], cell[i : i + 1]))
                cs.append(c_i)
            else:
                x, h_i = rnn.rnn(x, h[i : i + 1])
            hs.append(h_i)
        new_states.append(torch.cat(hs, dim=0))
        if self.lstm:
            new_states.append(torch.cat(cs, dim=0))
        x = x.permute(1, 2, 0)  # (1, H, T)
        if self.context > 1:  # the cached RNN frames, the new ones, and zeros as the future of the last
            buf = torch.cat([states[-1], x], dim=2)
            new_states.append(buf[:, :, -(self.context - 1) :])
            x = torch.cat([buf, buf.new_zeros(1, buf.size(1), self.context - 1)], dim=2)
        x = F.conv1d(x, m.lookahead.conv.weight, groups=x.size(1))  # (1, H, T + context - 1)
        x = F.hardtanh(x.permute(2, 0, 1), 0.0, CLIP)  # (T', 1, H)
        logits = m.head(m.head_norm(x))
        return (logits.float().log_softmax(-1).transpose(0, 1), *new_states)  # (1, T', C)


def streaming_spec(model: DeepSpeech2) -> StepSpec:
    """The state tensors and geometry of ``model``'s step graph (the ``streaming`` metadata)."""
    cfg = model.cfg
    convs = tuple((c.kernel_size[1], c.stride[1], c.padding[1]) for c in model.convs)
    states, in_channels, n_freq = [], 1, cfg.n_features
    for i, conv in enumerate(model.convs):
        kernel, stride, _ = convs[i]
        states.append(StateSpec(f"conv{i + 1}_cache", f"conv{i + 1}_cache_out", (1, in_channels, n_freq, kernel - stride)))
        in_channels = conv.out_channels
        n_freq = conv_out_size(n_freq, conv.kernel_size[0], conv.stride[0], conv.padding[0])
    rnn_shape = (cfg.hidden_layers, 1, cfg.hidden_size)
    states.append(StateSpec("rnn_h", "rnn_h_out", rnn_shape))
    if cfg.rnn_type == "lstm":
        states.append(StateSpec("rnn_c", "rnn_c_out", rnn_shape))
    if cfg.lookahead_context > 1:
        states.append(StateSpec("lookahead_cache", "lookahead_cache_out", (1, cfg.hidden_size, cfg.lookahead_context - 1)))
    return StepSpec(convs, cfg.lookahead_context, tuple(states))


def export_streaming_onnx(
    model: AcousticModel, audio_cfg: AudioConfig, labels: Sequence[str], path: str | Path, info: dict | None = None
) -> Path:
    """Write ``model``'s streaming step graph as a self-describing fp32 ONNX file (see the module
    docstring); :class:`onnx_streaming.OnnxStreamingRecognizer` runs it."""

    path = Path(path)
    try:
        check_streamable(model.cfg, audio_cfg)
    except StreamingError as e:
        raise NotStreamableError(str(e)) from None
    if len(labels) != model.cfg.n_classes:
        raise OnnxExportError(f"{len(labels)} labels for a model with {model.cfg.n_classes} classes")
    folded = fold_batch_norms(model)
    spec = streaming_spec(folded)
    try:
        delays = conv_delays(spec.convs)
    except ValueError as e:
        raise OnnxExportError(str(e)) from None
    n = spec.stride * (delays[-1] + 3)  # an example call of the stream's first step: three RNN frames
    valid = [[d, n // s] for d, s in zip(delays, itertools.accumulate((c[1] for c in spec.convs), operator.mul))]
    example = (
        torch.zeros(1, model.cfg.n_features, n),
        torch.tensor(valid, dtype=torch.long),
        *(torch.zeros(s.shape) for s in spec.states),
    )
    graph = _StreamStep(folded).eval()
    onnx_model = _trace(
        graph,
        example,
        [*STEP_INPUTS, *(s.name for s in spec.states)],
        [STEP_OUTPUT, *(s.output for s in spec.states)],
        {"features": {2: "time"}, STEP_OUTPUT: {1: "out_time"}},
    )
    shapes = {s.output: s.shape for s in spec.states}
    for out in onnx_model.graph.output:  # the exporter leaves the state outputs' sizes symbolic
        if out.name in shapes:
            for dim, size in zip(out.type.tensor_type.shape.dim, shapes[out.name]):
                dim.Clear()
                dim.dim_value = size
    onnx_model.producer_name = "deepspeech-ctc"
    onnx_model.doc_string = "deepspeech-ctc streaming step graph (ds2); metadata_props hold labels, configs and the states"
    frame_shift = model.frame_shift(audio_cfg.hop_length / audio_cfg.sample_rate)
    set_metadata(onnx_model, metadata(model.cfg, audio_cfg, labels, frame_shift, "float32", info, spec.to_dict()))
    return _save(onnx_model, path)


# ---------------------------------------------------------------------------- int8


def calibration_features(
    manifest: str | Path, audio_cfg: AudioConfig, n: int = DEFAULT_CALIBRATION_UTTERANCES, seed: int = 0
) -> list[np.ndarray]:
    """Spectrograms of ``n`` utterances drawn at random (seeded) from a manifest."""
    from data.audio import load_audio
    from data.manifest import read_manifest

    rows = read_manifest(manifest)
    if not rows:
        raise OnnxExportError(f"{manifest}: calibration manifest holds no utterances")
    chosen = random.Random(seed).sample(rows, min(n, len(rows)))
    return [spectrogram(load_audio(u.wav, audio_cfg.sample_rate), audio_cfg) for u in chosen]


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader over single-utterance feeds."""

    def __init__(self, features: Sequence[np.ndarray]) -> None:
        self._feeds: Iterator[dict] = iter(
            {"features": f[None].astype(np.float32), "lengths": np.array([f.shape[1]], dtype=np.int64)} for f in features
        )

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs advice (pre-processing, QAT) on the root logger: errors only meanwhile."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, calibration: Sequence[np.ndarray] | None = None) -> Path:
    """Write an int8 copy of an exported fp32 file (metadata kept, ``precision`` updated).

    Without ``calibration``: dynamic quantization of the RNNs and matrix products (offline and
    streaming step graphs). With it (spectrograms, e.g. from :func:`calibration_features`; offline
    graphs only): the convolutions are also quantized statically, their activation ranges
    measured on those features.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    props = read_metadata_props(onnx.load(str(fp32_path), load_external_data=False))
    if json.loads(props.get("precision", "null")) != "float32":
        raise OnnxExportError(f"{fp32_path}: quantize an fp32 file exported by deepspeech-ctc")
    if calibration is not None and STREAMING_FIELD in props:
        raise OnnxExportError(f"{fp32_path}: a streaming step graph takes dynamic int8 only (no calibration)")
    with tempfile.TemporaryDirectory(prefix="onnx_int8_") as tmp, _quiet_root_logger():
        source = fp32_path
        if calibration is not None:
            if not len(calibration):
                raise OnnxExportError("static int8 needs at least one calibration utterance")
            reader = type("Reader", (_CalibrationReader, CalibrationDataReader), {})(calibration)
            source = Path(tmp) / "static.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(
                    str(fp32_path),
                    str(source),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"],
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"CalibTensorRangeSymmetric": False},
                )
        dynamic = Path(tmp) / "int8.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(source),
                str(dynamic),
                op_types_to_quantize=["LSTM", "GRU", "RNN", "MatMul", "Gemm"],
                weight_type=QuantType.QInt8,
            )
        onnx_model = onnx.load(str(dynamic))
    precision = "int8-static-conv" if calibration is not None else "int8-dynamic"
    props["precision"] = json.dumps(precision)
    set_metadata(onnx_model, props)
    return _save(onnx_model, out_path)


# ---------------------------------------------------------------------------- from a checkpoint


def export_checkpoint(
    model_path: str | Path,
    out_path: str | Path,
    int8: bool = False,
    calibration_manifest: str | Path | None = None,
    calibration_utterances: int = DEFAULT_CALIBRATION_UTTERANCES,
    streaming: bool = False,
) -> Path:
    """``python model.py --export-onnx``: a checkpoint to an fp32 (or int8) ONNX file, the offline
    graph or (``streaming``) the streaming step graph."""
    from checkpoint import load_model

    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise OnnxExportError(f"{out_path}: give the ONNX file a .onnx suffix (transcribe.py and test.py pick the runtime by it)")
    if calibration_manifest is not None and not int8:
        raise OnnxExportError("--calibration-manifest applies to --int8")
    if calibration_manifest is not None and streaming:
        raise OnnxExportError("--calibration-manifest does not apply to --streaming: the step graph's int8 is dynamic only")
    model, ckpt = load_model(model_path)
    info = {"source": Path(model_path).name, "epochs": ckpt.training.epoch if ckpt.training else None}
    export = export_streaming_onnx if streaming else export_onnx
    if not int8:
        return export(model, ckpt.audio_config, ckpt.labels, out_path, info)
    calibration = None
    if calibration_manifest is not None:
        calibration = calibration_features(calibration_manifest, ckpt.audio_config, calibration_utterances)
    with tempfile.TemporaryDirectory(prefix="onnx_export_") as tmp:
        fp32 = export(model, ckpt.audio_config, ckpt.labels, Path(tmp) / "fp32.onnx", info)
        return quantize_onnx(fp32, out_path, calibration)
