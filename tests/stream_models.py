"""Tiny random models and generated audio for the streaming and server tests.

The models are untrained (their text is gibberish) but deterministic for a seed; their
BatchNorm statistics and head are randomised so that the text changes along the audio.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch

from checkpoint import Checkpoint, save_checkpoint
from data.audio import AudioConfig, frame_signal, stft_magnitude, with_feature_stats
from model import ModelConfig, build_model

LABELS = list("_'ABCDEFGHIJKLMNOPQRSTUVWXYZ ")


def speechlike(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Float32 audio in [-1, 1]: gliding tones and noise bursts separated by short pauses."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    out = np.zeros(n, dtype=np.float64)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.05, 0.3) * sample_rate)
        t = np.arange(min(length, n - pos)) / sample_rate
        kind = rng.integers(3)
        if kind == 0:
            f0, f1 = rng.uniform(100, 3000, size=2)
            seg = 0.4 * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) * t**2 / max(t[-1], 1e-3))) if len(t) else t
        elif kind == 1:
            seg = 0.2 * rng.standard_normal(len(t))
        else:
            seg = 0.003 * rng.standard_normal(len(t))
        out[pos : pos + len(t)] = seg
        pos += len(t)
    return np.clip(out, -1, 1).astype(np.float32)


@cache
def global_audio_config(sample_rate: int = 16000) -> AudioConfig:
    """AudioConfig(normalize='global') with statistics measured on generated audio."""
    base = AudioConfig(sample_rate=sample_rate, normalize="none")
    feats = np.concatenate(
        [stft_magnitude(frame_signal(speechlike(2.0, sample_rate, seed), base), base) for seed in range(3)], axis=1
    )
    return with_feature_stats(base, feats.mean(axis=1), feats.std(axis=1))


def randomize(model: torch.nn.Module, audio_config: AudioConfig, seed: int, head_gain: float = 3.0) -> torch.nn.Module:
    """Calibrate the BatchNorm statistics on generated audio (so every layer's output varies
    from frame to frame) with random affine parameters, and sharpen the head."""
    from data.audio import spectrogram

    gen = torch.Generator().manual_seed(seed + 1000)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=gen))
        feats = [spectrogram(speechlike(1.5, audio_config.sample_rate, seed + 100 + i), audio_config) for i in range(2)]
        x = torch.from_numpy(np.stack(feats))[:, None]
        model.train()
        model(x, torch.tensor([f.shape[1] for f in feats]))
        for m in norms:
            m.momentum = 0.1
        head = getattr(model, "head", None)
        if head is not None:
            head.weight.mul_(head_gain)
    return model.eval()


def tiny_stream_model(seed: int = 0, normalize: str = "global", **overrides) -> tuple[torch.nn.Module, AudioConfig]:
    """A tiny unidirectional DS2 (eval mode) and its AudioConfig."""
    kw = dict(hidden_size=16, hidden_layers=2, conv_channels=4, rnn_type="lstm", lookahead_context=3)
    kw.update(overrides)
    torch.manual_seed(seed)
    audio_config = global_audio_config() if normalize == "global" else AudioConfig(normalize=normalize)
    return randomize(build_model(ModelConfig(bidirectional=False, **kw)), audio_config, seed), audio_config


def tiny_offline_model(seed: int = 0) -> tuple[torch.nn.Module, AudioConfig]:
    """A tiny bidirectional DS2 with per-utterance normalisation (not streamable)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden_size=16, hidden_layers=1, conv_channels=4, rnn_type="lstm")
    return randomize(build_model(cfg), AudioConfig(), seed), AudioConfig()


def random_chunks(rng: np.random.Generator, n: int, style: str) -> list[tuple[int, int]]:
    """Chunk bounds covering [0, n): 'mixed' (empty, sub-hop, 10 ms ... 2 s), 'tiny' (< one 160-sample hop)."""
    bounds, pos = [], 0
    while pos < n:
        if style == "tiny":
            size = int(rng.integers(0, 160))
        else:
            r = rng.random()
            size = (
                int(rng.integers(0, 160))
                if r < 0.3
                else int(rng.integers(160, 3200))
                if r < 0.8
                else int(rng.integers(3200, 32001))
            )
        bounds.append((pos, min(n, pos + size)))
        pos += size
    return bounds


def save_model(path: Path, model: torch.nn.Module, audio_config: AudioConfig) -> Path:
    return save_checkpoint(path, Checkpoint.from_model(model, audio_config, LABELS))
