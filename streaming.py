"""Streaming recognition with a unidirectional DeepSpeech 2 model.

:class:`StreamingRecognizer` takes audio in chunks of any size and returns the text so far;
:meth:`~StreamingRecognizer.finish` returns the final text and word times. The final
log-probabilities equal the offline forward pass over the whole utterance
(``model(spectrogram(audio))``) up to float rounding, whatever the chunking, because every
stage keeps exactly the state the offline computation would use:

* **STFT** (``center=True``): the signal is zero-padded by ``n_fft // 2`` on the left before
  the first sample; a frame is computed once its ``n_fft`` samples have arrived, and the
  last frames, which reach into the right zero padding, only at :meth:`finish`.
* **Features**: ``normalize="global"`` (per-frequency statistics stored in the model) or
  ``"none"``; per-utterance normalisation needs the whole utterance and is refused.
* **Convolutions** (time kernel 11, stride 2 then 1, padding 5): each layer keeps the left
  context of its input and emits an output only when its right context has arrived; at
  :meth:`finish` the right side is zero-padded as the offline forward pads it. BatchNorm
  in eval mode is a per-channel affine map, so it runs frame by frame.
* **RNNs**: the model's own unidirectional RNN modules run on each new run of frames with
  their hidden state (``h`` or ``(h, c)``) carried over. A single utterance has no padding,
  so the offline masks change nothing.
* **Lookahead**: the row convolution waits for ``context - 1`` future frames; at
  :meth:`finish` the missing ones are zeros, as offline.

:func:`accept_many` feeds one chunk to each of many recognizers that share a model and runs
their RNN layers as one packed batch (what the server does with its concurrent streams): the
fixed cost of a recurrent layer call is then paid once per batch instead of once per stream.

:func:`algorithmic_latency` says how much audio after a moment must arrive before the output
frame for that moment is final. :class:`StreamResampler` resamples a stream in chunks with
exactly the result of :func:`data.audio.resample` on the whole signal.

The torch-free parts (the STFT framer, the refusals, the latency, the partial text and the final
decoding) live in streaming_common.py, which the ONNX streaming runner (onnx_streaming.py) shares.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from data.audio import AudioConfig
from model import CLIP, DeepSpeech2, ds2_convs
from streaming_common import (
    Latency,
    StreamingBase,
    StreamingError,
    as_samples,
    check_streamable,
    conv_latency,
)


def algorithmic_latency(model_cfg: Any, audio_config: AudioConfig) -> Latency:
    """The :class:`Latency` of a unidirectional DS2 model with these configs.

    Output frame ``j`` is centred on input frame ``j * stride``. It needs RNN frames up to
    ``j + context - 1``; a conv layer's output ``m`` needs its input up to
    ``m * stride + kernel - 1 - padding``; input frame ``t`` needs samples up to
    ``t * hop + n_fft - n_fft // 2``. For the defaults (kernel 11, stride 2 then 1, padding
    5, 10 ms hop, 20 ms window): 10 ms + 150 ms + (context - 1) x 20 ms.
    """
    context = 1 if model_cfg.bidirectional else model_cfg.lookahead_context
    return conv_latency([(s.kernel[1], s.stride[1], s.padding[1]) for s in ds2_convs(model_cfg)], context, audio_config)


# ---------------------------------------------------------------------------- building blocks


class _SlidingWindow:
    """A strided window over the last axis of a growing tensor, as a padded convolution sees it.

    Output ``j`` reads padded input ``[j * stride, j * stride + kernel)``, where the padded
    input is ``pad_left`` zeros, the input, and (at :meth:`push` with ``final=True``)
    ``pad_right`` zeros. ``fn`` maps a window of ``n`` frames to its ``(n - kernel) // stride + 1``
    outputs. Only the input that later outputs still need is kept.
    """

    def __init__(
        self, kernel: int, stride: int, pad_left: int, pad_right: int, fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        self.kernel, self.stride, self.pad_left, self.pad_right, self.fn = kernel, stride, pad_left, pad_right, fn
        self.buf: torch.Tensor | None = None
        self.offset = 0  # padded index of buf[..., 0]
        self.next_out = 0

    def push(self, x: torch.Tensor | None, final: bool = False) -> torch.Tensor | None:
        """Append ``x`` (..., n; None for nothing new) and return the outputs that became
        computable, or None."""
        if x is None:
            if self.buf is None:
                return None
            x = self.buf[..., :0]
        if self.buf is None:
            self.buf = x.new_zeros(*x.shape[:-1], self.pad_left)
        parts = [self.buf, x]
        if final:
            parts.append(x.new_zeros(*x.shape[:-1], self.pad_right))
        self.buf = torch.cat(parts, dim=-1) if x.size(-1) or final else self.buf
        end = self.offset + self.buf.size(-1)
        n_avail = (end - self.kernel) // self.stride + 1 if end >= self.kernel else 0
        if n_avail <= self.next_out:
            return None
        lo = self.next_out * self.stride - self.offset
        hi = (n_avail - 1) * self.stride + self.kernel - self.offset
        out = self.fn(self.buf[..., lo:hi])
        keep_from = min(n_avail * self.stride - self.offset, self.buf.size(-1))
        self.buf = self.buf[..., keep_from:]
        self.offset += keep_from
        self.next_out = n_avail
        return out


# ---------------------------------------------------------------------------- the recognizer


class StreamingRecognizer(StreamingBase):
    """Incremental recognition of one utterance at a time with a unidirectional DS2 model.

    Args:
        model: a :class:`model.DeepSpeech2` with ``bidirectional=False`` (put in eval mode).
        audio_config: its features; ``normalize`` must be ``"global"`` or ``"none"``.
        labels: its output labels, blank first.
        decoder: decodes the final log-probs (default greedy); anything with
            ``decode(log_probs[None]) -> [[Hypothesis, ...]]``. Partial texts are always the
            greedy best path of the frames so far (cheap and incremental); with the greedy
            decoder the final text extends the last partial.

    Use: ``accept(samples)`` any number of times (float32 mono at ``audio_config.sample_rate``),
    then ``finish()``; ``reset()`` starts the next utterance. Not thread-safe: one instance per
    stream (instances may share the model).
    """

    def __init__(self, model: DeepSpeech2, audio_config: AudioConfig, labels: Sequence[str], decoder: Any = None) -> None:
        if not isinstance(model, DeepSpeech2):
            raise StreamingError(f"streaming needs a DeepSpeech 2 model, got {type(model).__name__}")
        check_streamable(model.cfg, audio_config)
        if audio_config.n_freq != model.cfg.n_features:
            raise StreamingError(
                f"the audio config gives {audio_config.n_freq} features, the model expects {model.cfg.n_features}"
            )
        if len(labels) != model.cfg.n_classes:
            raise StreamingError(f"{len(labels)} labels for a model with {model.cfg.n_classes} classes")
        self.model = model.eval()
        self.audio_config = audio_config
        self._init_output(labels, decoder)
        self.frame_shift = model.frame_shift(audio_config.hop_length / audio_config.sample_rate)
        self.latency = algorithmic_latency(model.cfg, audio_config)
        param = next(model.parameters())
        self._device, self._dtype = param.device, param.dtype
        self.reset()

    # -- state

    def reset(self) -> None:
        """Forget the current utterance."""
        m = self.model
        self._reset_stream()
        self._convs = []
        for conv, norm in zip(m.convs, m.conv_norms):
            fn = self._conv_fn(conv, norm)
            k, s, p = conv.kernel_size[1], conv.stride[1], conv.padding[1]
            self._convs.append(_SlidingWindow(k, s, p, p, fn))
        self._states: list[Any] = [None] * len(m.rnns)
        self._lookahead = None
        if m.lookahead is not None:
            context = m.lookahead.context
            self._lookahead = _SlidingWindow(context, 1, 0, context - 1, m.lookahead.conv)

    @staticmethod
    def _conv_fn(conv: torch.nn.Conv2d, norm: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(x: torch.Tensor) -> torch.Tensor:
            y = F.conv2d(x, conv.weight, conv.bias, stride=conv.stride, padding=(conv.padding[0], 0))
            return F.hardtanh(norm(y), 0.0, CLIP)

        return fn

    # -- the model, stage by stage

    def _run(self, frames: np.ndarray, final: bool) -> None:
        """Push new STFT frames through every stage; ``final`` right-pads each stage in turn."""
        with torch.inference_mode():
            go, x = self._front(frames, final)
            if go:
                self._back(self._rnn(x) if x is not None else None, final)

    def _front(self, frames: np.ndarray, final: bool) -> tuple[bool, torch.Tensor | None]:
        """Features and convolutions. Returns (whether the later stages have anything to do,
        the RNN input (T, 1, C*F) or None)."""
        x: torch.Tensor | None = None
        if len(frames):
            feats = self._features(frames)
            x = torch.from_numpy(np.ascontiguousarray(feats)).to(self._device, self._dtype)[None, None]
        elif not final:
            return False, None
        for stage in self._convs:  # (1, C, F, n) -> (1, C', F', n')
            x = stage.push(x, final)
            if x is None and not final:
                return False, None
        if x is None or not x.size(-1):
            return True, None
        b, c, f, t = x.shape
        return True, x.reshape(b, c * f, t).permute(2, 0, 1)  # (T, 1, C*F)

    def _rnn(self, x: torch.Tensor) -> torch.Tensor:
        """(T, 1, D) -> (T, 1, H), carrying each layer's hidden state."""
        for i, rnn in enumerate(self.model.rnns):
            if rnn.batch_norm is not None:
                x = rnn.batch_norm(x)
            x, self._states[i] = rnn.rnn(x, self._states[i])
        return x

    def _back(self, x: torch.Tensor | None, final: bool) -> None:
        """Lookahead, head and the greedy partial for the RNN output (T, 1, H) (None: nothing new)."""
        m = self.model
        if self._lookahead is not None:
            y = self._lookahead.push(x.permute(1, 2, 0) if x is not None else None, final)  # (1, H, T)
            x = F.hardtanh(y.permute(2, 0, 1), 0.0, CLIP) if y is not None else None  # (T, 1, H)
        if x is None or not x.size(0):
            return
        logits = m.head(m.head_norm(x))  # (T, 1, C)
        self._append(logits.float().log_softmax(-1)[:, 0].cpu().numpy())


