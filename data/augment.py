"""Training-time data augmentation: speed/volume perturbation, noise mixing, SpecAugment.

Only the training dataset gets augmentation (validation and test never do), and the
settings are never saved as part of the model. Every random choice comes from an
explicit :class:`numpy.random.Generator`; :class:`data.data_loader.SpectrogramDataset`
seeds it from ``(seed, epoch, index)``, so an augmented epoch is the same whatever the
number of DataLoader workers and an interrupted run resumes exactly.

Order (deepspeech.pytorch's, PEERS.md §1.3): speed + gain (waveform) -> noise
(waveform) -> spectrogram (with its normalisation) -> SpecAugment masks.

* Speed perturbation resamples the waveform (Kaldi-style "speed", not sox "tempo"):
  a factor ``f`` makes the utterance ``1/f`` as long and scales every frequency by
  ``f``. deepspeech.pytorch's sox call needed the sox binary and a temp file per
  utterance; this is pure numpy/scipy.
* Gain multiplies by ``10 ** (dB / 20)``; nothing is clipped (the features are float).
* Noise uses deepspeech.pytorch's semantics, which its ``--noise-min/--noise-max``
  flags expose: a level ``L ~ U(noise_min, noise_max)`` and
  ``audio + L * rms(audio) / rms(noise_segment) * noise_segment``, so the added noise
  has ``L`` times the speech RMS, i.e. an SNR of ``-20 * log10(L)`` dB
  (L = 0.5 -> 6.0 dB, L = 0.1 -> 20 dB, L = 0 -> no noise). It is applied with
  probability ``noise_prob``. (deepspeech.pytorch's own noise injection is broken at
  V3; this one is tested.)
* SpecAugment (Park et al. 2019) without time warping: ``n_freq_masks`` bands of
  ``U{0..freq_mask_width}`` frequency bins and ``n_time_masks`` spans of
  ``U{0..min(time_mask_width, time_mask_max_fraction * T)}`` frames are set to 0,
  which is the mean of the normalised features.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from data.audio import AudioError, load_audio, probe_audio, resample

NOISE_EXTENSIONS = (".wav", ".flac", ".ogg")
"""Files under ``--noise-dir`` with these suffixes (any case) are used as noise."""

SPEED_MAX_DENOMINATOR = 100
"""Speed factors are applied as the nearest fraction p/q with q <= this (error < 1e-4)."""


@dataclass(frozen=True)
class AugmentConfig:
    """What augmentation the training set gets. Plain data (``asdict`` is JSON-able).

    Attributes:
        speed_volume_perturb: speed factor ~ U(speed_range) and gain ~ U(gain_range_db).
        speed_range: (min, max) speed factors; 1.1 = 10 % faster and shorter.
        gain_range_db: (min, max) gain in dB.
        spec_augment: apply frequency and time masks to the spectrogram.
        freq_mask_width: widest frequency mask, in bins (of 161 at the default config).
        n_freq_masks: frequency masks per utterance.
        time_mask_width: widest time mask, in frames (10 ms each by default).
        time_mask_max_fraction: a time mask never covers more than this fraction of T.
        n_time_masks: time masks per utterance.
        noise_dir: folder of noise recordings (wav/flac/ogg, searched recursively).
        noise_prob: probability that an utterance gets noise.
        noise_min, noise_max: noise level range, relative to the speech RMS (see the
            module docstring; level L means an SNR of -20*log10(L) dB).
    """

    speed_volume_perturb: bool = False
    speed_range: tuple[float, float] = (0.9, 1.1)
    gain_range_db: tuple[float, float] = (-6.0, 8.0)
    spec_augment: bool = False
    freq_mask_width: int = 27
    n_freq_masks: int = 1
    time_mask_width: int = 70
    time_mask_max_fraction: float = 0.2
    n_time_masks: int = 1
    noise_dir: str | None = None
    noise_prob: float = 0.4
    noise_min: float = 0.0
    noise_max: float = 0.5

    def __post_init__(self) -> None:
        # Lists (e.g. from JSON) become tuples so the config stays hashable and comparable.
        object.__setattr__(self, "speed_range", tuple(float(v) for v in self.speed_range))
        object.__setattr__(self, "gain_range_db", tuple(float(v) for v in self.gain_range_db))
        if self.noise_dir is not None:
            object.__setattr__(self, "noise_dir", str(self.noise_dir))
        if len(self.speed_range) != 2 or not 0 < self.speed_range[0] <= self.speed_range[1]:
            raise ValueError(f"speed_range must be (min, max) with 0 < min <= max, got {self.speed_range}")
        if len(self.gain_range_db) != 2 or self.gain_range_db[0] > self.gain_range_db[1]:
            raise ValueError(f"gain_range_db must be (min, max) with min <= max, got {self.gain_range_db}")
        for name in ("freq_mask_width", "n_freq_masks", "time_mask_width", "n_time_masks"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)}")
        if not 0.0 <= self.time_mask_max_fraction <= 1.0:
            raise ValueError(f"time_mask_max_fraction must be in [0, 1], got {self.time_mask_max_fraction}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        if not 0.0 <= self.noise_min <= self.noise_max:
            raise ValueError(
                f"noise levels must satisfy 0 <= noise_min <= noise_max, got {self.noise_min}, {self.noise_max}"
            )

    @property
    def enabled(self) -> bool:
        """True when any augmentation is switched on."""
        return self.speed_volume_perturb or self.spec_augment or self.noise_dir is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        return cls(**d)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "AugmentConfig":
        """The config selected by the flags of :func:`add_augment_args`."""
        return cls(
            speed_volume_perturb=args.augment,
            spec_augment=args.spec_augment,
            noise_dir=None if args.noise_dir is None else str(args.noise_dir),
            noise_prob=args.noise_prob,
            noise_min=args.noise_min,
            noise_max=args.noise_max,
        )


def add_augment_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add deepspeech.pytorch's augmentation flags (training only) to ``parser``."""
    defaults = {f.name: f.default for f in fields(AugmentConfig)}
    group = parser.add_argument_group("augmentation (training set only)")
    group.add_argument(
        "--augment", action="store_true",
        help=f"speed perturbation U{defaults['speed_range']} and gain U{defaults['gain_range_db']} dB",
    )
    group.add_argument("--spec-augment", action="store_true", help="SpecAugment frequency and time masks")
    group.add_argument("--noise-dir", type=Path, default=None,
                       help="folder of noise recordings (wav/flac/ogg) mixed into training audio")
    group.add_argument("--noise-prob", type=float, default=defaults["noise_prob"],
                       help="probability of adding noise to an utterance")
    group.add_argument("--noise-min", type=float, default=defaults["noise_min"],
                       help="minimum noise level, relative to the speech RMS (SNR = -20*log10(level) dB)")
    group.add_argument("--noise-max", type=float, default=defaults["noise_max"],
                       help="maximum noise level, relative to the speech RMS (0.5 = 6 dB SNR)")
    return parser


