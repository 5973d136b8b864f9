"""Audio front end without PyTorch: the feature config, audio loading and spectrograms.

Everything that shapes the model's input features lives here, once, in numpy and scipy,
so training, evaluation, the ONNX path and streaming compute the same features:

* :class:`AudioConfig` defines the features; ``n_fft``, ``hop_length`` and ``n_freq`` are
  derived from it, never typed elsewhere. It is saved in every checkpoint.
* :func:`probe_audio` reads a file's header (the one place that checks a file is usable
  audio without decoding it); :func:`load_audio` decodes any soundfile format, sample
  rate and channel count to mono float32 at the requested rate.
* :func:`spectrogram` computes the features.

Features (deepspeech.pytorch's pipeline, with its ambiguities fixed): |STFT| with
n_fft = win_length = sample_rate * window_size (320), hop = sample_rate * window_stride
(160), a **periodic** window (what ``scipy.signal.get_window('hamming', N)`` and
deepspeech.pytorch V3 give), ``center=True`` with **zero** padding of n_fft // 2 samples
on both sides (librosa >= 0.9's default), then ``log1p`` and a normalisation:

Optionally (``remove_dc``, off by default) the waveform's mean is first subtracted: a
microphone's DC offset otherwise counts as speech energy in the level and the lowest bins.
It needs the whole utterance, so a model that uses it cannot stream.

Optionally (``level_db``, off by default) the waveform is then scaled so that its speech
level, the 95th percentile of its 10 ms frame energies (:func:`speech_level_db`), is
``level_db`` dBFS: ``log1p`` compresses quiet audio differently from loud audio, so no
normalisation after it makes the features independent of the recording level; this does.
It needs the whole utterance, so a model that uses it cannot stream.

* ``utterance``: one scalar mean and (unbiased) standard deviation over the utterance;
* ``global``: per-frequency mean and standard deviation measured on the training set and
  stored in the config (needed for streaming, where the whole utterance is not known);
* ``none``: no normalisation.

Shape: (n_freq, 1 + n_samples // hop).

Three :class:`AudioConfig` fields exist to reproduce models trained elsewhere (see
dspt_import.py); their defaults give the definition above. ``window_periodic=False``:
a symmetric window (deepspeech.pytorch v2 called ``scipy.signal.hamming(N)``);
``pad_mode="reflect"``: librosa < 0.9's centre padding; ``int16_divisor=32767``: v2
read 16-bit PCM as int / 32767 where :func:`load_audio` gives int / 32768, so
:func:`spectrogram` rescales the waveform.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.fft
import soundfile as sf

from utils import dataclass_from_dict

WINDOWS = ("hamming", "hann", "blackman", "bartlett")
NORMALIZATIONS = ("utterance", "global", "none")
PAD_MODES = ("constant", "reflect")
INT16_DIVISORS = (32768, 32767)


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class AudioConfig:
    """Everything that defines the features. Saved in every checkpoint.

    ``feature_mean``/``feature_std`` (one value per frequency bin) are set only with
    ``normalize="global"``; train.py measures them on the training set.
    """

    sample_rate: int = 16000
    window_size: float = 0.02  # seconds
    window_stride: float = 0.01  # seconds
    window: str = "hamming"
    normalize: str = "utterance"
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None
    window_periodic: bool = True  # False: symmetric window (deepspeech.pytorch v2)
    pad_mode: str = "constant"  # STFT centre padding: "constant" (zeros) | "reflect" (librosa < 0.9)
    int16_divisor: int = 32768  # 16-bit PCM sample -> float: int / this (deepspeech.pytorch v2: 32767)
    level_db: float | None = None  # speech level (dBFS) every utterance is scaled to before the features
    remove_dc: bool = False  # subtract each utterance's mean (a DC offset) before the level and the features

    def __post_init__(self) -> None:
        if self.normalize is True or self.normalize is False:  # format 1 checkpoints stored a bool
            object.__setattr__(self, "normalize", "utterance" if self.normalize else "none")
        for name in ("feature_mean", "feature_std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if type(self.sample_rate) is not int or self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {self.sample_rate!r}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {list(WINDOWS)}, got {self.window!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {list(NORMALIZATIONS)}, got {self.normalize!r}")
        if type(self.window_periodic) is not bool:
            raise ValueError(f"window_periodic must be True or False, got {self.window_periodic!r}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {list(PAD_MODES)}, got {self.pad_mode!r}")
        if type(self.int16_divisor) is not int or self.int16_divisor not in INT16_DIVISORS:
            raise ValueError(f"int16_divisor must be 32768 or 32767, got {self.int16_divisor!r}")
        if self.hop_length <= 0 or self.n_fft < 2 or self.hop_length > self.n_fft:
            raise ValueError(
                f"window_size {self.window_size} s and window_stride {self.window_stride} s "
                f"give n_fft={self.n_fft}, hop={self.hop_length} at {self.sample_rate} Hz; "
                "need 0 < hop <= n_fft"
            )
        if type(self.remove_dc) is not bool:
            raise ValueError(f"remove_dc must be True or False, got {self.remove_dc!r}")
        if self.level_db is not None:
            if type(self.level_db) not in (int, float) or not -80.0 <= self.level_db <= 0.0:
                raise ValueError(f"level_db must be a level in dBFS between -80 and 0, or None; got {self.level_db!r}")
            object.__setattr__(self, "level_db", float(self.level_db))
        stats = (self.feature_mean, self.feature_std)
        if self.normalize == "global":
            if any(s is None or len(s) != self.n_freq for s in stats):
                raise ValueError(f"normalize='global' needs feature_mean and feature_std of {self.n_freq} values")
            if min(self.feature_std) <= 0:
                raise ValueError("feature_std must be positive")
        elif any(s is not None for s in stats):
            raise ValueError(f"feature_mean/feature_std are only used with normalize='global', not {self.normalize!r}")

    @property
    def n_fft(self) -> int:
        """FFT size and window length in samples (320 at 16 kHz, 20 ms)."""
        return int(self.sample_rate * self.window_size)

    @property
    def hop_length(self) -> int:
        """Frame shift in samples (160 at 16 kHz, 10 ms)."""
        return int(self.sample_rate * self.window_stride)

    @property
    def n_freq(self) -> int:
        """Rows of the spectrogram, the model's input features (161)."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Spectrogram frames for ``n_samples`` of audio (``center=True``)."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "AudioConfig":
        """Build from a saved dict; unknown keys are an error (missing ones take the defaults)."""
        return dataclass_from_dict(cls, d)

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """The feature flags (train.py; stored in the model, so inference needs none)."""
        d = cls()
        g = parser.add_argument_group("audio features (stored in the model)")
        g.add_argument("--sample-rate", type=int, default=d.sample_rate, help="audio is resampled to this rate")
        g.add_argument("--window-size", type=float, default=d.window_size, help="STFT window in seconds")
        g.add_argument("--window-stride", type=float, default=d.window_stride, help="STFT hop in seconds")
        g.add_argument("--window", default=d.window, choices=WINDOWS, help="STFT window function")
        g.add_argument(
            "--normalize",
            default=d.normalize,
            choices=NORMALIZATIONS,
            help="feature normalisation: per-utterance scalar mean/std, per-frequency mean/std "
            "measured on the training set (streamable), or none",
        )
        g.add_argument(
            "--level-norm",
            action="store_true",
            help="scale every utterance to the training audio's speech level before the features "
            "(measured on the training set, stored in the model): level-independent features; not streamable",
        )
        g.add_argument(
            "--remove-dc",
            action="store_true",
            help="subtract each utterance's mean (a microphone's DC offset) before the features; not streamable",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "AudioConfig":
        """The config the flags of :meth:`add_args` select. With ``--normalize global`` the
        statistics are still to be measured (:func:`with_feature_stats`), and with
        ``--level-norm`` the level (:func:`median_speech_level_db`): this returns the config
        without them, which those measurements need."""
        normalize = "none" if args.normalize == "global" else args.normalize
        return cls(
            args.sample_rate,
            args.window_size,
            args.window_stride,
            args.window,
            normalize,
            remove_dc=bool(getattr(args, "remove_dc", False)),
        )


def with_feature_stats(cfg: AudioConfig, mean: np.ndarray, std: np.ndarray) -> AudioConfig:
    """``cfg`` with ``normalize='global'`` and the given per-frequency statistics."""
    std = np.maximum(np.asarray(std, dtype=np.float64), 1e-5)
    return replace(
        cfg, normalize="global", feature_mean=tuple(np.asarray(mean, dtype=np.float64).tolist()), feature_std=tuple(std.tolist())
    )


# ---------------------------------------------------------------------------- audio files


class AudioInfo(NamedTuple):
    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe_audio(path: str | Path) -> AudioInfo:
    """Header of an audio file, without decoding it.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: empty file, unreadable or not audio, or no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes); re-create or remove it")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(
            f"{path}: cannot read audio ({e}). Convert it to WAV, FLAC or OGG (e.g. 16 kHz mono 16-bit WAV)."
        ) from None
    if info.frames <= 0:
        raise AudioError(f"{path}: audio file holds no samples")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def resampled_length(n_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples :func:`resample` returns: ceil(n * target / source)."""
    return -(-n_samples * target_sr // orig_sr)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) along the first axis."""
    if orig_sr == target_sr:
        return audio
    from scipy.signal import resample_poly

    ratio = Fraction(target_sr, orig_sr)
    return resample_poly(audio, ratio.numerator, ratio.denominator, axis=0).astype(np.float32)


def to_mono(audio: np.ndarray, orig_sr: int, sample_rate: int, source: str | Path = "<audio>") -> np.ndarray:
    """(n,) or (n, channels) float audio at ``orig_sr`` -> (n',) float32 mono at ``sample_rate``."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if audio.ndim != 1 or audio.shape[0] == 0:
        raise AudioError(f"{source}: audio holds no samples")
    audio = resample(audio, orig_sr, sample_rate)
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{source}: audio holds NaN or infinite samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    Any format soundfile reads (WAV, FLAC, OGG, MP3, ...; 8/16/24/32-bit integer or
    float), any sample rate (resampled) and any channel count (averaged).

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: the file is empty, unreadable, not audio, holds no samples, or
            holds NaN/infinite samples.
    """
    path = Path(path)
    probe_audio(path)
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e}); the file is damaged. Re-create or remove it.") from None
    return to_mono(audio, sr, sample_rate, path)