def accept_many(recognizers: Sequence[StreamingRecognizer], chunks: Sequence[Any]) -> list[str]:
    """Feed ``chunks[i]`` to ``recognizers[i]`` for every ``i``, running the RNN layers of all of
    them as one batch; returns their partial texts.

    The result is that of ``[r.accept(c) for r, c in zip(recognizers, chunks)]`` up to float
    rounding, at a fraction of the cost when many streams share a model: a recurrent layer call
    has a fixed cost of a few milliseconds whatever its length, and here it is paid once per
    batch. The recognizers must be distinct and share one model.
    """
    if len(recognizers) != len(chunks):
        raise ValueError(f"{len(recognizers)} recognizers for {len(chunks)} chunks")
    if len({id(r) for r in recognizers}) != len(recognizers):
        raise ValueError("a recognizer appears twice: feed it one chunk at a time")
    if len({id(r.model) for r in recognizers}) > 1:
        raise ValueError("recognizers batched together must share one model")
    samples = [r._checked(c) for r, c in zip(recognizers, chunks)]  # every chunk checked before any is fed
    with torch.inference_mode():
        fronts = [r._front(r._frames(x), final=False) for r, x in zip(recognizers, samples)]
        ready = [i for i, (go, x) in enumerate(fronts) if go and x is not None]
        outs = dict(zip(ready, _rnn_batch([recognizers[i] for i in ready], [fronts[i][1] for i in ready])))
        for i, (r, (go, _)) in enumerate(zip(recognizers, fronts)):
            if go:
                r._back(outs.get(i), final=False)
    return [r.partial_text() for r in recognizers]


