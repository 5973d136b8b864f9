"""data/corrupt.py on generated audio: determinism, length/rate contracts and measured effects."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data import corrupt
from data.corrupt import Room

SR = 16000


def sine(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speechlike(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """Harmonics of 150 Hz with a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.1 * voiced * envelope + 0.001 * rng.standard_normal(t.size)).astype(np.float32)


def band_energy_db(x: np.ndarray, lo: float, hi: float, sr: int = SR) -> float:
    """Energy in [lo, hi) Hz relative to the total, dB."""
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    return 10 * math.log10(power[(freqs >= lo) & (freqs < hi)].sum() / power.sum() + 1e-300)


def level_db(y: np.ndarray, x: np.ndarray, skip: int = SR // 2) -> float:
    """RMS of y over RMS of x, dB, after the first ``skip`` samples (filter transients)."""
    return 20 * math.log10(corrupt.rms(y[skip:]) / corrupt.rms(x[skip:]))


# ---------------------------------------------------------------------------- contracts

OTHERS = [speechlike(0.7, seed=5), speechlike(2.5, seed=6), speechlike(1.2, seed=7)]

RANDOM = {
    "white": lambda x, rng: corrupt.add_white_noise(x, 10.0, rng),
    "pink": lambda x, rng: corrupt.add_pink_noise(x, 10.0, rng),
    "babble": lambda x, rng: corrupt.add_babble(x, OTHERS, 10.0, rng),
    "babble-like": lambda x, rng: corrupt.mix_at_snr(x, corrupt.babble_like_noise(x.size, SR, rng), 5.0),
    "reverb": lambda x, rng: corrupt.reverberate(x, corrupt.room_impulse_response(corrupt.draw_room(rng), SR, rng)),
    "eq": lambda x, rng: corrupt.random_eq(x, SR, rng),
    "gain": lambda x, rng: corrupt.random_gain(x, rng, -30.0, 10.0),
}
FIXED = {
    "telephone": lambda x: corrupt.telephone(x, SR),
    "8 kHz": lambda x: corrupt.telephone(x, SR, band=None, bits=None),
    "level -30 dB": lambda x: corrupt.gain(x, -30.0),
    "quantize 8 bit": lambda x: corrupt.quantize(x, 8),
    "hard clip": lambda x: corrupt.hard_clip(x, 0.05),
    "clip 5 %": lambda x: corrupt.clip_fraction(x, 0.05),
    "shelf eq": lambda x: corrupt.shelf_eq(x, SR, 200.0, 6.0, 3000.0, -6.0),
}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_corruptions_are_functions_of_the_seed(name: str) -> None:
    x = speechlike()
    before = x.copy()
    a = RANDOM[name](x, np.random.default_rng(3))
    b = RANDOM[name](x, np.random.default_rng(3))
    c = RANDOM[name](x, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == x.shape  # same length, same rate
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(x, before)  # input untouched


@pytest.mark.parametrize("name", sorted(FIXED))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fixed_corruptions_keep_length_and_input(name: str, dtype) -> None:
    x = speechlike(1.3).astype(dtype)
    before = x.copy()
    y = FIXED[name](x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y is not x and np.all(np.isfinite(y))
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(FIXED[name](x), y)


@pytest.mark.parametrize("n", [0, 1, 7, 159, 16001])
def test_odd_lengths(n: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32) * 0.1
    assert corrupt.telephone(x, SR).shape == (n,)
    assert corrupt.add_pink_noise(x, 5.0, rng).shape == (n,)
    assert corrupt.pink_noise(n, rng).shape == (n,)
    assert corrupt.babble_like_noise(n, SR, rng).shape == (n,)
    assert corrupt.random_eq(x, SR, rng).shape == (n,)
    assert corrupt.reverberate(x, np.array([1.0, 0.5])).shape == (n,)
    assert corrupt.trim_silence(x, SR).size <= n


def test_mono_only() -> None:
    with pytest.raises(ValueError, match="mono"):
        corrupt.gain(np.zeros((10, 2), dtype=np.float32), 3.0)


# ---------------------------------------------------------------------------- noise and babble


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr", [20.0, 10.0, 5.0, 0.0])
def test_noise_and_babble_hit_the_snr(kind: str, snr: float) -> None:
    x = speechlike(2.0)
    rng = np.random.default_rng(1)
    if kind == "white":
        y = corrupt.add_white_noise(x, snr, rng)
    elif kind == "pink":
        y = corrupt.add_pink_noise(x, snr, rng)
    else:
        y = corrupt.add_babble(x, OTHERS, snr, rng)
    assert corrupt.snr_db(x, y) == pytest.approx(snr, abs=0.05)


def test_pink_noise_falls_3_db_per_octave() -> None:
    x = corrupt.pink_noise(20 * SR, np.random.default_rng(0))
    assert corrupt.rms(x) == pytest.approx(1.0, rel=1e-6)
    low, high = band_energy_db(x, 250, 500), band_energy_db(x, 4000, 8000)  # equal-octave bands, 4 octaves apart
    assert low - high == pytest.approx(0.0, abs=1.0)  # 1/f: the same power in every octave
    white = corrupt.white_noise(20 * SR, np.random.default_rng(0))
    assert band_energy_db(white, 4000, 8000) - band_energy_db(white, 250, 500) == pytest.approx(12.0, abs=1.0)


def test_babble_like_noise_is_speech_band_and_modulated() -> None:
    x = corrupt.babble_like_noise(4 * SR, SR, np.random.default_rng(2))
    assert corrupt.rms(x) == pytest.approx(1.0, rel=1e-5)
    assert band_energy_db(x, 100, 4000) > -1.0  # nearly all the energy in the speech band
    frames = np.sqrt(np.mean(x[: 4 * SR].reshape(-1, 400) ** 2, axis=1))  # 25 ms frames
    assert frames.std() / frames.mean() > 0.2  # a fluctuating, syllabic envelope


def test_babble_is_a_sum_of_the_given_utterances() -> None:
    b = corrupt.babble(OTHERS[:1], 500, np.random.default_rng(0))
    start = int(np.random.default_rng(0).integers(0, OTHERS[0].size - 500 + 1))
    segment = OTHERS[0][start : start + 500]
    np.testing.assert_allclose(b, segment / corrupt.rms(segment), rtol=1e-5, atol=1e-6)
    assert not np.any(corrupt.babble([np.zeros(100, np.float32)], 50, np.random.default_rng(0)))
    with pytest.raises(ValueError):
        corrupt.add_babble(speechlike(), [], 10.0, np.random.default_rng(0))


def test_mix_at_snr_edge_cases() -> None:
    x = speechlike(0.5)
    np.testing.assert_array_equal(corrupt.mix_at_snr(x, np.ones_like(x), math.inf), x)
    silent = np.zeros(100, dtype=np.float32)
    np.testing.assert_array_equal(corrupt.mix_at_snr(silent, np.ones(100), 0.0), silent)
    with pytest.raises(ValueError, match="shape"):
        corrupt.mix_at_snr(x, np.ones(3), 0.0)


# ---------------------------------------------------------------------------- telephone


def test_telephone_has_no_energy_above_4_khz() -> None:
    x = corrupt.white_noise(2 * SR, np.random.default_rng(0)) * 0.1
    y = corrupt.telephone(x, SR)
    assert band_energy_db(y, 4000, 8001) < -60.0
    assert band_energy_db(y, 300, 3400) > -0.5


@pytest.mark.parametrize("freq, passes", [(1000.0, True), (2500.0, True), (100.0, False), (6000.0, False)])
def test_telephone_band(freq: float, passes: bool) -> None:
    x = sine(freq, 1.5)
    y = corrupt.telephone(x, SR)
    if passes:
        assert level_db(y, x) == pytest.approx(0.0, abs=1.0)
    else:
        assert level_db(y, x) < -20.0


def test_telephone_at_other_rates() -> None:
    for sr in (8000, 22050, 44100):
        x = sine(1000.0, 1.0, sr=sr)
        y = corrupt.telephone(x, sr)
        assert y.shape == x.shape and y.dtype == np.float32
        assert level_db(y, x, skip=sr // 2) == pytest.approx(0.0, abs=1.0)
        if sr > 8000:
            assert band_energy_db(y, 4000, sr / 2 + 1, sr=sr) < -50.0


def test_plain_8_khz_keeps_the_band_below_4_khz() -> None:
    x = sine(150.0, 1.5) + sine(3000.0, 1.5) + sine(6000.0, 1.5)
    y = corrupt.telephone(x, SR, band=None, bits=None)
    expected = sine(150.0, 1.5) + sine(3000.0, 1.5)
    assert y.shape == x.shape
    assert corrupt.snr_db(expected[1000:-1000], y[1000:-1000]) > 30.0  # 150 Hz kept (no band-pass), 6 kHz gone


def test_mu_law_is_8_bit_and_close() -> None:
    x = np.linspace(-1, 1, 1_000_001)
    codes = corrupt.mu_law_encode(x)
    assert codes.min() >= 0 and codes.max() == 255 and len(np.unique(codes)) == 256
    y = corrupt.mu_law_decode(codes)
    # mu-law: the step grows with the amplitude, about 2 * 4.4 % of it near full scale.
    assert np.all(np.abs(y - x) <= 1e-4 + 0.045 * np.abs(x))
    assert corrupt.mu_law_decode(corrupt.mu_law_encode(np.zeros(3))).tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(corrupt.mu_law_decode(corrupt.mu_law_encode(-x)), -y)


# ---------------------------------------------------------------------------- reverberation


@pytest.mark.parametrize("rt60", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("volume, distance", [(30.0, 1.0), (150.0, 0.3)])
def test_rir_has_the_rt60_and_drr(rt60: float, volume: float, distance: float) -> None:
    room = Room(rt60=rt60, volume=volume, distance=distance)
    for seed in range(3):
        h = corrupt.room_impulse_response(room, SR, np.random.default_rng(seed))
        assert h.dtype == np.float32 and h[0] == 1.0 and h.size == 1 + round(rt60 * SR)
        # Schroeder integration of the reverberant tail, T20 extrapolated to 60 dB.
        assert corrupt.schroeder_rt60(h[1:], SR) == pytest.approx(rt60, rel=0.1)
        drr = 10 * math.log10(1.0 / np.sum(h[1:].astype(np.float64) ** 2))
        assert drr == pytest.approx(room.drr_db, abs=0.01)
    if room.drr_db < 0:  # with the direct sound the early decay curve is still the room's
        assert corrupt.schroeder_rt60(h, SR) == pytest.approx(rt60, rel=0.1)


def test_room_acoustics() -> None:
    room = Room(rt60=0.5, volume=60.0, distance=0.5, directivity=1.0)
    assert room.critical_distance == pytest.approx(0.0566 * math.sqrt(60 / 0.5), rel=1e-3)
    assert Room(0.5, 60.0, room.critical_distance, 1.0).drr_db == pytest.approx(0.0, abs=1e-9)
    rooms = [corrupt.draw_room(np.random.default_rng(s)) for s in range(200)]
    assert all(0.3 <= r.rt60 <= 0.8 and 0.3 <= r.distance <= 1.0 for r in rooms)
    drrs = [r.drr_db for r in rooms]
    assert -10 < min(drrs) < 0 < max(drrs) < 16
    with pytest.raises(ValueError):
        Room(rt60=0.0)


def test_reverberation_keeps_the_direct_path() -> None:
    x = speechlike(1.0)
    np.testing.assert_allclose(corrupt.reverberate(x, np.array([1.0])), x, atol=1e-7)
    h = corrupt.room_impulse_response(Room(0.5, 150.0, 0.3), SR, np.random.default_rng(0))
    y = corrupt.reverberate(x, h)
    # Direct path at unit gain and no delay: what is added is the reflections only.
    tail = corrupt.reverberate(x, np.concatenate([[0.0], h[1:]]))
    np.testing.assert_allclose(y - tail, x, atol=1e-5)
    assert corrupt.rms(tail) < corrupt.rms(x)  # positive DRR


def test_schroeder_on_an_exact_exponential() -> None:
    t = np.arange(int(0.6 * SR)) / SR
    h = np.random.default_rng(0).standard_normal(t.size) * 10 ** (-3 * t / 0.6)
    assert corrupt.schroeder_rt60(h, SR) == pytest.approx(0.6, rel=0.03)
    with pytest.raises(ValueError, match="decay curve"):
        corrupt.schroeder_rt60(np.ones(3), SR)


# ---------------------------------------------------------------------------- level and clipping


def test_level_change_and_quantisation() -> None:
    x = speechlike()
    y = corrupt.gain(x, -30.0)
    assert level_db(y, x, 0) == pytest.approx(-30.0, abs=1e-4)
    q = corrupt.quantize(y, 16)
    assert np.all(np.round(q * 32768) == q * 32768)
    assert np.max(np.abs(q - y)) <= 0.5 / 32768 + 1e-9
    assert corrupt.quantize(np.array([2.0, -2.0]), 16).tolist() == [32767 / 32768, -1.0]


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2])
def test_clip_fraction_clips_that_many_samples(fraction: float) -> None:
    x = speechlike(2.0)
    y = corrupt.clip_fraction(x, fraction)
    threshold = corrupt.clip_threshold(x, fraction)
    assert np.max(np.abs(y)) == pytest.approx(threshold, rel=1e-6)
    assert np.mean(np.abs(x) > threshold) == pytest.approx(fraction, abs=0.002)
    unclipped = np.abs(x) <= threshold
    np.testing.assert_array_equal(y[unclipped], x[unclipped])
    with pytest.raises(ValueError):
        corrupt.hard_clip(x, 0.0)


# ---------------------------------------------------------------------------- segmentation


def padded_utterance(lead: float, trail: float, seed: int = 0) -> tuple[np.ndarray, int, int]:
    """Floor noise at about -70 dBFS, then a weak fricative-like burst (-45 dBFS, 60 ms),
    a loud voiced part (-20 dBFS, 0.6 s) and a weak burst again, then floor.
    Returns (audio, speech start, speech end)."""
    rng = np.random.default_rng(seed)
    burst = 0.0056 * rng.standard_normal(int(0.06 * SR))
    voiced = 0.1 * np.sin(2 * np.pi * 200 * np.arange(int(0.6 * SR)) / SR) * 1.41
    speech = np.concatenate([burst, voiced, burst[::-1]])
    n_lead, n_trail = int(lead * SR), int(trail * SR)
    audio = 3.2e-4 * rng.standard_normal(n_lead + speech.size + n_trail)
    audio[n_lead : n_lead + speech.size] += speech
    return audio.astype(np.float32), n_lead, n_lead + speech.size


@pytest.mark.parametrize("lead, trail", [(0.5, 0.5), (0.8, 0.05), (0.02, 0.4), (0.1, 0.1)])
@pytest.mark.parametrize("margin", [0.0, 0.01, 0.03])
def test_trim_keeps_the_speech_and_at_most_the_margin(lead: float, trail: float, margin: float) -> None:
    x, start, end = padded_utterance(lead, trail)
    a, b = corrupt.speech_bounds(x, SR)
    assert start - int(0.001 * SR) <= a <= start + int(0.001 * SR)  # found to 1 ms
    assert end - int(0.001 * SR) <= b <= end + int(0.001 * SR)
    y = corrupt.trim_silence(x, SR, margin, margin)
    offset = max(0, a - int(margin * SR))
    np.testing.assert_array_equal(y, x[offset : offset + y.size])
    assert offset <= start and offset + y.size >= end  # all the speech is kept
    assert start - offset <= margin * SR + 1e-9 and offset + y.size - end <= margin * SR + int(0.001 * SR)
    assert (start - offset) / SR <= 0.03 + 1e-9 and (offset + y.size - end) / SR <= 0.031


def test_trim_without_silence_or_speech_changes_nothing() -> None:
    tone = sine(300.0, 0.5)
    assert corrupt.trim_silence(tone, SR).size >= tone.size - int(0.002 * SR)
    silence = np.zeros(8000, dtype=np.float32)
    np.testing.assert_array_equal(corrupt.trim_silence(silence, SR), silence)
    with pytest.raises(ValueError):
        corrupt.trim_silence(tone, SR, -0.1, 0.0)


def test_pad_silence_adds_digital_silence_or_a_background_at_its_level() -> None:
    tone = sine(300.0, 0.5)
    before = tone.copy()
    y = corrupt.pad_silence(tone, SR, 0.25, 0.1)
    assert y.dtype == np.float32 and y.size == int(0.25 * SR) + tone.size + int(0.1 * SR)
    np.testing.assert_array_equal(y[int(0.25 * SR) : int(0.25 * SR) + tone.size], tone)
    assert not y[: int(0.25 * SR)].any() and not y[int(0.25 * SR) + tone.size :].any()
    np.testing.assert_array_equal(tone, before)  # input untouched
    z = corrupt.pad_silence(tone, SR, 1.0, 1.0, noise_dbfs=-50.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(z[SR : SR + tone.size], tone)
    for pad in (z[:SR], z[SR + tone.size :]):
        assert 20 * np.log10(corrupt.rms(pad)) == pytest.approx(-50.0, abs=0.2)
    again = corrupt.pad_silence(tone, SR, 1.0, 1.0, noise_dbfs=-50.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(z, again)  # a function of the seed
    np.testing.assert_array_equal(corrupt.pad_silence(tone, SR, 0.0, 0.0), tone)
    with pytest.raises(ValueError, match=">= 0"):
        corrupt.pad_silence(tone, SR, -0.1, 0.0)
    with pytest.raises(ValueError, match="needs rng"):
        corrupt.pad_silence(tone, SR, 0.1, 0.1, noise_dbfs=-50.0)


# ---------------------------------------------------------------------------- microphone


@pytest.mark.parametrize("low_db, high_db", [(10.0, -10.0), (-10.0, 10.0), (-4.5, 7.0), (0.0, 0.0)])
def test_shelf_gains_measured_at_low_and_high_frequencies(low_db: float, high_db: float) -> None:
    low, high, mid = sine(40.0, 2.0), sine(7500.0, 2.0), sine(1000.0, 2.0)

    def eq(x):
        return corrupt.shelf_eq(x, SR, 250.0, low_db, 2500.0, high_db)

    assert level_db(eq(low), low) == pytest.approx(low_db, abs=0.5)
    assert level_db(eq(high), high) == pytest.approx(high_db, abs=0.5)
    # Between the corners both shelves are partly on: well inside the two gains.
    assert abs(level_db(eq(mid), mid)) <= max(abs(low_db), abs(high_db))


def test_random_eq_draws_within_range() -> None:
    low, high = sine(40.0, 2.0), sine(7500.0, 2.0)
    gains = []
    for seed in range(20):
        lo = level_db(corrupt.random_eq(low, SR, np.random.default_rng(seed), max_db=10.0), low)
        hi = level_db(corrupt.random_eq(high, SR, np.random.default_rng(seed), max_db=10.0), high)
        assert abs(lo) <= 10.5 and abs(hi) <= 10.5
        gains.append((lo, hi))
    assert np.std([g[0] for g in gains]) > 2 and np.std([g[1] for g in gains]) > 2
    with pytest.raises(ValueError):
        corrupt.shelf_biquad("low", 9000.0, 3.0, SR)
