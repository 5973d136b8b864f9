"""The torch-free parts of streaming recognition, shared by streaming.py (PyTorch) and
onnx_streaming.py (onnxruntime).

* :func:`check_streamable`: which models can stream (unidirectional DS2, features normalised
  with global statistics or not at all, no level normalisation, zero-padded STFT).
* :func:`conv_latency`: the algorithmic latency of a conv front end, RNNs and lookahead.
* :class:`_Framer`: the STFT frames of a sample stream, centred as offline.
* :class:`StreamingBase`: ``accept``/``finish``/``reset`` around a model-specific stage that
  turns new STFT frames into new output frames, with the greedy partial text, the final
  decoding and the word times.

Only numpy and the feature code of :mod:`data.audio` are needed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from data.audio import AudioConfig, normalize_features, rescale_pcm, stft_magnitude
from decoder import GreedyDecoder, _make_hypothesis, _space_index


class StreamingError(ValueError):
    """A model or input that cannot be streamed; the message says why and what to do."""


def check_streamable(model_cfg: Any, audio_config: AudioConfig) -> None:
    """Raise :class:`StreamingError` unless a model with this ModelConfig (an object or its
    dict) and AudioConfig can stream."""
    get = model_cfg.get if isinstance(model_cfg, dict) else lambda name: getattr(model_cfg, name)
    if get("arch") != "ds2":
        raise StreamingError(f"streaming needs a DeepSpeech 2 model (arch 'ds2'); this one is {get('arch')!r}")
    if get("bidirectional"):
        raise StreamingError(
            "this model is bidirectional: its backward RNNs read the utterance from the end, so it cannot "
            "stream. Train a streamable model with train.py --no-bidirectional --normalize global"
        )
    if audio_config.normalize == "utterance":
        raise StreamingError(
            "this model normalises features per utterance (normalize='utterance'), which needs the whole "
            "utterance before the first frame; train with --normalize global to stream"
        )
    if audio_config.level_db is not None:
        raise StreamingError(
            "this model scales every utterance to a speech level (level_db, from --level-norm) measured over the "
            "whole utterance, which a stream does not have; stream with a model trained without --level-norm"
        )
    if audio_config.remove_dc:
        raise StreamingError(
            "this model subtracts each utterance's mean (remove_dc, from --remove-dc), which needs the whole "
            "utterance; stream with a model trained without --remove-dc"
        )
    if audio_config.pad_mode != "constant":
        raise StreamingError(
            f"this model's features pad the signal's ends by {audio_config.pad_mode!r} (an imported model): "
            "the streaming engine pads with zeros as the offline path does for our own models"
        )


@dataclass(frozen=True)
class Latency:
    """Algorithmic latency: audio that must follow a moment before its output frame is final.

    ``stft_s``: the right half of the analysis window; ``conv_s``: the right context of the
    convolutions; ``lookahead_s``: the lookahead convolution's ``context - 1`` output frames.
    The chunk size and the compute time come on top.
    """

    stft_s: float
    conv_s: float
    lookahead_s: float

    @property
    def total_s(self) -> float:
        return self.stft_s + self.conv_s + self.lookahead_s

    def as_ms(self) -> dict[str, float]:
        return {
            "stft_ms": round(1000 * self.stft_s, 3),
            "conv_ms": round(1000 * self.conv_s, 3),
            "lookahead_ms": round(1000 * self.lookahead_s, 3),
            "total_ms": round(1000 * self.total_s, 3),
        }


def conv_latency(convs: Sequence[tuple[int, int, int]], context: int, audio_config: AudioConfig) -> Latency:
    """The :class:`Latency` of a model whose convolutions have these time ``(kernel, stride,
    padding)``, followed by unidirectional RNNs and a lookahead of ``context`` frames.

    Output frame ``j`` is centred on input frame ``j * stride``. It needs RNN frames up to
    ``j + context - 1``; a conv layer's output ``m`` needs its input up to
    ``m * stride + kernel - 1 - padding``; input frame ``t`` needs samples up to
    ``t * hop + n_fft - n_fft // 2``.
    """
    hop_s = audio_config.hop_length / audio_config.sample_rate
    stft_s = (audio_config.n_fft - audio_config.n_fft // 2) / audio_config.sample_rate
    stride = 1
    for _, s, _ in convs:
        stride *= s
    extra = context - 1  # frames of right context, at the rate of the current layer's output
    for kernel, s, padding in reversed(convs):
        extra = extra * s + kernel - 1 - padding
    lookahead_frames = (context - 1) * stride
    return Latency(stft_s, (extra - lookahead_frames) * hop_s, lookahead_frames * hop_s)


class _Framer:
    """STFT frames of a sample stream, centred as :func:`data.audio.frame_signal` centres them."""

    def __init__(self, cfg: AudioConfig) -> None:
        self.n_fft, self.hop = cfg.n_fft, cfg.hop_length
        self.pad = cfg.n_fft // 2
        self.buf = np.zeros(self.pad, dtype=np.float32)  # the left zero padding
        self.offset = 0  # padded index of buf[0]
        self.next_frame = 0

    def push(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        """Append samples; return the (n, n_fft) frames that became complete."""
        parts = [self.buf, samples]
        if final:
            parts.append(np.zeros(self.pad, dtype=np.float32))
        self.buf = np.concatenate(parts)
        end = self.offset + len(self.buf)
        n_avail = (end - self.n_fft) // self.hop + 1 if end >= self.n_fft else 0
        n = max(0, n_avail - self.next_frame)
        start = self.next_frame * self.hop - self.offset
        frames = (
            np.lib.stride_tricks.as_strided(
                self.buf[start:], (n, self.n_fft), (self.buf.strides[0] * self.hop, self.buf.strides[0]), writeable=False
            )
            if n
            else np.zeros((0, self.n_fft), dtype=np.float32)
        )
        frames = frames.copy()
        keep_from = min(n_avail * self.hop - self.offset, len(self.buf)) if n else 0
        self.buf = self.buf[keep_from:]
        self.offset += keep_from
        self.next_frame = max(self.next_frame, n_avail)
        return frames


def as_samples(samples: Any) -> np.ndarray:
    """A 1-D float32 array of finite samples, or :class:`StreamingError`."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise StreamingError(f"expected mono samples of shape (n,), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise StreamingError(f"expected float samples, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise StreamingError("audio holds NaN or infinite samples")
    return x


class StreamingBase:
    """Incremental recognition of one utterance at a time, whatever runs the model.

    A subclass sets ``audio_config``, ``labels``, ``decoder``, ``frame_shift`` and ``latency``,
    calls :meth:`_reset_stream` from its ``reset``, and implements :meth:`_run`, which takes
    the new STFT frames and hands the log-probabilities of the output frames that became final
    to :meth:`_append`.

    Use: ``accept(samples)`` any number of times (float32 mono at ``audio_config.sample_rate``),
    then ``finish()``; ``reset()`` starts the next utterance. Not thread-safe: one instance per
    stream.
    """

    audio_config: AudioConfig
    labels: list[str]
    decoder: Any
    frame_shift: float
    latency: Latency

    def _init_output(self, labels: Sequence[str], decoder: Any) -> None:
        self.labels = list(labels)
        self.decoder = decoder if decoder is not None else GreedyDecoder(self.labels)
        self._blank = 0
        self._space = _space_index(self.labels)

    def reset(self) -> None:
        """Forget the current utterance."""
        raise NotImplementedError

    def _reset_stream(self) -> None:
        """The state every stream starts with: the framer and the outputs so far."""
        self._framer = _Framer(self.audio_config)
        self._log_probs: list[np.ndarray] = []
        self._n_frames = 0
        self._tokens: list[int] = []
        self._token_frames: list[int] = []
        self._prev_id = -1
        self.samples_received = 0
        self.finished = False

    def _run(self, frames: np.ndarray, final: bool) -> None:
        """Push new STFT frames (n, n_fft) through the model; ``final``: the utterance ends here."""
        raise NotImplementedError

    def _features(self, frames: np.ndarray) -> np.ndarray:
        """(n, n_fft) STFT frames -> (F, n) normalised features, as :func:`data.audio.spectrogram` computes them."""
        return normalize_features(stft_magnitude(frames, self.audio_config), self.audio_config)

    @property
    def n_frames(self) -> int:
        """Output frames final so far."""
        return self._n_frames

    def log_probs(self) -> np.ndarray:
        """(frames so far, n_classes) float32 log-probabilities."""
        if not self._log_probs:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if len(self._log_probs) > 1:
            self._log_probs = [np.concatenate(self._log_probs)]
        return self._log_probs[0]

    def accept(self, samples: Any) -> str:
        """Feed audio (mono float32 at the model's rate, any length, even empty); returns the partial text."""
        self._run(self._frames(self._checked(samples)), final=False)
        return self.partial_text()

    def _checked(self, samples: Any) -> np.ndarray:
        """``samples`` as the features expect them, or :class:`StreamingError` (nothing is fed yet)."""
        if self.finished:
            raise StreamingError("finish() was called: call reset() before feeding the next utterance")
        return rescale_pcm(as_samples(samples), self.audio_config)

    def _frames(self, x: np.ndarray) -> np.ndarray:
        """Count checked samples in and return the STFT frames they complete."""
        self.samples_received += len(x)
        return self._framer.push(x)

    def finish(self) -> dict:
        """Process the end of the utterance (right padding as offline) and decode it.

        Returns ``{"text", "words": [{"word", "start", "end"}], "duration"}`` (times in seconds,
        rounded as :func:`inference.transcribe_audio` rounds them) and ``"alternatives"`` when the
        decoder returns more than one path.
        """
        if self.finished:
            raise StreamingError("finish() was already called: call reset() to start a new utterance")
        self._run(self._framer.push(np.zeros(0, dtype=np.float32), final=True), final=True)
        self.finished = True
        paths = self.decoder.decode(self.log_probs()[None])[0]
        best = paths[0]
        duration = self.samples_received / self.audio_config.sample_rate
        words = [
            {"word": w["word"], "start": round(w["start"], 3), "end": round(w["end"], 3)}
            for w in best.words(self.frame_shift, duration)
        ]
        result = {"text": best.text, "words": words, "duration": round(duration, 3)}
        if len(paths) > 1:
            result["alternatives"] = [h.text for h in paths[1:]]
        return result

    def partial_text(self) -> str:
        """Greedy best path of the output frames final so far."""
        return _make_hypothesis(self.labels, self._space, self._tokens, self._token_frames, 0.0).text

    def _append(self, lp: np.ndarray) -> None:
        """Output frames that became final: (n, n_classes) log-probabilities."""
        if not len(lp):
            return
        self._log_probs.append(lp)
        ids = lp.argmax(axis=1).tolist()
        for t, i in enumerate(ids, start=self._n_frames):
            if i != self._blank and i != self._prev_id:
                self._tokens.append(i)
                self._token_frames.append(t)
            self._prev_id = i
        self._n_frames += len(ids)


__all__ = [
    "StreamingError",
    "StreamingBase",
    "Latency",
    "as_samples",
    "check_streamable",
    "conv_latency",
]