# ---------------------------------------------------------------------------- waveform


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster by resampling.

    Args:
        audio: (n,) float waveform.
        factor: > 0; applied as the nearest fraction p/q (q <= 100).

    Returns:
        (ceil(n * q / p),) float32: about ``n / factor`` samples, every frequency
        multiplied by ``factor`` when played at the original rate.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    ratio = Fraction(factor).limit_denominator(SPEED_MAX_DENOMINATOR)
    # Treat the samples as recorded at p/q times the rate and resample back to 1.
    audio = np.asarray(audio, dtype=np.float32)
    out = resample(audio, ratio.numerator, ratio.denominator)
    return audio.copy() if out is audio else out


def apply_gain(audio: np.ndarray, db: float) -> np.ndarray:
    """``audio * 10 ** (db / 20)`` as float32 (no clipping). Shape unchanged."""
    return (np.asarray(audio, dtype=np.float32) * np.float32(10.0 ** (db / 20.0))).astype(np.float32)


def noise_segment(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample stretch of ``noise``; a shorter noise is looped.

    Returns:
        (n,) float32.
    """
    if noise.size == 0:
        raise ValueError("noise holds no samples")
    if noise.size >= n:
        start = int(rng.integers(0, noise.size - n + 1))
        return np.asarray(noise[start:start + n], dtype=np.float32)
    start = int(rng.integers(0, noise.size))
    return np.asarray(noise[(start + np.arange(n)) % noise.size], dtype=np.float32)


def mix_noise(audio: np.ndarray, noise: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Add a random segment of ``noise`` at ``level`` times the speech RMS.

    ``audio + level * rms(audio) / rms(segment) * segment``: the result has an SNR of
    exactly ``-20 * log10(level)`` dB (``snr_to_level`` converts). Silent audio or a
    silent segment leaves ``audio`` unchanged.

    Args:
        audio: (n,) float waveform at the model's sample rate.
        noise: (m,) float waveform at the same rate; looped when m < n.
        level: >= 0, noise RMS relative to the speech RMS.
        rng: picks the segment.

    Returns:
        (n,) float32.
    """
    if level < 0:
        raise ValueError(f"noise level must be >= 0, got {level}")
    audio = np.asarray(audio, dtype=np.float32)
    segment = noise_segment(noise, audio.size, rng)
    speech_rms, noise_rms = _rms(audio), _rms(segment)
    if level == 0 or speech_rms == 0 or noise_rms == 0:
        return audio.copy()
    return (audio + np.float32(level * speech_rms / noise_rms) * segment).astype(np.float32)


def snr_to_level(snr_db: float) -> float:
    """Noise level (relative RMS, as in ``--noise-min/--noise-max``) for an SNR in dB."""
    return 10.0 ** (-snr_db / 20.0)


def level_to_snr(level: float) -> float:
    """SNR in dB that a noise level (relative RMS) gives; ``inf`` for 0."""
    return math.inf if level == 0 else -20.0 * math.log10(level)


class NoiseBank:
    """The noise recordings under a folder, decoded on first use and cached.

    Files are found recursively by suffix (:data:`NOISE_EXTENSIONS`) and their
    headers checked at construction, so a bad folder or file fails before training
    starts. Audio is read with ``load_audio`` (mono, resampled to ``sample_rate``).
    """

    def __init__(self, noise_dir: str | Path, sample_rate: int) -> None:
        self.noise_dir = Path(noise_dir)
        self.sample_rate = sample_rate
        if not self.noise_dir.is_dir():
            raise FileNotFoundError(f"{self.noise_dir}: noise folder not found (--noise-dir)")
        self.paths = sorted(
            p for p in self.noise_dir.rglob("*") if p.is_file() and p.suffix.lower() in NOISE_EXTENSIONS
        )
        if not self.paths:
            raise FileNotFoundError(
                f"{self.noise_dir}: no noise audio found (looked for {', '.join(NOISE_EXTENSIONS)} files, "
                "recursively); point --noise-dir at a folder of noise recordings"
            )
        for path in self.paths:
            try:
                probe_audio(path)
            except AudioError as e:
                raise AudioError(f"{e} (a noise file: remove it from --noise-dir)") from None
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> np.ndarray:
        """Noise file ``i`` as (m,) float32 at ``sample_rate``."""
        if i not in self._cache:
            self._cache[i] = load_audio(self.paths[i], self.sample_rate)
        return self._cache[i]

    def pick(self, rng: np.random.Generator) -> np.ndarray:
        """A noise recording chosen uniformly with ``rng``."""
        return self.get(int(rng.integers(0, len(self.paths))))


# ---------------------------------------------------------------------------- spectrogram


def spec_augment(
    spect: torch.Tensor,
    rng: np.random.Generator,
    freq_mask_width: int = 27,
    n_freq_masks: int = 1,
    time_mask_width: int = 70,
    n_time_masks: int = 1,
    time_mask_max_fraction: float = 0.2,
) -> torch.Tensor:
    """SpecAugment frequency and time masks (no time warping).

    Each frequency mask zeroes ``f ~ U{0..min(freq_mask_width, F)}`` consecutive bins
    starting at ``U{0..F-f}``; each time mask zeroes ``t ~ U{0..min(time_mask_width,
    floor(time_mask_max_fraction * T))}`` consecutive frames starting at ``U{0..T-t}``.
    Masks may overlap. 0 is the mean of normalised features.

    Args:
        spect: (F, T) spectrogram; not modified.
        rng: source of all widths and positions.

    Returns:
        (F, T) masked copy.
    """
    out = spect.clone()
    n_freq, n_time = out.shape
    max_f = min(freq_mask_width, n_freq)
    for _ in range(n_freq_masks):
        f = int(rng.integers(0, max_f + 1))
        f0 = int(rng.integers(0, n_freq - f + 1))
        out[f0:f0 + f, :] = 0
    max_t = min(time_mask_width, int(time_mask_max_fraction * n_time))
    for _ in range(n_time_masks):
        t = int(rng.integers(0, max_t + 1))
        t0 = int(rng.integers(0, n_time - t + 1))
        out[:, t0:t0 + t] = 0
    return out


# ---------------------------------------------------------------------------- pipeline


class Augmentor:
    """Applies an :class:`AugmentConfig` to one utterance, in deepspeech.pytorch's order.

    ``rng_for(seed, epoch, index)`` gives the three independent generators (waveform,
    noise, masks) for one utterance, so switching one augmentation on or off does not
    change the random draws of another.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int) -> None:
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.noise = NoiseBank(cfg.noise_dir, sample_rate) if cfg.noise_dir is not None else None

    @staticmethod
    def rngs_for(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, ...]:
        """(speed/gain, noise, SpecAugment) generators for one utterance in one epoch."""
        key = [seed % 2**64, epoch % 2**64, index % 2**64]
        return tuple(np.random.default_rng(key + [stream]) for stream in range(3))

    def waveform(self, audio: np.ndarray, rngs: tuple[np.random.Generator, ...]) -> np.ndarray:
        """Speed, gain, then noise. ``audio`` (n,) is never modified; returns (n',) float32."""
        cfg = self.cfg
        if cfg.speed_volume_perturb:
            rng = rngs[0]
            factor = float(rng.uniform(*cfg.speed_range))
            db = float(rng.uniform(*cfg.gain_range_db))
            audio = apply_gain(speed_perturb(audio, factor), db)
        if self.noise is not None:
            rng = rngs[1]
            if rng.random() < cfg.noise_prob:
                level = float(rng.uniform(cfg.noise_min, cfg.noise_max))
                audio = mix_noise(audio, self.noise.pick(rng), level, rng)
        return audio

    def spectrogram(self, spect: torch.Tensor, rngs: tuple[np.random.Generator, ...]) -> torch.Tensor:
        """SpecAugment masks on a (F, T) normalised spectrogram (a copy when enabled)."""
        cfg = self.cfg
        if not cfg.spec_augment:
            return spect
        return spec_augment(
            spect,
            rngs[2],
            freq_mask_width=cfg.freq_mask_width,
            n_freq_masks=cfg.n_freq_masks,
            time_mask_width=cfg.time_mask_width,
            n_time_masks=cfg.n_time_masks,
            time_mask_max_fraction=cfg.time_mask_max_fraction,
        )


__all__ = [
    "AugmentConfig",
    "Augmentor",
    "NoiseBank",
    "NOISE_EXTENSIONS",
    "add_augment_args",
    "apply_gain",
    "level_to_snr",
    "mix_noise",
    "noise_segment",
    "snr_to_level",
    "spec_augment",
    "speed_perturb",
]