def read_audio_bytes(data: bytes, sample_rate: int = 16000, source: str = "<upload>") -> np.ndarray:
    """Like :func:`load_audio`, for the bytes of an audio file (uploads)."""
    import io

    if not data:
        raise AudioError(f"{source}: empty audio")
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{source}: cannot read audio ({e}); send WAV, FLAC, OGG or MP3") from None
    return to_mono(audio, sr, sample_rate, source)


# ---------------------------------------------------------------------------- features


def _window(cfg: AudioConfig) -> np.ndarray:
    """The window of length n_fft (float32): periodic (``scipy.signal.get_window``'s), or
    symmetric with ``window_periodic=False`` (``scipy.signal.get_window(name, n, fftbins=False)``).
    Computed once per setting: every spectrogram and streaming chunk uses it."""
    return _window_table(cfg.window, cfg.n_fft, cfg.window_periodic)


@functools.lru_cache(maxsize=16)
def _window_table(name: str, n: int, periodic: bool) -> np.ndarray:
    k = np.arange(n, dtype=np.float64)
    d = n if periodic else n - 1  # a symmetric window's period is one sample shorter
    if name == "bartlett":
        w = 1.0 - np.abs(2.0 * k / d - 1.0)
    else:
        a = {"hamming": (0.54, 0.46, 0.0), "hann": (0.5, 0.5, 0.0), "blackman": (0.42, 0.5, 0.08)}[name]
        w = a[0] - a[1] * np.cos(2 * np.pi * k / d) + a[2] * np.cos(4 * np.pi * k / d)
    w = w.astype(np.float32)
    w.flags.writeable = False  # shared by every caller
    return w


