"""Seeded signal corruptions: the recording conditions a deployed model meets.

Used by ``robustness.py`` (a corrupted copy of a manifest per condition) and by
:mod:`data.augment` (training-time augmentation), so there is one implementation of each.
Pure numpy/scipy; no torch.

Contract of every function here:

* ``audio`` is mono, 1-D, any float dtype; it is never modified (a new array is returned).
* The result is float32 at the **same sample rate** and of the **same length** as the input,
  except :func:`trim_silence` (a slice: shorter or equal), :func:`pad_silence` (longer by
  the silence added) and the noise generators (which take a length).
* Randomness comes only from an explicit ``np.random.Generator`` (or explicit
  parameters), so a corruption is a function of its seed.
* Nothing is clipped or rescaled unless the function says so (:func:`hard_clip`,
  :func:`quantize`, :func:`telephone`): float audio may leave [-1, 1].

Levels and SNRs are measured over the whole array (silence included), in dB:
``snr = 10 * log10(sum(speech**2) / sum(noise**2))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import fft, signal

SPEED_OF_SOUND = 343.0
"""m/s, at about 20 degrees C."""

SABINE = 0.161
"""Sabine's constant in s/m: RT60 = 0.161 * V / A (V in m^3, A in m^2 of absorption)."""


def _f32(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n,), got {x.shape}")
    return x.astype(np.float32, copy=True)


def rms(x: np.ndarray) -> float:
    """Root mean square (float64 accumulation); 0 for an empty array."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if np.size(x) else 0.0


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR of ``noisy`` against ``clean`` (same length): ``10 log10(E_clean / E_noisy-clean)``."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    e_noise = float(np.sum(noise**2))
    return math.inf if e_noise == 0 else 10.0 * math.log10(float(np.sum(clean**2)) / e_noise)


# ---------------------------------------------------------------------------- level


def gain(audio: np.ndarray, db: float) -> np.ndarray:
    """``audio * 10 ** (db / 20)``; no clipping."""
    return (_f32(audio) * np.float32(10.0 ** (db / 20.0))).astype(np.float32)


def random_gain(audio: np.ndarray, rng: np.random.Generator, min_db: float = -6.0, max_db: float = 6.0) -> np.ndarray:
    """:func:`gain` by ``U(min_db, max_db)`` dB."""
    if min_db > max_db:
        raise ValueError(f"need min_db <= max_db, got {min_db}, {max_db}")
    return gain(audio, float(rng.uniform(min_db, max_db)))


def quantize(audio: np.ndarray, bits: int = 16) -> np.ndarray:
    """Round to a ``bits``-bit integer grid on [-1, 1) (what writing PCM does), clipping
    at full scale."""
    if not 2 <= bits <= 32:
        raise ValueError(f"bits must be in [2, 32], got {bits}")
    scale = float(2 ** (bits - 1))
    q = np.clip(np.round(_f32(audio).astype(np.float64) * scale), -scale, scale - 1)
    return (q / scale).astype(np.float32)


def hard_clip(audio: np.ndarray, threshold: float) -> np.ndarray:
    """Clip samples to ``[-threshold, threshold]`` (an overdriven amplifier or converter)."""
    if threshold <= 0:
        raise ValueError(f"clipping threshold must be positive, got {threshold}")
    return np.clip(_f32(audio), -threshold, threshold).astype(np.float32)


def clip_threshold(audio: np.ndarray, fraction: float) -> float:
    """The amplitude that ``fraction`` of the samples exceed (in magnitude)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    return float(np.quantile(np.abs(np.asarray(audio, dtype=np.float64)), 1.0 - fraction))


def clip_fraction(audio: np.ndarray, fraction: float) -> np.ndarray:
    """:func:`hard_clip` at the level that clips the loudest ``fraction`` of the samples.
    Silent audio is returned unchanged."""
    threshold = clip_threshold(audio, fraction)
    return hard_clip(audio, threshold) if threshold > 0 else _f32(audio)


