"""Streaming recognition with an exported step graph on onnxruntime, without PyTorch.

    python model.py --model-path models/an4_stream.pth --export-onnx models/an4_stream.onnx --streaming
    python transcribe.py --stream --model-path models/an4_stream.onnx --audio-path a.wav --chunk-ms 100

:class:`OnnxStreamingRecognizer` has the interface of :class:`streaming.StreamingRecognizer`
(``accept``, ``finish``, ``reset``, ``n_frames``, ``log_probs()``, ``latency``) and gives its
results: the final log-probabilities equal the offline forward pass over the whole utterance
up to float rounding, whatever the chunking, and each output frame is final as soon as in
PyTorch. It runs the step graph that ``onnx_export.export_streaming_onnx`` writes (its inputs
and outputs are described there) and keeps everything between calls on the host: the STFT
framer, the normalised feature frames not yet given to the graph, the state tensors the graph
returns, and a few counters from which each call's ``conv_valid`` ranges are computed.

How the host drives the graph (``S`` = the product of the conv time strides, 2 for DS2):

* Feature frames go to the graph in multiples of ``S``, and only once the call yields at least
  one RNN frame (the first call needs ``S * (delay + 1)`` frames, 16 for DS2: exactly the
  frames the first output needs, so this adds no latency).
* A conv layer's cache starts as zeros, so its first stream outputs are virtual
  (:func:`conv_delays`: 2 for DS2's first layer, 7 for its second): the virtual outputs of
  a layer feeding another are zeroed, as the next layer's zero padding is; those of the last
  layer are not given to the RNNs.
* At :meth:`~OnnxStreamingRecognizer.finish` the remaining frames go with as many zero frames
  as the offline right padding needs, and each layer's outputs past its offline length are
  zeroed or dropped. The lookahead's first ``context - 1`` outputs are virtual and dropped; its
  last ``context - 1`` (the graph always computes them, with zeros for the future frames) are
  kept only at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from onnx_runtime import STREAMING_FIELD, OnnxModelError, model_info, open_session
from streaming_common import StreamingBase, StreamingError, check_streamable, conv_latency

STEP_INPUTS = ("features", "conv_valid")  # then the state inputs
STEP_OUTPUT = "log_probs"  # then the state outputs
STEP_VERSION = 1  # of the "streaming" metadata and the step graph's contract


def conv_delays(convs: Sequence[tuple[int, int, int]]) -> list[int]:
    """For each conv layer with time ``(kernel, stride, padding)``, run over ``cat(cache, new)``
    without time padding, its cache ``kernel - stride`` frames starting as zeros: how many of its
    first stream outputs come before offline output 0 (stream output ``j`` is offline output
    ``j - delay``). For DS2: [2, 7].

    Stream output ``j`` reads stream input ``[S j - c, S j - c + K)`` (``c`` = the cache), that is
    offline input ``[S j - c - d, ...)`` where ``d`` is the input's own delay; offline output
    ``i`` reads ``[S i - P, ...)``: so ``j = i + (c + d - P) / S``.
    """
    delays, d = [], 0
    for kernel, stride, padding in convs:
        shift = kernel - stride + d - padding
        if shift < 0 or shift % stride:
            raise ValueError(f"a conv layer of kernel {kernel}, stride {stride}, padding {padding} cannot stream exactly here")
        d = shift // stride
        delays.append(d)
    return delays


def offline_lengths(convs: Sequence[tuple[int, int, int]], n_frames: int) -> list[int]:
    """Each conv layer's offline output length for ``n_frames`` input frames."""
    out = []
    for kernel, stride, padding in convs:
        n_frames = (n_frames + 2 * padding - kernel) // stride + 1
        out.append(n_frames)
    return out


@dataclass(frozen=True)
class StateSpec:
    """One state tensor: graph input ``name``, graph output ``output``, fixed ``shape``; starts as zeros."""

    name: str
    output: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"input": self.name, "output": self.output, "shape": list(self.shape), "initial": "zeros"}


@dataclass(frozen=True)
class StepSpec:
    """What the host needs to know about a step graph: the ``streaming`` metadata field."""

    convs: tuple[tuple[int, int, int], ...]  # time (kernel, stride, padding) of each conv layer
    lookahead_context: int
    states: tuple[StateSpec, ...]

    @property
    def stride(self) -> int:
        """Input frames per output frame; every call takes a multiple of it."""
        out = 1
        for _, s, _ in self.convs:
            out *= s
        return out

    def to_dict(self) -> dict:
        return {
            "version": STEP_VERSION,
            "inputs": list(STEP_INPUTS),
            "output": STEP_OUTPUT,
            "feature_multiple": self.stride,
            "conv_time": [list(c) for c in self.convs],
            "lookahead_context": self.lookahead_context,
            "states": [s.to_dict() for s in self.states],
        }

    @classmethod
    def from_dict(cls, d: Any, path: str | Path) -> "StepSpec":
        def bad(why: str) -> OnnxModelError:
            return OnnxModelError(f"{path}: bad streaming metadata ({why}); export the model again with --streaming")

        if not isinstance(d, dict):
            raise bad("not an object")
        if d.get("version") != STEP_VERSION:
            raise OnnxModelError(
                f"{path}: streaming step graph version {d.get('version')!r}, this code runs version {STEP_VERSION}; "
                "export the model again with --streaming"
            )
        try:
            convs = tuple((int(k), int(s), int(p)) for k, s, p in d["conv_time"])
            context = int(d["lookahead_context"])
            states = tuple(StateSpec(str(s["input"]), str(s["output"]), tuple(int(n) for n in s["shape"])) for s in d["states"])
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"{type(e).__name__}: {e}") from None
        if not convs or context < 1:
            raise bad("conv_time or lookahead_context")
        if any(s.get("initial") != "zeros" for s in d["states"]):
            raise bad("a state that does not start as zeros")
        spec = cls(convs, context, states)
        try:
            conv_delays(convs)
        except ValueError as e:
            raise bad(str(e)) from None
        if d.get("feature_multiple") != spec.stride or tuple(d.get("inputs", ())) != STEP_INPUTS:
            raise bad("inputs or feature_multiple")
        return spec