def rescale_pcm(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Loaded audio (16-bit PCM as int / 32768) as ``cfg.int16_divisor`` expects it."""
    if cfg.int16_divisor == 32768:
        return audio
    # x * 32768 is exact, so 16-bit PCM becomes int / int16_divisor correctly rounded
    return audio * np.float32(32768) / np.float32(cfg.int16_divisor)


def stft_magnitude(frames: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """(T, n_fft) windowless frames -> (n_freq, T) float32 ``log1p(|FFT(frame * window)|)``.

    scipy's FFT, several times faster than numpy's on these short frames (``bench/bench_features.py``
    compares both)."""
    spect = np.abs(scipy.fft.rfft(frames * _window(cfg), axis=1))
    np.log1p(spect, out=spect)
    return spect.T


def frame_signal(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """(n,) audio -> (1 + n // hop, n_fft) frames of the centred signal, padded with n_fft // 2
    zeros on both sides, or with its reflection (``pad_mode="reflect"``, which needs more
    than n_fft // 2 samples, as in torch.stft)."""
    n_fft, hop = cfg.n_fft, cfg.hop_length
    audio = np.asarray(audio, dtype=np.float32)
    if cfg.pad_mode == "reflect" and len(audio) <= n_fft // 2:
        raise ValueError(f"reflect padding needs more than {n_fft // 2} samples, got {len(audio)}")
    padded = np.pad(audio, (n_fft // 2, n_fft // 2), mode=cfg.pad_mode)
    n_frames = 1 + (len(padded) - n_fft) // hop
    return np.lib.stride_tricks.as_strided(
        padded, (n_frames, n_fft), (padded.strides[0] * hop, padded.strides[0]), writeable=False
    )


def normalize_features(spect: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Apply ``cfg.normalize`` to a (n_freq, T) ``log1p`` magnitude spectrogram."""
    if cfg.normalize == "global":
        mean = np.asarray(cfg.feature_mean, dtype=np.float32)[:, None]
        std = np.asarray(cfg.feature_std, dtype=np.float32)[:, None]
        return ((spect - mean) / std).astype(np.float32)
    if cfg.normalize == "utterance":
        mean = spect.mean(dtype=np.float64)
        std = spect.std(ddof=1, dtype=np.float64) if spect.size > 1 else 0.0
        spect = (spect - mean) / (std + 1e-10) if std > 0 else spect - mean
        return spect.astype(np.float32)
    return spect


LEVEL_PERCENTILE = 95.0
"""The percentile of 10 ms frame energies that :func:`speech_level_db` calls the speech level."""
SILENCE_DB = -100.0
"""Audio whose speech level is below this (dBFS) is digital silence: :func:`normalize_level` leaves it."""


def frame_levels_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Energy (dBFS) of each whole 10 ms frame of ``audio`` (one frame if it is shorter)."""
    hop = max(1, sample_rate // 100)
    n = max(1, len(audio) // hop)
    frames = np.pad(audio, (0, max(0, n * hop - len(audio))))[: n * hop].reshape(n, hop).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def speech_level_db(audio: np.ndarray, sample_rate: int) -> float:
    """Speech level of an utterance, dBFS: the 95th percentile of its 10 ms frame energies
    (the loud frames, whatever the share of silence around them)."""
    return float(np.percentile(frame_levels_db(audio, sample_rate), LEVEL_PERCENTILE))


LEVEL_FILES = 2000
"""At most this many files, spread evenly over a corpus, give :func:`median_speech_level_db`."""


def median_speech_level_db(paths, sample_rate: int, skip_unreadable: bool = False) -> float:
    """A corpus's speech level: the median :func:`speech_level_db` of up to :data:`LEVEL_FILES`
    of the audio files ``paths``, spread evenly over them. With ``skip_unreadable`` a file that
    cannot be loaded is left out instead of raising.

    Raises:
        ValueError: no file could be measured.
    """
    from data.manifest import spread_evenly

    levels = []
    for path in spread_evenly(list(paths), LEVEL_FILES):
        try:
            levels.append(speech_level_db(load_audio(path, sample_rate), sample_rate))
        except (AudioError, OSError):
            if not skip_unreadable:
                raise
    if not levels:
        raise ValueError("no readable audio to measure the speech level on")
    return float(np.median(levels))


def normalize_level(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """``audio`` scaled so its :func:`speech_level_db` is ``cfg.level_db`` (unchanged when that
    is None, or when the audio is digital silence)."""
    if cfg.level_db is None:
        return audio
    level = speech_level_db(audio, cfg.sample_rate)
    if level < SILENCE_DB:
        return audio
    return (audio * np.float32(10.0 ** ((cfg.level_db - level) / 20.0))).astype(np.float32)


def spectrogram(audio: np.ndarray, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Normalised log-magnitude spectrogram, float32 of shape (cfg.n_freq, cfg.n_frames(len(audio))).

    ``audio`` is (n,) mono float at ``cfg.sample_rate`` as :func:`load_audio` returns it
    (16-bit PCM as int / 32768); see the module docstring.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"spectrogram expects mono audio of shape (n_samples,), got {audio.shape}")
    audio = rescale_pcm(audio, cfg)
    if cfg.remove_dc and audio.size:
        audio = (audio - audio.mean(dtype=np.float64)).astype(np.float32)
    audio = normalize_level(audio, cfg)
    return normalize_features(stft_magnitude(frame_signal(audio, cfg), cfg), cfg)