# ---------------------------------------------------------------------------- noise


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 Gaussian white noise with unit variance."""
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 pink (1/f power, -3 dB per octave) noise with unit RMS.

    Complex Gaussian spectrum shaped by ``1/sqrt(f)`` (DC removed), inverse FFT.
    """
    if n <= 0:
        return np.zeros(max(n, 0), dtype=np.float32)
    n_fft = fft.next_fast_len(n, real=True)
    k = np.arange(n_fft // 2 + 1)
    spectrum = rng.standard_normal(k.size) + 1j * rng.standard_normal(k.size)
    spectrum[1:] /= np.sqrt(k[1:])
    spectrum[0] = 0.0
    x = fft.irfft(spectrum, n_fft)[:n]
    r = rms(x)
    return (x / r if r > 0 else x).astype(np.float32)


def babble_like_noise(n: int, sample_rate: int, rng: np.random.Generator, n_talkers: int = 6) -> np.ndarray:
    """(n,) float32 unit-RMS noise that sounds like distant chatter, from no recordings.

    ``n_talkers`` white noises, each amplitude-modulated by its own syllable-rate envelope
    (white noise low-passed at 4 Hz, half-wave rectified, computed at 100 Hz and
    interpolated), are summed and given a long-term speech spectrum: pink, band-limited
    to 100-4000 Hz (second-order Butterworth magnitudes), in one FFT.
    """
    if n <= 0:
        return np.zeros(max(n, 0), dtype=np.float32)
    hop = max(1, sample_rate // 100)
    n_env = n // hop + 2
    syllables = signal.butter(2, 4.0, btype="lowpass", fs=sample_rate / hop, output="sos")
    positions = np.arange(n) / hop
    mix = np.zeros(n)
    for _ in range(n_talkers):
        envelope = np.maximum(signal.sosfilt(syllables, rng.standard_normal(n_env)), 0.0)
        envelope /= rms(envelope) or 1.0
        mix += rng.standard_normal(n) * np.interp(positions, np.arange(n_env), envelope)
    n_fft = fft.next_fast_len(n, real=True)
    freqs = fft.rfftfreq(n_fft, 1.0 / sample_rate)
    high = min(4000.0, 0.45 * sample_rate)
    with np.errstate(divide="ignore"):
        shape = np.where(freqs > 0, 1.0 / np.sqrt(np.maximum(freqs, 1e-9)), 0.0)
        shape /= np.sqrt(1.0 + (100.0 / np.maximum(freqs, 1e-9)) ** 4) * np.sqrt(1.0 + (freqs / high) ** 4)
    x = fft.irfft(fft.rfft(mix, n_fft) * shape, n_fft)[:n]
    r = rms(x)
    return (x / r if r > 0 else x).astype(np.float32)


def noise_segment(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample stretch of ``noise``; a shorter noise is looped.

    Returns:
        (n,) float32.
    """
    noise = np.asarray(noise)
    if noise.size == 0:
        raise ValueError("noise holds no samples")
    if noise.size >= n:
        start = int(rng.integers(0, noise.size - n + 1))
        return np.array(noise[start : start + n], dtype=np.float32)
    start = int(rng.integers(0, noise.size))
    return np.asarray(noise[(start + np.arange(n)) % noise.size], dtype=np.float32)


def mix_at_snr(audio: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """``audio + g * noise`` with ``g`` chosen so that the result has SNR ``snr`` dB.

    ``noise`` has the length of ``audio``. ``snr = inf``, silent audio or silent noise
    return a copy of ``audio``.
    """
    audio = _f32(audio)
    noise = np.asarray(noise, dtype=np.float32)
    if noise.shape != audio.shape:
        raise ValueError(f"noise shape {noise.shape} does not match audio shape {audio.shape}")
    speech_rms, noise_rms = rms(audio), rms(noise)
    if math.isinf(snr) and snr > 0 or speech_rms == 0 or noise_rms == 0:
        return audio
    level = 10.0 ** (-snr / 20.0)
    return (audio + np.float32(level * speech_rms / noise_rms) * noise).astype(np.float32)


def add_noise(audio: np.ndarray, noise: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    """Mix a random stretch of ``noise`` (:func:`noise_segment`) at ``snr`` dB."""
    audio = np.asarray(audio)
    return mix_at_snr(audio, noise_segment(noise, audio.size, rng), snr)


def add_white_noise(audio: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at ``snr`` dB."""
    return mix_at_snr(audio, white_noise(np.size(audio), rng), snr)


def add_pink_noise(audio: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    """Pink noise at ``snr`` dB."""
    return mix_at_snr(audio, pink_noise(np.size(audio), rng), snr)


def babble(others: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 babble: the sum of the utterances ``others``, each brought to unit
    RMS and taken from a random offset (looped when shorter than ``n``).

    Silent utterances are left out; with none left the babble is silence.
    """
    out = np.zeros(n, dtype=np.float64)
    for other in others:
        segment = noise_segment(other, n, rng)
        r = rms(segment) or rms(other)
        if r > 0:
            out += segment / r
    return out.astype(np.float32)


def add_babble(audio: np.ndarray, others: Sequence[np.ndarray], snr: float, rng: np.random.Generator) -> np.ndarray:
    """Babble of the utterances ``others`` (other talkers, at the same sample rate) at ``snr`` dB."""
    if not others:
        raise ValueError("babble needs at least one other utterance")
    return mix_at_snr(audio, babble(others, np.size(audio), rng), snr)


# ---------------------------------------------------------------------------- telephone


def mu_law_encode(audio: np.ndarray, bits: int = 8, mu: float = 255.0) -> np.ndarray:
    """G.711-style mu-law codes: a sign bit and ``bits - 1`` bits of companded magnitude,
    ``(x < 0) * 2**(bits-1) + round(log1p(mu |x|) / log1p(mu) * (2**(bits-1) - 1))``, in
    ``[0, 2**bits - 1]`` (continuous companding law, not G.711's segments). The input is
    clipped to [-1, 1] first; 0 encodes to 0."""
    x = np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0)
    half = 2 ** (bits - 1)
    magnitude = np.round(np.log1p(mu * np.abs(x)) / math.log1p(mu) * (half - 1))
    return (np.where(x < 0, half, 0) + magnitude).astype(np.int64)


def mu_law_decode(codes: np.ndarray, bits: int = 8, mu: float = 255.0) -> np.ndarray:
    """Inverse of :func:`mu_law_encode`: float32 in [-1, 1]."""
    codes = np.asarray(codes, dtype=np.int64)
    half = 2 ** (bits - 1)
    magnitude = np.expm1((codes % half) / (half - 1) * math.log1p(mu)) / mu
    return np.where(codes >= half, -magnitude, magnitude).astype(np.float32)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


def telephone(
    audio: np.ndarray,
    sample_rate: int,
    codec_rate: int = 8000,
    band: tuple[float, float] | None = (300.0, 3400.0),
    bits: int | None = 8,
) -> np.ndarray:
    """A narrow-band telephone channel, back at ``sample_rate``.

    Resample to ``codec_rate`` (polyphase, anti-aliased), band-pass ``band`` Hz
    (4th-order Butterworth), ``bits``-bit mu-law encode and decode (clips at full scale),
    then back to ``sample_rate`` by FFT interpolation, which puts exactly nothing above
    ``codec_rate / 2``. At ``sample_rate <= codec_rate`` only the band-pass and codec apply.
    ``band=None`` / ``bits=None`` leave out the band-pass / the codec (``telephone(x, sr,
    band=None, bits=None)`` is plain 8 kHz audio).

    Returns:
        float32, same length and rate as ``audio``.
    """
    x = _f32(audio)
    n = x.size
    if n == 0:
        return x
    rate = min(sample_rate, codec_rate)
    if sample_rate > codec_rate:
        ratio = Fraction(codec_rate, sample_rate)
        x = signal.resample_poly(x, ratio.numerator, ratio.denominator)
    if band is not None:
        sos = signal.butter(4, [band[0], min(band[1], 0.45 * rate)], btype="bandpass", fs=rate, output="sos")
        x = signal.sosfilt(sos, x)
    if bits is not None:
        x = mu_law_decode(mu_law_encode(x, bits), bits)
    if sample_rate > codec_rate:
        padded = fft.next_fast_len(x.size, real=True)  # silence after the end; a fast FFT size
        x = signal.resample(np.pad(x, (0, padded - x.size)), round(padded * sample_rate / codec_rate))
    return _fit_length(np.asarray(x, dtype=np.float32), n)


# ---------------------------------------------------------------------------- reverberation


@dataclass(frozen=True)
class Room:
    """A talker in a room, as statistical room acoustics (Sabine, diffuse field) sees it.

    Attributes:
        rt60: reverberation time in seconds (60 dB energy decay).
        volume: room volume in m^3 (sets the density of reflections).
        distance: talker-to-microphone distance in m.
        directivity: directivity factor Q of the talker towards the microphone (a voice
            facing the microphone is about 2).
    """

    rt60: float
    volume: float = 60.0
    distance: float = 0.5
    directivity: float = 2.0

    def __post_init__(self) -> None:
        for name in ("rt60", "volume", "distance", "directivity"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def critical_distance(self) -> float:
        """Where direct and reverberant energy are equal: ``sqrt(Q * A / (16 pi))`` with
        the Sabine absorption area ``A = 0.161 V / RT60``."""
        return math.sqrt(self.directivity * SABINE * self.volume / self.rt60 / (16.0 * math.pi))

    @property
    def drr_db(self) -> float:
        """Direct-to-reverberant energy ratio at the microphone, dB."""
        return 20.0 * math.log10(self.critical_distance / self.distance)


def draw_room(
    rng: np.random.Generator,
    rt60: tuple[float, float] = (0.3, 0.8),
    volume: tuple[float, float] = (30.0, 150.0),
    distance: tuple[float, float] = (0.3, 1.0),
) -> Room:
    """A random :class:`Room`: each of rt60 (s), volume (m^3) and distance (m) uniform in its range.

    The defaults are offices and living rooms with a phone or laptop microphone at arm's
    length (direct-to-reverberant ratio about -8 to +12 dB).
    """
    return Room(rt60=float(rng.uniform(*rt60)), volume=float(rng.uniform(*volume)), distance=float(rng.uniform(*distance)))


def room_impulse_response(room: Room, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A simulated room impulse response, direct path first and of unit gain.

    ``h[0] = 1`` is the direct sound (its propagation delay removed, so convolving does
    not shift the audio). Reflections follow the image-source statistics of a room of
    volume V: they arrive as a Poisson process of rate ``4 pi c^3 t^2 / V`` per second at
    time ``t`` after emission (sparse early reflections becoming a dense tail), each with
    a random Gaussian amplitude, spherical spreading ``1 / t`` and the energy decay
    ``10 ** (-6 * tau / RT60)`` (60 dB in RT60) at ``tau`` after the direct sound. The
    reflections are then scaled so that their total energy is ``10 ** (-DRR / 10)`` for the
    room's direct-to-reverberant ratio. The decay does not depend on frequency.

    Returns:
        (1 + round(rt60 * sample_rate),) float32.
    """
    n_tail = round(room.rt60 * sample_rate)
    tau = np.arange(1, n_tail + 1) / sample_rate  # after the direct sound
    t = tau + room.distance / SPEED_OF_SOUND  # after emission
    per_sample = 4.0 * math.pi * SPEED_OF_SOUND**3 * t**2 / room.volume / sample_rate
    counts = rng.poisson(per_sample)
    tail = rng.standard_normal(n_tail) * np.sqrt(counts) / t * 10.0 ** (-3.0 * tau / room.rt60)
    energy = float(np.sum(tail**2))
    if energy > 0:
        tail *= math.sqrt(10.0 ** (-room.drr_db / 10.0) / energy)
    return np.concatenate([[1.0], tail]).astype(np.float32)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir`` (direct path at ``rir[0]``); the output is cut to the input's
    length (the tail past the end is dropped)."""
    x = _f32(audio)
    if x.size == 0:
        return x
    y = signal.fftconvolve(x.astype(np.float64), np.asarray(rir, dtype=np.float64))[: x.size]
    return y.astype(np.float32)


def schroeder_rt60(rir: np.ndarray, sample_rate: int, fit_db: tuple[float, float] = (-5.0, -25.0)) -> float:
    """RT60 measured from an impulse response: Schroeder backward integration of the
    energy, a least-squares line through the decay curve between ``fit_db`` (T20 by
    default), extrapolated to 60 dB."""
    energy = np.asarray(rir, dtype=np.float64) ** 2
    edc = np.cumsum(energy[::-1])[::-1]
    edc_db = 10.0 * np.log10(np.maximum(edc / edc[0], 1e-300))
    upper, lower = fit_db
    idx = np.nonzero((edc_db <= upper) & (edc_db >= lower))[0]
    if idx.size < 2:
        raise ValueError(f"the decay curve does not span {upper} to {lower} dB")
    slope = np.polyfit(idx / sample_rate, edc_db[idx], 1)[0]  # dB per second
    return float(-60.0 / slope)


# ---------------------------------------------------------------------------- segmentation


def speech_bounds(
    audio: np.ndarray,
    sample_rate: int,
    frame_s: float = 0.01,
    floor_percentile: float = 10.0,
    rise: float = 0.2,
    min_rise_db: float = 6.0,
) -> tuple[int, int]:
    """``(start, end)`` samples of the speech in ``audio``, by short-time energy.

    Frames of ``frame_s`` are speech when their energy (dB) exceeds
    ``floor + max(min_rise_db, rise * (peak - floor))``, with ``floor`` the
    ``floor_percentile`` percentile and ``peak`` the loudest frame: for AN4-like audio
    (floor -70 dBFS, peak -25 dBFS) that is 9 dB above the floor, low enough to keep weak
    fricative onsets. The first and last speech frames are then refined to 1 ms: ``start``
    is the first sample of the first 1 ms window above the threshold, ``end`` one past the
    last. Audio with no frame above the threshold (silence, a constant level) is all
    speech: ``(0, n)``.
    """
    x = np.asarray(audio, dtype=np.float64)
    hop = max(1, round(frame_s * sample_rate))
    n_frames = -(-x.size // hop)
    if n_frames < 2:
        return 0, x.size
    energy_db = _frame_energy_db(x, hop)
    floor, peak = np.percentile(energy_db, floor_percentile), float(energy_db.max())
    threshold = floor + max(min_rise_db, rise * (peak - floor))
    active = np.nonzero(energy_db > threshold)[0]
    if active.size == 0:
        return 0, x.size
    sub = max(1, min(hop, round(0.001 * sample_rate)))
    lo = active[0] * hop  # a frame above the threshold holds a 1 ms window above it
    first = np.nonzero(_frame_energy_db(x[lo : lo + hop], sub) > threshold)[0]
    start = lo + int(first[0]) * sub if first.size else lo
    hi = active[-1] * hop
    last = np.nonzero(_frame_energy_db(x[hi : hi + hop], sub) > threshold)[0]
    end = hi + (int(last[-1]) + 1) * sub if last.size else hi + hop
    return int(start), int(min(x.size, end))


def _frame_energy_db(x: np.ndarray, hop: int) -> np.ndarray:
    """Mean energy in dB of consecutive ``hop``-sample frames (the last one zero-padded)."""
    n_frames = -(-x.size // hop)
    frames = np.pad(x, (0, n_frames * hop - x.size)).reshape(n_frames, hop)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def trim_silence(
    audio: np.ndarray, sample_rate: int, lead_s: float = 0.03, trail_s: float = 0.03, **bounds_kw: float
) -> np.ndarray:
    """Cut leading and trailing silence, keeping at most ``lead_s`` / ``trail_s`` seconds
    before and after the speech found by :func:`speech_bounds` (a tight segmenter).

    Returns:
        float32 ``audio[a:b]`` (a copy, same rate), with ``a >= start - lead`` and
        ``b <= end + trail``.
    """
    if lead_s < 0 or trail_s < 0:
        raise ValueError(f"margins must be >= 0, got {lead_s}, {trail_s}")
    x = _f32(audio)
    start, end = speech_bounds(x, sample_rate, **bounds_kw)
    a = max(0, start - int(lead_s * sample_rate))
    b = min(x.size, end + int(trail_s * sample_rate))
    return x[a:b].copy()


def pad_silence(
    audio: np.ndarray,
    sample_rate: int,
    lead_s: float,
    trail_s: float,
    noise_dbfs: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``audio`` with ``lead_s`` seconds of silence before it and ``trail_s`` after it: a
    recording started early and stopped late, or a short clip padded to a fixed length.

    The silence is digital (zeros) when ``noise_dbfs`` is None, else white noise whose RMS
    is ``noise_dbfs`` dBFS (a background), drawn from ``rng``.

    Returns:
        float32 of ``int(lead_s * sr) + len(audio) + int(trail_s * sr)`` samples, ``audio``
        unchanged in the middle.
    """
    if lead_s < 0 or trail_s < 0:
        raise ValueError(f"silence lengths must be >= 0, got {lead_s}, {trail_s}")
    if noise_dbfs is not None and rng is None:
        raise ValueError("a noise background needs rng")
    x = _f32(audio)
    n_lead, n_trail = int(lead_s * sample_rate), int(trail_s * sample_rate)
    out = np.zeros(n_lead + x.size + n_trail, dtype=np.float32)
    out[n_lead : n_lead + x.size] = x
    if noise_dbfs is not None:
        scale = np.float32(10.0 ** (noise_dbfs / 20.0))
        out[:n_lead] = white_noise(n_lead, rng) * scale
        out[n_lead + x.size :] = white_noise(n_trail, rng) * scale
    return out


# ---------------------------------------------------------------------------- microphone


def shelf_biquad(kind: str, freq: float, gain_db: float, sample_rate: int) -> np.ndarray:
    """One second-order shelf (RBJ Audio EQ Cookbook, slope 1) as an ``sos`` row.

    ``kind="low"`` scales frequencies well below ``freq`` by ``gain_db`` (and leaves high
    ones), ``"high"`` the reverse; ``freq`` is the midpoint (half the gain in dB).
    """
    if kind not in ("low", "high"):
        raise ValueError(f"kind must be 'low' or 'high', got {kind!r}")
    if not 0 < freq < sample_rate / 2:
        raise ValueError(f"shelf frequency must be in (0, {sample_rate / 2}), got {freq}")
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq / sample_rate
    cos_w0, alpha = math.cos(w0), math.sin(w0) / 2.0 * math.sqrt(2.0)
    two_sqrt_a_alpha = 2.0 * math.sqrt(a) * alpha
    sign = 1.0 if kind == "low" else -1.0
    b0 = a * ((a + 1) - sign * (a - 1) * cos_w0 + two_sqrt_a_alpha)
    b1 = sign * 2 * a * ((a - 1) - sign * (a + 1) * cos_w0)
    b2 = a * ((a + 1) - sign * (a - 1) * cos_w0 - two_sqrt_a_alpha)
    a0 = (a + 1) + sign * (a - 1) * cos_w0 + two_sqrt_a_alpha
    a1 = -sign * 2 * ((a - 1) + sign * (a + 1) * cos_w0)
    a2 = (a + 1) + sign * (a - 1) * cos_w0 - two_sqrt_a_alpha
    return np.array([b0, b1, b2, a0, a1, a2]) / a0


def shelf_eq(audio: np.ndarray, sample_rate: int, low_hz: float, low_db: float, high_hz: float, high_db: float) -> np.ndarray:
    """A microphone/loudspeaker colouring: a low shelf then a high shelf (causal biquads)."""
    x = _f32(audio)
    if x.size == 0:
        return x
    sos = np.stack([shelf_biquad("low", low_hz, low_db, sample_rate), shelf_biquad("high", high_hz, high_db, sample_rate)])
    return signal.sosfilt(sos, x.astype(np.float64)).astype(np.float32)


def random_eq(
    audio: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    max_db: float = 10.0,
    low_hz: tuple[float, float] = (100.0, 400.0),
    high_hz: tuple[float, float] = (2000.0, 5000.0),
) -> np.ndarray:
    """:func:`shelf_eq` with shelf gains ``U(-max_db, max_db)`` and corner frequencies
    uniform in ``low_hz`` / ``high_hz`` (the high corner kept below 0.45 * rate)."""
    lo_f = float(rng.uniform(*low_hz))
    lo_db = float(rng.uniform(-max_db, max_db))
    hi_f = min(float(rng.uniform(*high_hz)), 0.45 * sample_rate)
    hi_db = float(rng.uniform(-max_db, max_db))
    return shelf_eq(audio, sample_rate, lo_f, lo_db, hi_f, hi_db)


__all__ = [
    "SPEED_OF_SOUND",
    "Room",
    "add_babble",
    "add_noise",
    "add_pink_noise",
    "add_white_noise",
    "babble",
    "babble_like_noise",
    "clip_fraction",
    "clip_threshold",
    "draw_room",
    "gain",
    "hard_clip",
    "mix_at_snr",
    "mu_law_decode",
    "mu_law_encode",
    "noise_segment",
    "pad_silence",
    "pink_noise",
    "quantize",
    "random_eq",
    "random_gain",
    "reverberate",
    "rms",
    "room_impulse_response",
    "schroeder_rt60",
    "shelf_biquad",
    "shelf_eq",
    "snr_db",
    "speech_bounds",
    "telephone",
    "trim_silence",
    "white_noise",
]
