"""DeepSpeech 2 and Deep Speech 1 acoustic models for CTC training.

* Deep Speech 2 (Amodei et al. 2016, deepspeech.pytorch's layout, ``arch="ds2"``):
  two Conv2d + BatchNorm + Hardtanh(0, 20) layers over the spectrogram (16 channels, 40 ms
  output frames by default; deepspeech.pytorch's 32 and 20 ms are one flag away), a stack of
  RNN layers (bidirectional outputs summed) with sequence-wise BatchNorm before every
  layer but the first, a lookahead convolution when unidirectional (Wang et al. 2016),
  then BatchNorm + Linear to the labels.
* Deep Speech 1 (Hannun et al. 2014, ``arch="ds1"``): each frame with +-C frames of
  context, three clipped-ReLU dense layers, a bidirectional recurrent layer (the two
  directions summed), one more clipped-ReLU dense layer, Linear to the labels.

Both take ``(B, 1, F, T)`` zero-padded spectrograms with their true lengths and
return ``(B, T', n_classes)`` log-probabilities with the output lengths. Padding never
changes a valid output frame, without ``pack_padded_sequence`` (whose CPU backward
is O(T^2)): padded frames are zeroed after every conv layer, BatchNorm statistics
in training are taken over valid frames only, and the backward RNN direction runs
on each sequence reversed within its own length.

Print what a checkpoint holds, write a release copy (the tools live in checkpoint.py), export it
to ONNX for onnxruntime (onnx_export.py), or convert a deepspeech.pytorch v2 package or V3
Lightning checkpoint (dspt_import.py)::

    python model.py --model-path models/an4.pth
    python model.py --model-path runs/an4/deepspeech_last.pth --export models/an4.pth --fp16-weights
    python model.py --import-deepspeech-pytorch an4_pretrained_v3.ckpt --export models/an4_v3.pth
    python model.py --model-path models/an4.pth --export-onnx models/an4.onnx [--int8]
    python model.py --model-path models/an4_stream.pth --export-onnx models/an4_stream.onnx --streaming
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ARCHS = ("ds2", "ds1")
RNN_TYPES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
RNN_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
CLIP = 20.0  # Hardtanh(0, 20) / clipped ReLU ceiling of both papers


class ConvSpec(NamedTuple):
    """One DS2 front-end convolution; every pair is (frequency, time)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


# The DS2 front end, named once: the layers, the RNN input size and the output
# lengths are all derived from this tuple (and ``ModelConfig.conv_time_stride``, see ds2_convs).
DS2_CONVS: tuple[ConvSpec, ...] = (
    ConvSpec(kernel=(41, 11), stride=(2, 2), padding=(20, 5)),
    ConvSpec(kernel=(21, 11), stride=(2, 1), padding=(10, 5)),
)
CONV_TIME_STRIDES = (2, 4)  # input frames per output frame of the DS2 front end
ABSENT_FIELDS = {"conv_bias": False, "conv_time_stride": 2}
"""What a saved model_config written before these ModelConfig fields existed meant (not
today's defaults): checkpoint.py fills them in when a file lacks them."""