def _rnn_batch(recognizers: Sequence[StreamingRecognizer], xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The RNN stage of several streams at once: (T_i, 1, D) inputs -> (T_i, 1, H) outputs,
    each stream's hidden state carried as :meth:`StreamingRecognizer._rnn` carries it."""
    if len(xs) <= 1:
        return [r._rnn(x) for r, x in zip(recognizers, xs)]
    lengths = [x.size(0) for x in xs]
    x = torch.nn.utils.rnn.pad_sequence([x[:, 0] for x in xs])  # (T_max, B, D)
    packed_lengths = torch.tensor(lengths)
    for i, rnn in enumerate(recognizers[0].model.rnns):
        if rnn.batch_norm is not None:
            x = rnn.batch_norm(x)
        states = [r._states[i] for r in recognizers]
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, packed_lengths, enforce_sorted=False)
        out, state = rnn.rnn(packed, _stack_states(rnn.rnn, states, x))
        x, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.size(0))
        for b, r in enumerate(recognizers):
            r._states[i] = (
                tuple(s[:, b : b + 1].contiguous() for s in state)
                if isinstance(state, tuple)
                else state[:, b : b + 1].contiguous()
            )
    return [x[:n, b : b + 1] for b, n in enumerate(lengths)]


def _stack_states(rnn: torch.nn.RNNBase, states: Sequence[Any], x: torch.Tensor) -> Any:
    """One batched initial state from per-stream states (None: zeros, as a fresh stream starts)."""
    zeros = x.new_zeros(rnn.num_layers, 1, rnn.hidden_size)
    if isinstance(rnn, torch.nn.LSTM):
        return tuple(torch.cat([s[k] if s is not None else zeros for s in states], dim=1) for k in range(2))
    return torch.cat([s if s is not None else zeros for s in states], dim=1)