class OnnxStreamingRecognizer(StreamingBase):
    """Incremental recognition with a streaming step graph (``model.py --export-onnx --streaming``).

    Args:
        path: the ``.onnx`` file; its metadata hold the labels, the audio config with the feature
            statistics, the model config and the step graph's states.
        decoder: decodes the final log-probs (default greedy), as for
            :class:`streaming.StreamingRecognizer`; partial texts are the greedy best path.
        threads: onnxruntime intra-op threads (None: its default).
        cuda: run on onnxruntime-gpu's CUDA provider.

    Use: ``accept(samples)`` any number of times (float32 mono at ``audio_config.sample_rate``),
    then ``finish()``; ``reset()`` starts the next utterance. Not thread-safe: one instance per
    stream.
    """

    def __init__(self, path: str | Path, decoder: Any = None, threads: int | None = None, cuda: bool = False) -> None:
        path = Path(path)
        self.session, self.metadata = open_session(path, threads, cuda)
        if STREAMING_FIELD not in self.metadata:
            raise OnnxModelError(
                f"{path}: an offline ONNX export, not a streaming step graph; for --stream export one with "
                "python model.py --model-path M.pth --export-onnx S.onnx --streaming"
            )
        self.spec = StepSpec.from_dict(self.metadata[STREAMING_FIELD], path)
        self.path = path
        self.audio_config = self.metadata["audio_config"]
        check_streamable(self.metadata["model_config"], self.audio_config)
        inputs = tuple(i.name for i in self.session.get_inputs())
        outputs = tuple(o.name for o in self.session.get_outputs())
        want_in = (*STEP_INPUTS, *(s.name for s in self.spec.states))
        want_out = (STEP_OUTPUT, *(s.output for s in self.spec.states))
        if inputs != want_in or outputs != want_out:
            raise OnnxModelError(
                f"{path}: graph inputs {inputs} / outputs {outputs}, its metadata say {want_in} / {want_out}; "
                "export the model again with --streaming"
            )
        labels = self.metadata["labels"]
        self._init_output(labels, decoder)
        self.frame_shift = float(self.metadata["frame_shift"])
        self.info = {**model_info(path, self.metadata), "streaming": True}
        self.latency = conv_latency(self.spec.convs, self.spec.lookahead_context, self.audio_config)
        self._delays = conv_delays(self.spec.convs)
        self._strides = []  # input frames per output frame of each conv layer
        stride = 1
        for _, s, _ in self.spec.convs:
            stride *= s
            self._strides.append(stride)
        self.reset()

    def reset(self) -> None:
        """Forget the current utterance."""
        self._reset_stream()
        self._state = {s.name: np.zeros(s.shape, dtype=np.float32) for s in self.spec.states}
        self._pending = np.zeros((self.audio_config.n_freq, 0), dtype=np.float32)  # features not yet sent
        self._real = 0  # feature frames of the utterance so far
        self._sent = 0  # feature frames given to the graph (the real ones, then the final zeros)
        self._rnn_frames = 0  # RNN frames computed so far

    def _run(self, frames: np.ndarray, final: bool) -> None:
        if len(frames):
            feats = self._features(frames)
            self._real += feats.shape[1]
            self._pending = np.concatenate([self._pending, feats], axis=1) if self._pending.shape[1] else feats
        step, pending = self.spec.stride, self._pending.shape[1]
        ends = offline_lengths(self.spec.convs, self._real) if final else None
        if final:
            n = step * (self._delays[-1] + ends[-1]) - self._sent
            x = np.zeros((self.audio_config.n_freq, n), dtype=np.float32)
            x[:, :pending] = self._pending
        else:
            n = pending - pending % step
            if not n or (self._sent + n) // step <= self._delays[-1]:
                return  # not one RNN frame yet
            x = self._pending[:, :n]
        valid = []
        for i, (delay, stride) in enumerate(zip(self._delays, self._strides)):
            first, stop = self._sent // stride, (self._sent + n) // stride  # this call's outputs of layer i
            lo = max(delay, first)
            hi = min(stop, delay + ends[i]) if ends is not None else stop
            valid.append((lo - first, max(lo, hi) - first))
        feed = {"features": np.ascontiguousarray(x)[None], "conv_valid": np.array(valid, dtype=np.int64), **self._state}
        log_probs, *states = self.session.run(None, feed)
        self._state = {s.name: v for s, v in zip(self.spec.states, states)}
        self._sent += n
        self._pending = self._pending[:, min(n, pending) :]
        n_rnn = valid[-1][1] - valid[-1][0]
        lp = log_probs[0] if final else log_probs[0, :n_rnn]
        skip = max(0, self.spec.lookahead_context - 1 - self._rnn_frames)  # the lookahead's virtual outputs
        self._rnn_frames += n_rnn
        self._append(np.ascontiguousarray(lp[skip:], dtype=np.float32))


__all__ = [
    "OnnxStreamingRecognizer",
    "StepSpec",
    "StateSpec",
    "StreamingError",
    "conv_delays",
    "offline_lengths",
]