def ds2_convs(cfg: "ModelConfig") -> tuple[ConvSpec, ...]:
    """The DS2 front end of ``cfg``: :data:`DS2_CONVS`, whose second layer also strides by 2 in
    time when ``cfg.conv_time_stride`` is 4 (40 ms output frames: half the frames for the
    second conv and every later layer)."""
    if cfg.conv_time_stride == 2:
        return DS2_CONVS
    first, second = DS2_CONVS
    return (first, second._replace(stride=(second.stride[0], cfg.conv_time_stride // first.stride[1])))


def conv_out_size(size, kernel: int, stride: int, padding: int):
    """Output size of a convolution along one axis; ``size`` is an int or a LongTensor."""
    return (size + 2 * padding - kernel) // stride + 1


def time_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _check_int(name: str, value: object, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ValueError(f"ModelConfig.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass
class ModelConfig:
    """Architecture of an acoustic model. Plain data: ``asdict(cfg)`` is JSON-able
    and is what checkpoints store.

    Fields used by one architecture only: ``conv_channels``, ``conv_time_stride``,
    ``lookahead_context`` and ``conv_bias`` (ds2), ``ds1_context`` and ``ds1_stride`` (ds1).
    """

    arch: str = "ds2"  # "ds2" | "ds1"
    n_features: int = 161  # spectrogram rows, AudioConfig.n_freq
    n_classes: int = 29  # len(labels), blank at index 0
    hidden_size: int = 384  # RNN width; also the dense layers' width in ds1
    hidden_layers: int = 3  # RNN layers (Deep Speech 1 as published has 1)
    rnn_type: str = "lstm"  # "rnn" (tanh) | "gru" | "lstm"; lstm takes oneDNN's fast CPU kernel
    bidirectional: bool = True  # directions are summed, not concatenated
    conv_channels: int = 16  # ds2: channels of both conv layers (deepspeech.pytorch: 32)
    lookahead_context: int = 5  # ds2, unidirectional: output frames the lookahead conv sees (current + 4 future: 160 ms)
    ds1_context: int = 9  # ds1: frames of context on each side of a frame
    ds1_stride: int = 1  # ds1: 1 = one output per input frame (10 ms), 2 = every other frame (20 ms)
    dropout: float = 0.0  # ds1: after every dense layer; ds2: on the input of every RNN layer but the first and of the head
    conv_bias: bool = False  # ds2: a bias in both conv layers (deepspeech.pytorch's have one; the BatchNorm makes it redundant)
    conv_time_stride: int = 4  # ds2: input frames per output frame, 4 (40 ms) or 2 (20 ms, deepspeech.pytorch's)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"ModelConfig.arch must be one of {list(ARCHS)}, got {self.arch!r}")
        if self.rnn_type not in RNN_TYPES:
            raise ValueError(f"ModelConfig.rnn_type must be one of {list(RNN_TYPES)}, got {self.rnn_type!r}")
        if type(self.bidirectional) is not bool:
            raise ValueError(f"ModelConfig.bidirectional must be True or False, got {self.bidirectional!r}")
        if type(self.conv_bias) is not bool:
            raise ValueError(f"ModelConfig.conv_bias must be True or False, got {self.conv_bias!r}")
        _check_int("n_features", self.n_features, 1)
        _check_int("n_classes", self.n_classes, 2)
        _check_int("hidden_size", self.hidden_size, 1)
        _check_int("hidden_layers", self.hidden_layers, 1)
        _check_int("conv_channels", self.conv_channels, 1)
        _check_int("lookahead_context", self.lookahead_context, 1)
        _check_int("ds1_context", self.ds1_context, 0)
        if self.conv_time_stride not in CONV_TIME_STRIDES or type(self.conv_time_stride) is not int:
            raise ValueError(
                f"ModelConfig.conv_time_stride must be one of {list(CONV_TIME_STRIDES)}, got {self.conv_time_stride!r}"
            )
        if self.ds1_stride not in (1, 2) or type(self.ds1_stride) is not int:
            raise ValueError(f"ModelConfig.ds1_stride must be 1 or 2, got {self.ds1_stride!r}")
        if type(self.dropout) is int:
            self.dropout = float(self.dropout)
        if type(self.dropout) is not float or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be a float in [0, 1), got {self.dropout!r}")

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """The architecture flags (train.py). Defaults are the AN4 recipe's."""
        d = cls()
        g = parser.add_argument_group("model")
        g.add_argument("--arch", default=d.arch, choices=ARCHS, help="Deep Speech 2 (conv + RNN) or Deep Speech 1")
        g.add_argument("--hidden-size", type=int, default=d.hidden_size, help="RNN width")
        g.add_argument(
            "--hidden-layers",
            type=int,
            default=None,
            help=f"RNN layers (default: {d.hidden_layers} for ds2, 1 for ds1 as in the paper)",
        )
        g.add_argument(
            "--rnn-type", default=d.rnn_type, choices=tuple(RNN_TYPES), help="LSTM: on CPU its padded kernel is faster than GRU's"
        )
        g.add_argument(
            "--no-bidirectional",
            dest="bidirectional",
            action="store_false",
            help="unidirectional RNNs (with a lookahead convolution in ds2): streamable; bidirectional: %(default)s",
        )
        g.add_argument("--conv-channels", type=int, default=d.conv_channels, help="ds2: channels of both conv layers")
        g.add_argument(
            "--conv-time-stride",
            type=int,
            default=d.conv_time_stride,
            choices=CONV_TIME_STRIDES,
            help="ds2: input frames per output frame; 4 (40 ms) also strides the second conv in time, "
            "halving the work of it and every later layer",
        )
        g.add_argument(
            "--lookahead-context",
            type=int,
            default=d.lookahead_context,
            help="ds2 with --no-bidirectional: output frames the lookahead convolution sees (current + future)",
        )
        g.add_argument("--ds1-context", type=int, default=d.ds1_context, help="ds1: frames of context on each side")
        g.add_argument(
            "--ds1-stride",
            type=int,
            default=d.ds1_stride,
            choices=(1, 2),
            help="ds1: 1 = an output every 10 ms frame, 2 = every other frame",
        )
        g.add_argument("--dropout", type=float, default=d.dropout)

    @staticmethod
    def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Refuse architecture flags that would do nothing with the others."""

        def given(name: str) -> bool:
            return getattr(args, name) != parser.get_default(name)

        if args.arch == "ds1":
            for name in ("conv_channels", "conv_time_stride", "lookahead_context"):
                if given(name):
                    parser.error(f"--{name.replace('_', '-')} applies to --arch ds2 only")
        else:
            for name in ("ds1_context", "ds1_stride"):
                if given(name):
                    parser.error(f"--{name.replace('_', '-')} applies to --arch ds1 only")
            if args.bidirectional and given("lookahead_context"):
                parser.error("--lookahead-context applies to unidirectional models: add --no-bidirectional")

    @classmethod
    def from_args(cls, args: argparse.Namespace, n_features: int, n_classes: int) -> "ModelConfig":
        """The architecture the flags of :meth:`add_args` ask for."""
        try:
            return cls(
                arch=args.arch,
                n_features=n_features,
                n_classes=n_classes,
                hidden_size=args.hidden_size,
                hidden_layers=args.hidden_layers or (1 if args.arch == "ds1" else cls.hidden_layers),
                rnn_type=args.rnn_type,
                bidirectional=args.bidirectional,
                conv_channels=args.conv_channels,
                conv_time_stride=args.conv_time_stride,
                lookahead_context=args.lookahead_context,
                ds1_context=args.ds1_context,
                ds1_stride=args.ds1_stride,
                dropout=args.dropout,
            )
        except ValueError as e:
            raise ValueError(str(e).replace("ModelConfig.", "--").replace("_", "-")) from None


# ---------------------------------------------------------------------------- building blocks


def _masked_batch_norm(
    bn: nn.modules.batchnorm._BatchNorm, x: Tensor, mask: Tensor, n: Tensor, dims: tuple[int, ...], shape: tuple[int, ...]
) -> Tensor:
    """Training-mode batch norm with statistics over the valid elements only.

    ``mask`` is a float 0/1 tensor broadcastable to ``x`` (size 1 on the channel
    axis), ``n`` the number of valid elements per channel, ``dims`` the axes
    reduced, ``shape`` the per-channel broadcast shape. Updates the running stats
    exactly as ``nn.BatchNorm`` does (unbiased variance, momentum or cumulative
    average).
    """
    xf = x.float()  # statistics in fp32 even under autocast
    mean = (xf * mask).sum(dims) / n
    centered = xf - mean.view(shape)
    var = (centered * mask).pow(2).sum(dims) / n
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.detach(), momentum)
            bn.running_var.lerp_(var.detach() * n / (n - 1).clamp(min=1), momentum)
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        return centered * (scale * bn.weight).view(shape) + bn.bias.view(shape)
    return centered * scale.view(shape)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over (B, C, F, T) whose training statistics skip padded frames."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, C, F, T); mask: (B, T) bool, True on valid frames."""
        if mask is None or not self.training:
            return super().forward(x)
        m = mask[:, None, None, :].to(torch.float32)  # (B, 1, 1, T)
        n = mask.sum() * x.size(2)
        return _masked_batch_norm(self, x, m, n, (0, 2, 3), (1, -1, 1, 1))


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """Sequence-wise BatchNorm1d over time-major (T, B, H) whose training statistics skip padded frames."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (T, B, H); mask: (T, B) bool, True on valid frames."""
        if mask is None or not self.training:
            return super().forward(x.reshape(-1, x.size(-1))).view_as(x)  # (T*B, H) -> (T, B, H)
        m = mask[:, :, None].to(torch.float32)  # (T, B, 1)
        return _masked_batch_norm(self, x, m, mask.sum(), (0, 1), (1, 1, -1))


def reverse_index(lengths: Tensor, max_len: int) -> Tensor:
    """Flat row index that reverses each sequence within its own length.

    For time-major ``x`` of shape (T, B, H) viewed as (T*B, H), ``index_select``
    with this index puts frame ``L_b - 1 - t`` of sequence ``b`` at time ``t`` for
    ``t < L_b`` and leaves the padding in place. It is its own inverse.
    Returns a (T*B,) LongTensor.
    """
    t = torch.arange(max_len, device=lengths.device)[:, None]  # (T, 1)
    lengths = lengths[None, :]  # (1, B)
    src_t = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    batch = lengths.size(1)
    return (src_t * batch + torch.arange(batch, device=lengths.device)[None, :]).reshape(-1)


def _select_rows(x: Tensor, index: Tensor) -> Tensor:
    """(T, B, H) -> (T, B, H) rows permuted by a flat (T*B,) index."""
    return x.reshape(-1, x.size(-1)).index_select(0, index).view_as(x)


class BatchRNN(nn.Module):
    """One recurrent layer over padded time-major input, optionally bidirectional.

    Each direction is its own unidirectional RNN; the backward one reads each
    sequence reversed within its length, so padding never reaches a valid output.
    Directions are summed. An optional masked BatchNorm normalises the input.
    """

    def __init__(self, input_size: int, hidden_size: int, rnn_type: str, bidirectional: bool, batch_norm: bool) -> None:
        super().__init__()
        self.batch_norm = MaskedBatchNorm1d(input_size) if batch_norm else None
        rnn_cls = RNN_TYPES[rnn_type]
        self.rnn = rnn_cls(input_size, hidden_size)
        self.rnn_reverse = rnn_cls(input_size, hidden_size) if bidirectional else None

    def forward(self, x: Tensor, mask: Tensor, rev_index: Tensor | None) -> Tensor:
        """x: (T, B, H_in); mask: (T, B) bool; rev_index: (T*B,) from :func:`reverse_index`.
        Returns (T, B, hidden_size); frames at padded positions hold arbitrary values."""
        if self.batch_norm is not None:
            x = self.batch_norm(x, mask)
        out, _ = self.rnn(x)
        if self.rnn_reverse is not None:
            assert rev_index is not None
            out_reverse, _ = self.rnn_reverse(_select_rows(x, rev_index))
            out = out + _select_rows(out_reverse, rev_index)
        return out


class Lookahead(nn.Module):
    """Row convolution (Wang et al. 2016): each output frame is a per-channel weighted
    sum of the current and the next ``context - 1`` frames (deepspeech.pytorch's
    convention: a depthwise Conv1d of kernel ``context``), followed by Hardtanh(0, 20).
    """

    def __init__(self, n_features: int, context: int) -> None:
        super().__init__()
        self.context = context
        self.conv = nn.Conv1d(n_features, n_features, kernel_size=context, groups=n_features, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (T, B, H); mask: (T, B) bool. Padded frames are zeroed first so the last
        valid frames look ahead into zeros, as they would alone."""
        x = x * mask[:, :, None].to(x.dtype)
        x = x.permute(1, 2, 0)  # (T, B, H) -> (B, H, T)
        x = self.conv(F.pad(x, (0, self.context - 1)))
        return F.hardtanh(x.permute(2, 0, 1), 0.0, CLIP)  # (B, H, T) -> (T, B, H)


# ---------------------------------------------------------------------------- models


class AcousticModel(nn.Module):
    """What both architectures share: the config, output lengths and frame shift."""

    cfg: ModelConfig
    time_stride: int  # input frames per output frame

    def output_lengths(self, lengths: Tensor | int) -> Tensor | int:
        """Output frames for ``lengths`` input frames (a LongTensor or an int)."""
        raise NotImplementedError

    def frame_shift(self, hop_seconds: float) -> float:
        """Seconds per output frame for input frames ``hop_seconds`` apart (ds2: 2 x 10 ms)."""
        return self.time_stride * hop_seconds

    def _check_inputs(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Validate shapes and lengths; returns lengths as a long tensor on x's device."""
        if x.dim() != 4 or x.size(1) != 1 or x.size(2) != self.cfg.n_features:
            raise ValueError(f"expected spectrograms of shape (B, 1, {self.cfg.n_features}, T), got {tuple(x.shape)}")
        if lengths.shape != (x.size(0),):
            raise ValueError(f"expected lengths of shape ({x.size(0)},), got {tuple(lengths.shape)}")
        if x.size(0) and (int(lengths.min()) < 1 or int(lengths.max()) > x.size(3)):
            raise ValueError(f"lengths must be between 1 and T={x.size(3)}, got {lengths.tolist()}")
        return lengths.to(device=x.device, dtype=torch.long)

    def _log_probs(self, logits: Tensor) -> Tensor:
        """(T, B, C) logits -> (B, T, C) log-probabilities, contiguous."""
        return logits.float().log_softmax(-1).transpose(0, 1).contiguous()


class DeepSpeech2(AcousticModel):
    """DeepSpeech 2: conv front end, RNN stack, (lookahead,) BatchNorm + Linear head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.arch != "ds2":
            raise ValueError(f"DeepSpeech2 needs arch='ds2', got {cfg.arch!r}")
        self.cfg = cfg
        self.conv_specs = ds2_convs(cfg)
        self.time_stride = math.prod(spec.stride[1] for spec in self.conv_specs)
        convs, norms = [], []
        in_channels, n_freq = 1, cfg.n_features
        for spec in self.conv_specs:
            # No conv bias by default: the BatchNorm right after it subtracts any constant shift.
            convs.append(nn.Conv2d(in_channels, cfg.conv_channels, spec.kernel, spec.stride, spec.padding, bias=cfg.conv_bias))
            norms.append(MaskedBatchNorm2d(cfg.conv_channels))
            in_channels = cfg.conv_channels
            n_freq = conv_out_size(n_freq, spec.kernel[0], spec.stride[0], spec.padding[0])
        self.convs = nn.ModuleList(convs)
        self.conv_norms = nn.ModuleList(norms)
        self.rnn_input_size = cfg.conv_channels * n_freq  # 16 * 41 = 656 for 161 features
        self.rnns = nn.ModuleList(
            BatchRNN(
                self.rnn_input_size if i == 0 else cfg.hidden_size,
                cfg.hidden_size,
                cfg.rnn_type,
                cfg.bidirectional,
                batch_norm=i > 0,
            )
            for i in range(cfg.hidden_layers)
        )
        self.lookahead = None if cfg.bidirectional else Lookahead(cfg.hidden_size, cfg.lookahead_context)
        self.head_norm = MaskedBatchNorm1d(cfg.hidden_size)
        self.head = nn.Linear(cfg.hidden_size, cfg.n_classes, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def output_lengths(self, lengths: Tensor | int) -> Tensor | int:
        for spec in self.conv_specs:
            lengths = conv_out_size(lengths, spec.kernel[1], spec.stride[1], spec.padding[1])
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Args:
            x: (B, 1, F, T) spectrograms, zero-padded (padding is masked anyway).
            lengths: (B,) valid input frames.

        Returns:
            log_probs: (B, T', n_classes) log-softmax over classes; frames at
                ``t >= out_lengths[b]`` are padding.
            out_lengths: (B,) valid output frames, ``output_lengths(lengths)``.
        """
        lengths = self._check_inputs(x, lengths)
        x = x * time_mask(lengths, x.size(3))[:, None, None, :].to(x.dtype)
        for conv, norm in zip(self.convs, self.conv_norms):
            x = conv(x)  # (B, C, F', T')
            lengths = conv_out_size(lengths, conv.kernel_size[1], conv.stride[1], conv.padding[1])
            mask = time_mask(lengths, x.size(3))  # (B, T')
            # BatchNorm + Hardtanh map the zero padding to non-zero values: re-zero every layer.
            x = F.hardtanh(norm(x, mask), 0.0, CLIP) * mask[:, None, None, :].to(x.dtype)
        b, c, f, t = x.shape
        x = x.reshape(b, c * f, t).permute(2, 0, 1)  # (B, C, F, T) -> (T, B, C*F)
        mask = mask.t()  # (T, B)
        rev_index = reverse_index(lengths, t) if self.cfg.bidirectional else None
        for i, rnn in enumerate(self.rnns):
            x = rnn(self.dropout(x) if i > 0 else x, mask, rev_index)  # (T, B, H)
        if self.lookahead is not None:
            x = self.lookahead(x, mask)
        x = x * mask[:, :, None].to(x.dtype)  # padded frames -> zeros: deterministic padded outputs
        logits = self.head(self.dropout(self.head_norm(x, mask)))  # (T, B, n_classes)
        return self._log_probs(logits), lengths


class DeepSpeech1(AcousticModel):
    """Deep Speech 1 (Hannun et al. 2014).

    Layer 1 sees each frame with ``ds1_context`` frames on each side (zeros outside
    the utterance); it is implemented as a Conv1d of kernel 2C+1 over time, which
    is exactly a dense layer over the stacked frames. Layers 1-3 and 5 are dense
    with clipped ReLU min(max(x, 0), 20); layer 4 is ``hidden_layers`` recurrent
    layers (bidirectional summed, as in the paper, or unidirectional). With
    ``ds1_stride=2`` layer 1 is evaluated on every other frame (20 ms output).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.arch != "ds1":
            raise ValueError(f"DeepSpeech1 needs arch='ds1', got {cfg.arch!r}")
        self.cfg = cfg
        self.time_stride = cfg.ds1_stride
        h = cfg.hidden_size
        self.context = nn.Conv1d(
            cfg.n_features, h, kernel_size=2 * cfg.ds1_context + 1, stride=cfg.ds1_stride, padding=cfg.ds1_context
        )
        self.dense2 = nn.Linear(h, h)
        self.dense3 = nn.Linear(h, h)
        self.rnns = nn.ModuleList(
            BatchRNN(h, h, cfg.rnn_type, cfg.bidirectional, batch_norm=False) for _ in range(cfg.hidden_layers)
        )
        self.dense5 = nn.Linear(h, h)
        self.head = nn.Linear(h, cfg.n_classes)
        self.dropout = nn.Dropout(cfg.dropout)

    def output_lengths(self, lengths: Tensor | int) -> Tensor | int:
        c = self.cfg.ds1_context
        return conv_out_size(lengths, 2 * c + 1, self.cfg.ds1_stride, c)

    def _clipped(self, x: Tensor) -> Tensor:
        return self.dropout(F.hardtanh(x, 0.0, CLIP))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Same contract as :meth:`DeepSpeech2.forward`: (B, 1, F, T) and (B,) lengths ->
        (B, T', n_classes) log-probs and (B,) output lengths."""
        lengths = self._check_inputs(x, lengths)
        x = x[:, 0] * time_mask(lengths, x.size(3))[:, None, :].to(x.dtype)  # (B, F, T), zeros outside
        x = self._clipped(self.context(x)).permute(2, 0, 1)  # (B, H, T') -> (T', B, H)
        lengths = self.output_lengths(lengths)
        mask = time_mask(lengths, x.size(0)).t()  # (T', B)
        x = self._clipped(self.dense3(self._clipped(self.dense2(x))))
        rev_index = reverse_index(lengths, x.size(0)) if self.cfg.bidirectional else None
        for rnn in self.rnns:
            x = rnn(x, mask, rev_index)
        x = self._clipped(self.dense5(x)) * mask[:, :, None].to(x.dtype)
        return self._log_probs(self.head(x)), lengths


def build_model(cfg: ModelConfig) -> AcousticModel:
    """The model ``cfg.arch`` names, with PyTorch's default initialisation."""
    return DeepSpeech2(cfg) if cfg.arch == "ds2" else DeepSpeech1(cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def forward_flops(cfg: ModelConfig, n_frames: int) -> int:
    """FLOPs of one forward pass over one utterance of ``n_frames`` input frames.

    A multiply-add is 2 FLOPs; biases, normalisation, activations, softmax and the
    masking are not counted. With T' = output frames:

    * ds2 conv layer i (C_in -> C channels, kernel kf x kt, F_i output bins):
      ``2 * C * F_i * C_in * kf * kt`` per output frame of that layer (with the default
      ``conv_time_stride`` 2 both layers run at T', since only layer 1 strides in time;
      with 4, layer 1 runs at 2 T'); for 161 features and 32 channels: 2.34 M + 19.40 M.
    * RNN layer, per direction per output frame: ``2 * gates * (in * H + H * H)``,
      gates = 1 (rnn), 3 (gru), 4 (lstm); in = conv_channels * F_2 for the first
      ds2 layer, H otherwise.
    * ds2 lookahead (unidirectional): ``2 * H * lookahead_context`` per frame.
    * ds2 head: ``2 * H * n_classes`` per frame.
    * ds1: ``2 * (2C+1) * n_features * H`` (context layer) + ``3 * 2 * H * H``
      (dense 2, 3, 5) + ``2 * H * n_classes`` per output frame, plus the RNNs.

    A training step costs about 3x this (backward ~ 2x forward).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    h, gates = cfg.hidden_size, RNN_GATES[cfg.rnn_type]
    directions = 2 if cfg.bidirectional else 1

    def rnn_flops(in_size: int) -> int:
        return directions * 2 * gates * (in_size * h + h * h)

    if cfg.arch == "ds2":
        per_frame, in_channels, n_freq, t = 0, 1, cfg.n_features, n_frames
        conv_flops = 0
        for spec in ds2_convs(cfg):
            n_freq = conv_out_size(n_freq, spec.kernel[0], spec.stride[0], spec.padding[0])
            t = conv_out_size(t, spec.kernel[1], spec.stride[1], spec.padding[1])
            conv_flops += 2 * cfg.conv_channels * n_freq * in_channels * spec.kernel[0] * spec.kernel[1] * t
            in_channels = cfg.conv_channels
        per_frame += rnn_flops(cfg.conv_channels * n_freq) + (cfg.hidden_layers - 1) * rnn_flops(h)
        if not cfg.bidirectional:
            per_frame += 2 * h * cfg.lookahead_context
        per_frame += 2 * h * cfg.n_classes
        return conv_flops + per_frame * t
    c = cfg.ds1_context
    t = conv_out_size(n_frames, 2 * c + 1, cfg.ds1_stride, c)
    per_frame = 2 * (2 * c + 1) * cfg.n_features * h + 3 * 2 * h * h + 2 * h * cfg.n_classes
    per_frame += cfg.hidden_layers * rnn_flops(h)
    return per_frame * t


# ---------------------------------------------------------------------------- info tool


def describe_architecture(cfg: ModelConfig) -> str:
    """One line, e.g. 'DeepSpeech 2 (ds2): 3 x 384 bidirectional LSTM, conv channels 16, conv time stride 4'."""
    rnn = (
        f"{cfg.hidden_layers} x {cfg.hidden_size} {'bidirectional' if cfg.bidirectional else 'unidirectional'} "
        f"{cfg.rnn_type.upper()}"
    )
    if cfg.arch == "ds2":
        extra = f"conv channels {cfg.conv_channels}" + (" (with bias)" if cfg.conv_bias else "")
        extra += f", conv time stride {cfg.conv_time_stride}"
        if not cfg.bidirectional:
            extra += f", lookahead context {cfg.lookahead_context}"
        return f"DeepSpeech 2 (ds2): {rnn}, {extra}"
    return f"Deep Speech 1 (ds1): {rnn}, context +-{cfg.ds1_context} frames, stride {cfg.ds1_stride}"


def build_parser() -> argparse.ArgumentParser:
    from utils import make_parser

    parser = make_parser(
        "Print what a deepspeech-ctc checkpoint holds (architecture, parameters, labels, audio config, "
        "epochs and WER/CER), write a release copy with --export, or an ONNX file with --export-onnx. "
        "--import-deepspeech-pytorch converts a deepspeech.pytorch v2 model package or V3 Lightning checkpoint "
        "(see dspt_import.py).\n\n"
        "  python model.py --model-path models/an4.pth\n"
        "  python model.py --model-path runs/an4/deepspeech_last.pth --export models/an4.pth --fp16-weights\n"
        "  python model.py --average runs/an4/deepspeech_{36..45}.pth --export models/an4.pth\n"
        "  python model.py --model-path models/an4.pth --export-onnx models/an4.onnx [--int8]\n"
        "  python model.py --model-path models/an4_stream.pth --export-onnx models/an4_stream.onnx --streaming\n"
        "  python model.py --import-deepspeech-pytorch an4_pretrained_v3.ckpt --export models/an4_v3.pth"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-path", help="checkpoint written by train.py (or an exported .onnx file, to print its metadata)")
    source.add_argument(
        "--import-deepspeech-pytorch",
        metavar="OLD",
        default=None,
        help="a deepspeech.pytorch v2 model package (.pth) or V3 Lightning checkpoint (.ckpt) to convert; needs --export",
    )
    source.add_argument(
        "--average",
        nargs="+",
        metavar="CKPT",
        default=None,
        help="average the weights of these checkpoints of one run (e.g. its last epochs, train.py --checkpoint); needs --export",
    )
    parser.add_argument(
        "--export",
        default=None,
        metavar="PATH",
        help="write a release copy here: weights, architecture, audio config, labels and "
        "metric history, without optimizer or other training state",
    )
    parser.add_argument("--fp16-weights", action="store_true", help="with --export: store the weights in fp16")
    parser.add_argument(
        "--level-norm-from",
        default=None,
        metavar="CSV",
        help="with --export: switch on level normalisation (train.py --level-norm) in the copy, at the "
        "speech level of this manifest's audio (the training set's; up to 2,000 utterances spread over it)",
    )
    parser.add_argument(
        "--remove-dc",
        action="store_true",
        help="with --export: switch on DC offset removal (train.py --remove-dc) in the copy",
    )
    parser.add_argument(
        "--pad-mode",
        choices=("reflect", "constant"),
        default=None,
        help="with --import-deepspeech-pytorch: the STFT centre padding the model was trained "
        "with: reflect (librosa < 0.9, the released models; the default) or constant "
        "(zeros, librosa >= 0.9)",
    )
    g = parser.add_argument_group("ONNX export (onnx_export.py; needs the onnx and onnxruntime packages)")
    g.add_argument(
        "--export-onnx",
        default=None,
        metavar="PATH.onnx",
        help="write the model as a self-describing ONNX file (opset 17, dynamic batch and time) "
        "for transcribe.py/test.py --model-path PATH.onnx",
    )
    g.add_argument(
        "--int8", action="store_true", help="with --export-onnx: int8 quantization (dynamic: RNNs and matrix products)"
    )
    g.add_argument(
        "--streaming",
        action="store_true",
        help="with --export-onnx: write the streaming step graph (its state as inputs and outputs) of a "
        "unidirectional DS2 model with --normalize global or none, for transcribe.py --stream --model-path PATH.onnx",
    )
    g.add_argument(
        "--calibration-manifest",
        default=None,
        metavar="CSV",
        help="with --int8: also quantize the convolutions statically, with activation ranges "
        "measured on utterances of this manifest (training audio)",
    )
    g.add_argument(
        "--calibration-utterances", type=int, default=256, help="with --calibration-manifest: utterances drawn from it"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python model.py``: the checkpoint tools of checkpoint.py on the command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fp16_weights and not args.export:
        parser.error("--fp16-weights applies to --export")
    if args.level_norm_from and not (args.export and (args.model_path or args.average)):
        parser.error("--level-norm-from applies to --export of a --model-path or --average checkpoint")
    if args.remove_dc and not (args.export and (args.model_path or args.average)):
        parser.error("--remove-dc applies to --export of a --model-path or --average checkpoint")
    if args.import_deepspeech_pytorch and not args.export:
        parser.error("--import-deepspeech-pytorch needs --export NEW.pth")
    if args.average and not (args.export or args.export_onnx):
        parser.error("--average needs --export NEW.pth")
    if args.pad_mode and not args.import_deepspeech_pytorch:
        parser.error("--pad-mode applies to --import-deepspeech-pytorch")
    if args.int8 and not args.export_onnx:
        parser.error("--int8 applies to --export-onnx")
    if args.streaming and not args.export_onnx:
        parser.error("--streaming applies to --export-onnx")
    if args.streaming and args.calibration_manifest:
        parser.error("--calibration-manifest does not apply to --streaming (the step graph takes dynamic --int8 only)")
    if args.calibration_manifest and not args.int8:
        parser.error("--calibration-manifest applies to --export-onnx with --int8")
    if args.calibration_utterances < 1:
        parser.error("--calibration-utterances must be >= 1")
    if args.calibration_utterances != parser.get_default("calibration_utterances") and not args.calibration_manifest:
        parser.error("--calibration-utterances applies with --calibration-manifest")
    from checkpoint import CheckpointError, average_checkpoints, describe, export, load_checkpoint
    from dspt_import import DEFAULT_PAD_MODE

    if args.export_onnx:
        if args.import_deepspeech_pytorch or args.average:
            parser.error(
                "--export-onnx takes --model-path (a deepspeech.pytorch file given there is converted in memory; "
                "write an --average to a .pth first)"
            )
        try:
            from onnx_export import NotStreamableError, OnnxExportError, export_checkpoint
        except ImportError as e:
            print(
                f"error: --export-onnx needs the onnx and onnxruntime packages ({e}); pip install -r requirements-onnx.txt onnx",
                file=sys.stderr,
            )
            return 2
        try:
            path = export_checkpoint(
                args.model_path,
                args.export_onnx,
                int8=args.int8,
                calibration_manifest=args.calibration_manifest,
                calibration_utterances=args.calibration_utterances,
                streaming=args.streaming,
            )
        except NotStreamableError as e:
            parser.error(f"--streaming: {e}")
        except (OnnxExportError, OSError, ValueError) as e:  # CheckpointError is a ValueError
            print(f"error: {e}", file=sys.stderr)
            return 2
        kind = ("int8, static conv" if args.calibration_manifest else "int8 dynamic") if args.int8 else "fp32"
        kind += ", streaming step graph" if args.streaming else ""
        print(f"exported {path} ({path.stat().st_size / 2**20:.1f} MiB, {kind})")
        return 0
    if args.model_path and str(args.model_path).lower().endswith(".onnx") and not args.export:
        from inference import describe_onnx
        from onnx_runtime import OnnxModelError

        try:
            lines = describe_onnx(args.model_path)
        except (OnnxModelError, ImportError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"model:         {args.model_path}")
        for line in lines:
            print(line)
        return 0

    try:
        if args.import_deepspeech_pytorch:
            source = args.import_deepspeech_pytorch
            ckpt = load_checkpoint(source)  # converts deepspeech.pytorch files in memory
            if ckpt.imported_from is None:
                raise CheckpointError(f"{source}: a deepspeech-ctc checkpoint, not a deepspeech.pytorch file; nothing to import")
            audio = replace(ckpt.audio_config, pad_mode=args.pad_mode or DEFAULT_PAD_MODE)
            ckpt = replace(ckpt, audio_config=audio, weights_dtype="float16" if args.fp16_weights else "float32")
            path = export(ckpt, args.export, fp16_weights=args.fp16_weights)
            print(f"found:         {ckpt.imported_from['toolkit']} {ckpt.imported_from['version']} checkpoint {source}")
            for line in describe(ckpt):
                if not line.startswith(("imported from:", "training state:")):
                    print(line)
            print(f"exported:      {path}")
            return 0
        ckpt = average_checkpoints(args.average) if args.average else load_checkpoint(args.model_path)
        if args.export:
            if args.remove_dc:
                ckpt = replace(ckpt, audio_config=replace(ckpt.audio_config, remove_dc=True))
                print("DC offset:     removed from every utterance before the features")
            if args.level_norm_from:
                from data.audio import median_speech_level_db
                from data.manifest import read_manifest

                wavs = [row.wav for row in read_manifest(args.level_norm_from)]
                if not wavs:
                    raise ValueError(f"{args.level_norm_from}: the manifest lists no utterances")
                level = median_speech_level_db(wavs, ckpt.audio_config.sample_rate)
                ckpt = replace(ckpt, audio_config=replace(ckpt.audio_config, level_db=round(level, 2)))
                print(f"speech level:  {ckpt.audio_config.level_db:.2f} dBFS, measured on {args.level_norm_from}")
            path = export(ckpt, args.export, fp16_weights=args.fp16_weights)
            if (averaged := ckpt.averaged_from) is not None:
                print(f"averaged:      {len(averaged['files'])} checkpoints, epochs {averaged['epochs']}")
            print(f"exported {path} ({path.stat().st_size / 2**20:.1f} MiB{', fp16 weights' if args.fp16_weights else ''})")
            return 0
    except (CheckpointError, OSError, ValueError) as e:  # ManifestError and AudioError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model:         {args.model_path}")
    for line in describe(ckpt):
        print(line)
    return 0


__all__ = [
    "ARCHS",
    "RNN_TYPES",
    "CONV_TIME_STRIDES",
    "DS2_CONVS",
    "ds2_convs",
    "ConvSpec",
    "ModelConfig",
    "AcousticModel",
    "DeepSpeech2",
    "DeepSpeech1",
    "BatchRNN",
    "Lookahead",
    "MaskedBatchNorm1d",
    "MaskedBatchNorm2d",
    "build_model",
    "count_parameters",
    "forward_flops",
    "conv_out_size",
    "time_mask",
    "reverse_index",
    "describe_architecture",
]

if __name__ == "__main__":
    sys.exit(main())