def load_streaming_recognizer(path: Any, decoder: Any = None, device: Any = "cpu") -> StreamingRecognizer:
    """A :class:`StreamingRecognizer` for a checkpoint (:class:`StreamingError` if it cannot stream)."""
    from checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    check_streamable(ckpt.model_config, ckpt.audio_config)
    return StreamingRecognizer(ckpt.build_model(device), ckpt.audio_config, ckpt.labels, decoder)


# ---------------------------------------------------------------------------- resampling


class StreamResampler:
    """Polyphase resampling of a stream in chunks, equal to :func:`data.audio.resample` of the
    whole signal (``scipy.signal.resample_poly``: Kaiser-windowed FIR, zero padding at both ends).

    :meth:`push` returns the output samples whose filter support has fully arrived;
    :meth:`finish` the rest, ``ceil(n * target / source)`` samples in all.
    """

    def __init__(self, orig_sr: int, target_sr: int) -> None:
        from scipy.signal import firwin

        if orig_sr <= 0 or target_sr <= 0:
            raise StreamingError(f"sample rates must be positive, got {orig_sr} and {target_sr}")
        g = math.gcd(orig_sr, target_sr)
        self.up, self.down = target_sr // g, orig_sr // g
        self.identity = orig_sr == target_sr
        self.n_in = 0
        self.n_out = 0  # outputs returned so far
        self.finished = False
        if self.identity:
            return
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)
        h *= self.up
        n_pre_pad = self.down - half_len % self.down
        self.h = np.concatenate([np.zeros(n_pre_pad, dtype=np.float32), h])
        self.n_pre_remove = (half_len + n_pre_pad) // self.down
        self.buf = np.zeros(0, dtype=np.float32)
        self.buf_start = 0  # input index of buf[0]

    def _compute(self, m0: int, m1: int) -> np.ndarray:
        """Outputs [m0, m1) from the buffered input (zeros outside the received samples)."""
        from scipy.signal import upfirdn

        up, down, taps = self.up, self.down, len(self.h)
        j0 = (m0 + self.n_pre_remove) * down
        j1 = (m1 - 1 + self.n_pre_remove) * down
        lo = -((taps - 1 - j0) // up)  # ceil((j0 - taps + 1) / up)
        lo = (lo // down) * down  # so that lo * up is a multiple of down
        hi = j1 // up
        seg = np.zeros(hi + 1 - lo, dtype=np.float32)
        a, b = max(lo, self.buf_start), min(hi + 1, self.buf_start + len(self.buf))
        if b > a:
            seg[a - lo : b - lo] = self.buf[a - self.buf_start : b - self.buf_start]
        y = upfirdn(self.h, seg, up, down)
        first = m0 + self.n_pre_remove - lo * up // down
        return y[first : first + (m1 - m0)].astype(np.float32)

    def _trim(self) -> None:
        """Drop the input no later output needs."""
        j = (self.n_out + self.n_pre_remove) * self.down
        lo = -((len(self.h) - 1 - j) // self.up)
        lo = (lo // self.down) * self.down
        if lo > self.buf_start:
            self.buf = self.buf[min(lo - self.buf_start, len(self.buf)) :]
            self.buf_start = lo

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add input samples; return the output samples that are now final."""
        x = as_samples(samples)
        if self.finished:
            raise StreamingError("the resampler has finished")
        self.n_in += len(x)
        if self.identity:
            self.n_out += len(x)
            return x
        self.buf = np.concatenate([self.buf, x])
        ready = (self.n_in * self.up - 1) // self.down - self.n_pre_remove + 1 if self.n_in else 0
        if ready <= self.n_out:
            return np.zeros(0, dtype=np.float32)
        y = self._compute(self.n_out, ready)
        self.n_out = ready
        self._trim()
        return y

    def finish(self) -> np.ndarray:
        """The remaining output samples (the end of the signal is zero-padded, as offline)."""
        if self.finished:
            raise StreamingError("the resampler has finished")
        self.finished = True
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        total = -(-self.n_in * self.up // self.down)
        if total <= self.n_out:
            return np.zeros(0, dtype=np.float32)
        y = self._compute(self.n_out, total)
        self.n_out = total
        return y


__all__ = [
    "StreamingError",
    "StreamingRecognizer",
    "StreamResampler",
    "Latency",
    "algorithmic_latency",
    "as_samples",
    "check_streamable",
    "load_streaming_recognizer",
]
