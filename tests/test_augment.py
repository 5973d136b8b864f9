"""Augmentation: speed/gain, noise mixing, SpecAugment, and their determinism in the dataset."""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_train_args, write_tone

from data.audio import AudioError, load_audio, spectrogram, speech_level_db
from data.augment import (
    PAD_DIGITAL_SHARE,
    RECIPE_MIX,
    AugmentConfig,
    Augmentor,
    NoiseBank,
    add_augment_args,
    apply_gain,
    level_to_snr,
    mix_noise,
    noise_segment,
    snr_to_level,
    spec_augment,
    speed_perturb,
)
from data.data_loader import SpectrogramDataset

SR = 16000


def sine(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(x: np.ndarray, sr: int = SR) -> float:
    """Frequency of the largest spectral peak, to ~0.06 Hz (Hann window, zero-padded FFT)."""
    n_fft = 1 << 18
    mag = np.abs(np.fft.rfft(x * np.hanning(x.size), n_fft))
    return float(np.argmax(mag) * sr / n_fft)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# ---------------------------------------------------------------------------- config


def test_config_defaults_are_the_recipe_and_plain_data() -> None:
    cfg = AugmentConfig()
    assert cfg.speed_volume_perturb and cfg.spec_augment and cfg.enabled
    assert all(getattr(cfg, name) == 0 for name in AugmentConfig.probabilities())
    assert not AugmentConfig.none().enabled
    assert AugmentConfig.from_dict(asdict(cfg)) == cfg
    assert AugmentConfig(speed_range=[0.8, 1.2]).speed_range == (0.8, 1.2)
    assert AugmentConfig(speed_volume_perturb=False, spec_augment=True).enabled
    off = {"speed_volume_perturb": False, "spec_augment": False}
    assert AugmentConfig(**off, noise_dir="x").enabled
    assert AugmentConfig(**off, noise_dir="x").noise_prob == 0.4  # deepspeech.pytorch's default with a folder
    assert AugmentConfig(**off, noise_prob=0.3).enabled  # generated noise
    for name in AugmentConfig.probabilities():
        assert AugmentConfig(**off, **{name: 0.5}, babble_manifest="m.csv").enabled


@pytest.mark.parametrize(
    "kwargs",
    [
        {"speed_range": (1.1, 0.9)},
        {"speed_range": (0.0, 1.1)},
        {"speed_range": (0.9, 1.0, 1.1)},
        {"gain_range_db": (8.0, -6.0)},
        {"noise_prob": 1.5},
        {"noise_min": 0.6, "noise_max": 0.5},
        {"noise_min": -0.1},
        {"freq_mask_width": -1},
        {"n_time_masks": 1.5},
        {"time_mask_max_fraction": 2.0},
        {"rir_prob": -0.1},
        {"trim_prob": 1.5},
        {"rir_rt60": (0.0, 0.5)},
        {"rir_rt60": (0.8, 0.3)},
        {"clip_fraction": (0.0, 0.1)},
        {"trim_margin_s": (-0.1, 0.1)},
        {"babble_talkers": (0, 3)},
        {"noise_types": ()},
        {"noise_types": ("brown",)},
        {"eq_max_db": -1.0},
        {"babble_prob": 0.5},  # no manifest to make babble from
    ],
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AugmentConfig(**kwargs)


def test_cli_flags_build_the_config(tmp_path: Path) -> None:
    parser = add_augment_args(argparse.ArgumentParser())
    assert AugmentConfig.from_args(parser.parse_args([])) == AugmentConfig()
    args = parser.parse_args(
        [
            "--no-augment",
            "--spec-augment",
            "--noise-dir",
            str(tmp_path),
            "--noise-prob",
            "0.5",
            "--noise-min",
            "0.1",
            "--noise-max",
            "0.3",
        ]
    )
    cfg = AugmentConfig.from_args(args)
    assert not cfg.speed_volume_perturb and cfg.spec_augment
    assert (cfg.noise_dir, cfg.noise_prob, cfg.noise_min, cfg.noise_max) == (str(tmp_path), 0.5, 0.1, 0.3)
    assert AugmentConfig.from_args(parser.parse_args(["--noise-dir", str(tmp_path)])).noise_prob == 0.4


def test_cli_flags_for_every_new_augmentation(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("a.wav,a.txt\n")
    parser = AugmentConfig.add_args(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--noise-prob",
            "0.2",
            "--noise-types",
            "pink",
            "white",
            "--babble-prob",
            "0.3",
            "--babble-manifest",
            str(manifest),
            "--babble-talkers",
            "2",
            "4",
            "--babble-snr",
            "0",
            "10",
            "--rir-prob",
            "0.4",
            "--rir-rt60",
            "0.4",
            "0.6",
            "--telephone-prob",
            "0.1",
            "--eq-prob",
            "0.5",
            "--eq-max-db",
            "6",
            "--gain-prob",
            "0.6",
            "--gain-db",
            "-20",
            "0",
            "--clip-prob",
            "0.05",
            "--clip-fraction",
            "0.01",
            "0.02",
            "--trim-prob",
            "0.7",
            "--trim-margin",
            "0",
            "0.05",
            "--pad-prob",
            "0.2",
            "--pad-seconds",
            "0.5",
            "2",
        ]
    )
    cfg = AugmentConfig.from_args(args)
    assert cfg.noise_dir is None and cfg.noise_prob == 0.2 and cfg.noise_types == ("pink", "white")
    assert (cfg.babble_prob, cfg.babble_manifest, cfg.babble_talkers, cfg.babble_snr_db) == (
        0.3,
        str(manifest),
        (2, 4),
        (0.0, 10.0),
    )
    assert (cfg.rir_prob, cfg.rir_rt60, cfg.telephone_prob, cfg.eq_prob, cfg.eq_max_db) == (0.4, (0.4, 0.6), 0.1, 0.5, 6.0)
    assert (cfg.gain_prob, cfg.gain_db, cfg.clip_prob, cfg.clip_fraction) == (0.6, (-20.0, 0.0), 0.05, (0.01, 0.02))
    assert (cfg.trim_prob, cfg.trim_margin_s) == (0.7, (0.0, 0.05))
    assert (cfg.pad_prob, cfg.pad_s) == (0.2, (0.5, 2.0))
    # The babble manifest defaults to the training manifest.
    parser.add_argument("--train-manifest", default=str(manifest))
    assert AugmentConfig.from_args(parser.parse_args(["--babble-prob", "1"])).babble_manifest == str(manifest)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--noise-min", "0.1"], "--noise-min does nothing: noise is off"),
        (["--noise-max", "0.2", "--noise-prob", "0"], "--noise-max does nothing: noise is off"),
        (["--noise-types", "pink"], "--noise-types does nothing: noise is off"),
        (["--noise-dir", "{tmp}", "--noise-prob", "0"], "--noise-dir does nothing with --noise-prob 0"),
        (["--noise-dir", "{tmp}", "--noise-types", "pink"], "--noise-types does nothing with --noise-dir"),
        (["--noise-dir", "{tmp}/missing"], "not a folder"),
        (["--rir-rt60", "0.3", "0.5"], "--rir-rt60 does nothing: reverberation is off"),
        (["--babble-snr", "0", "5"], "--babble-snr does nothing: babble is off"),
        (["--babble-prob", "0.5"], "--babble-prob needs --babble-manifest"),
        (["--babble-prob", "0.5", "--babble-manifest", "{tmp}/none.csv"], "manifest not found"),
        (["--eq-max-db", "3"], "--eq-max-db does nothing: the microphone EQ is off"),
        (["--gain-db", "-10", "0", "--gain-prob", "0"], "--gain-db does nothing"),
        (["--clip-fraction", "0.01", "0.02"], "--clip-fraction does nothing: clipping is off"),
        (["--trim-margin", "0", "0.1"], "--trim-margin does nothing: trimming is off"),
        (["--pad-seconds", "0", "1"], "--pad-seconds does nothing: padding is off"),
        (["--pad-prob", "1", "--pad-seconds", "0", "11"], "pad_s must be (min, max)"),
        (["--rir-prob", "2"], "rir_prob must be in [0, 1]"),
        (["--rir-prob", "1", "--rir-rt60", "0.9", "0.2"], "rir_rt60 must be (min, max)"),
        (["--augment-warmup-epochs", "2", "--no-augment", "--no-spec-augment"], "--augment-warmup-epochs does nothing"),
        (["--augment-warmup-epochs", "-1"], "warmup_epochs must be a non-negative integer"),
    ],
)
def test_cli_refuses_flags_that_would_do_nothing(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    parser = AugmentConfig.add_args(argparse.ArgumentParser(prog="train.py"))
    args = parser.parse_args([a.format(tmp=tmp_path) for a in argv])
    with pytest.raises(SystemExit) as exc:
        AugmentConfig.from_args(args, parser)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match=re.escape(message)):
        AugmentConfig.from_args(args)


# ---------------------------------------------------------------------------- speed and gain


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_speed_perturb_scales_length_and_frequency(factor: float) -> None:
    x = sine(440.0)
    y = speed_perturb(x, factor)
    assert y.dtype == np.float32
    assert y.size == math.ceil(x.size / factor)  # these factors are exact fractions
    assert abs(peak_frequency(y) - 440.0 * factor) < 0.5
    assert rms(y[200:-200]) == pytest.approx(rms(x), rel=0.01)


def test_speed_perturb_non_round_factor_is_close() -> None:
    x = sine(300.0)
    y = speed_perturb(x, 1.0371)
    assert abs(y.size - x.size / 1.0371) / (x.size / 1.0371) < 2e-4
    assert abs(peak_frequency(y) - 300.0 * 1.0371) < 0.5


def test_speed_factor_one_is_an_unchanged_copy() -> None:
    x = sine(300.0)
    y = speed_perturb(x, 1.0)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    with pytest.raises(ValueError):
        speed_perturb(x, 0.0)


@pytest.mark.parametrize("db", [-6.0, 0.0, 3.5, 8.0])
def test_gain_changes_rms_by_db(db: float) -> None:
    x = sine(200.0)
    y = apply_gain(x, db)
    assert 20 * math.log10(rms(y) / rms(x)) == pytest.approx(db, abs=1e-4)
    assert y.dtype == np.float32 and y.shape == x.shape


# ---------------------------------------------------------------------------- noise


def test_level_snr_conversion() -> None:
    assert level_to_snr(0.5) == pytest.approx(6.0206, abs=1e-4)
    assert snr_to_level(20.0) == pytest.approx(0.1)
    assert level_to_snr(0.0) == math.inf
    assert level_to_snr(snr_to_level(13.0)) == pytest.approx(13.0)


@pytest.mark.parametrize("noise_seconds", [0.3, 3.0])  # looped and cropped
@pytest.mark.parametrize("snr_db", [0.0, 6.0, 20.0])
def test_mix_noise_hits_the_snr(noise_seconds: float, snr_db: float) -> None:
    speech = sine(250.0, 1.0)
    noise = np.random.default_rng(1).standard_normal(int(noise_seconds * SR)).astype(np.float32)
    mixed = mix_noise(speech, noise, snr_to_level(snr_db), np.random.default_rng(7))
    added = mixed.astype(np.float64) - speech
    assert 20 * math.log10(rms(speech) / rms(added)) == pytest.approx(snr_db, abs=0.1)
    # The added signal is exactly the scaled segment the same generator picks.
    segment = noise_segment(noise, speech.size, np.random.default_rng(7))
    np.testing.assert_allclose(added, segment * (rms(added) / rms(segment)), atol=1e-5)


def test_noise_segment_crops_or_loops() -> None:
    ramp = np.arange(1000, dtype=np.float32)
    seg = noise_segment(ramp, 300, np.random.default_rng(3))
    start = int(seg[0])
    np.testing.assert_array_equal(seg, ramp[start : start + 300])
    assert start + 300 <= 1000
    looped = noise_segment(ramp[:70], 300, np.random.default_rng(3))
    start = int(looped[0])
    np.testing.assert_array_equal(looped, ramp[(start + np.arange(300)) % 70])
    starts = {int(noise_segment(ramp, 300, np.random.default_rng(s))[0]) for s in range(20)}
    assert len(starts) > 10


def test_mix_noise_level_zero_or_silence_is_unchanged() -> None:
    speech = sine(250.0, 0.5)
    noise = np.ones(100, dtype=np.float32)
    np.testing.assert_array_equal(mix_noise(speech, noise, 0.0, np.random.default_rng(0)), speech)
    silent = np.zeros(800, dtype=np.float32)
    np.testing.assert_array_equal(mix_noise(silent, noise, 0.5, np.random.default_rng(0)), silent)
    with pytest.raises(ValueError):
        mix_noise(speech, noise, -1.0, np.random.default_rng(0))


def test_noise_bank_finds_resamples_and_caches(tmp_path: Path) -> None:
    write_tone(tmp_path / "a" / "hum.wav", 0.5, sample_rate=8000, freq=50)
    write_tone(tmp_path / "b" / "fan.FLAC", 0.25, sample_rate=16000, freq=120, subtype="PCM_16")
    (tmp_path / "readme.txt").write_text("not audio")
    bank = NoiseBank(tmp_path, 16000)
    assert [p.name for p in bank.paths] == ["hum.wav", "fan.FLAC"]
    assert bank.get(0).size == 8000  # 0.5 s at 8 kHz -> 16 kHz
    assert bank.get(0) is bank.get(0)
    picks = {bank.pick(np.random.default_rng(s)).size for s in range(10)}
    assert picks == {8000, 4000}


def test_noise_bank_errors_name_the_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="noise folder not found"):
        NoiseBank(tmp_path / "missing", 16000)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no noise audio found"):
        NoiseBank(tmp_path, 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not a wav file at all" * 10)
    with pytest.raises(AudioError, match="bad.wav"):
        NoiseBank(tmp_path, 16000)


def test_dataset_with_empty_noise_dir_fails_clearly(tiny_dataset: Path, tmp_path: Path) -> None:
    empty = tmp_path / "noise"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no noise audio"):
        SpectrogramDataset(tiny_dataset, augment=AugmentConfig(noise_dir=str(empty)))


# ---------------------------------------------------------------------------- SpecAugment


def expected_masks(seed: int, n_freq: int, n_time: int, fw: int, nf: int, tw: int, nt: int, frac: float):
    """The (rows, cols) spec_augment must zero, drawn independently from the documented rule."""
    rng = np.random.default_rng(seed)
    rows, cols = set(), set()
    for _ in range(nf):
        f = rng.integers(0, min(fw, n_freq) + 1)
        f0 = rng.integers(0, n_freq - f + 1)
        rows |= set(range(f0, f0 + f))
    max_t = min(tw, int(frac * n_time))
    for _ in range(nt):
        t = rng.integers(0, max_t + 1)
        t0 = rng.integers(0, n_time - t + 1)
        cols |= set(range(t0, t0 + t))
    return rows, cols


@pytest.mark.parametrize("n_masks", [1, 2])
def test_spec_augment_masks_exactly_the_drawn_bands(n_masks: int) -> None:
    spect = torch.rand(161, 300) + 1.0  # no natural zeros
    widths_f, widths_t = [], []
    for seed in range(40):
        out = spec_augment(spect, np.random.default_rng(seed), 27, n_masks, 70, n_masks, 0.2)
        rows, cols = expected_masks(seed, 161, 300, 27, n_masks, 70, n_masks, 0.2)
        zero = out == 0
        expected = torch.zeros_like(zero)
        expected[sorted(rows), :] = True
        expected[:, sorted(cols)] = True
        assert torch.equal(zero, expected)
        assert torch.equal(out[~zero], spect[~zero])
        assert len(rows) <= 27 * n_masks and len(cols) <= 60 * n_masks  # 60 = 0.2 * 300 caps 70
        widths_f.append(len(rows))
        widths_t.append(len(cols))
    assert max(widths_f) > 10 and max(widths_t) > 20  # the widths really vary
    assert torch.all(spect > 0)  # the input is untouched


def test_spec_augment_time_cap_and_zero_width() -> None:
    spect = torch.rand(161, 50) + 1.0
    for seed in range(30):
        out = spec_augment(spect, np.random.default_rng(seed), 0, 1, 70, 1, 0.2)
        assert (out == 0).any(dim=0).sum() <= 10  # 0.2 * 50
        assert not (out == 0).all(dim=1).any()  # freq width 0: no row masked
    out = spec_augment(spect, np.random.default_rng(0), 0, 3, 70, 3, 0.0)
    assert torch.equal(out, spect)


# ---------------------------------------------------------------------------- pipeline and dataset


def test_augmentor_order_speed_gain_then_noise(tmp_path: Path) -> None:
    write_tone(tmp_path / "noise" / "n.wav", 0.3, freq=90, seed=5)
    cfg = AugmentConfig(
        speed_volume_perturb=True, noise_dir=str(tmp_path / "noise"), noise_prob=1.0, noise_min=0.2, noise_max=0.4
    )
    aug = Augmentor(cfg, SR)
    audio = sine(300.0, 0.8)
    out = aug.waveform(audio, Augmentor.rngs_for(1, 2, 3))
    rngs = Augmentor.rngs_for(1, 2, 3)
    r_speed, r_noise = rngs["speed"], rngs[1]
    factor, db = r_speed.uniform(0.9, 1.1), r_speed.uniform(-6.0, 8.0)
    expected = apply_gain(speed_perturb(audio, factor), db)
    assert r_noise.random() < 1.0
    level = r_noise.uniform(0.2, 0.4)
    expected = mix_noise(expected, aug.noise.pick(r_noise), level, r_noise)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(audio, sine(300.0, 0.8))  # input untouched


def test_noise_prob_zero_never_adds_noise(tmp_path: Path) -> None:
    write_tone(tmp_path / "noise" / "n.wav", 0.3, freq=90)
    aug = Augmentor(AugmentConfig(speed_volume_perturb=False, noise_dir=str(tmp_path / "noise"), noise_prob=0.0), SR)
    audio = sine(300.0, 0.5)
    for i in range(10):
        np.testing.assert_array_equal(aug.waveform(audio, Augmentor.rngs_for(0, 0, i)), audio)


def full_augment(noise_dir: Path) -> AugmentConfig:
    return AugmentConfig(speed_volume_perturb=True, spec_augment=True, noise_dir=str(noise_dir), noise_prob=0.5)


def test_dataset_augmentation_is_a_function_of_seed_epoch_index(tiny_dataset: Path, tmp_path: Path) -> None:
    write_tone(tmp_path / "noise" / "n.wav", 0.7, freq=77, seed=9)
    cfg = full_augment(tmp_path / "noise")
    a = SpectrogramDataset(tiny_dataset, augment=cfg, seed=11)
    b = SpectrogramDataset(tiny_dataset, augment=cfg, seed=11)
    a.set_epoch(3)
    b.set_epoch(3)
    for i in reversed(range(len(a))):  # order does not matter
        assert torch.equal(a[i][0], b[i][0])
    first = [a[i][0] for i in range(len(a))]
    a.set_epoch(4)
    assert all(not torch.equal(first[i], a[i][0]) for i in range(len(a)))
    a.set_epoch(3)
    assert all(torch.equal(first[i], a[i][0]) for i in range(len(a)))
    c = SpectrogramDataset(tiny_dataset, augment=cfg, seed=12)
    c.set_epoch(3)
    assert not torch.equal(first[0], c[0][0])


def test_dataset_without_augment_gives_plain_features(tiny_dataset: Path) -> None:
    plain = SpectrogramDataset(tiny_dataset)
    off = SpectrogramDataset(tiny_dataset, augment=AugmentConfig.none())
    masked = SpectrogramDataset(tiny_dataset, augment=AugmentConfig(speed_volume_perturb=False))
    for i in range(len(plain)):
        ref = torch.from_numpy(spectrogram(load_audio(plain.wav_paths[i])))
        plain.set_epoch(i)
        assert torch.equal(plain[i][0], ref)
        assert torch.equal(off[i][0], ref)
        spect = masked[i][0]
        keep = spect != 0
        assert spect.shape == ref.shape and torch.equal(spect[keep], ref[keep])


def test_augment_warmup_epochs_give_the_utterances_as_recorded(tiny_dataset: Path, tmp_path: Path) -> None:
    write_tone(tmp_path / "noise" / "n.wav", 0.7, freq=77, seed=9)
    cfg = full_augment(tmp_path / "noise")
    parser = AugmentConfig.add_args(argparse.ArgumentParser())
    assert AugmentConfig.from_args(parser.parse_args([])).warmup_epochs == 0
    argv = ["--augment-warmup-epochs", "2", "--noise-dir", str(tmp_path / "noise"), "--noise-prob", "0.5"]
    assert AugmentConfig.from_args(parser.parse_args(argv)) == replace(cfg, warmup_epochs=2)
    plain = SpectrogramDataset(tiny_dataset)
    warm = SpectrogramDataset(tiny_dataset, augment=replace(cfg, warmup_epochs=2), seed=11)
    always = SpectrogramDataset(tiny_dataset, augment=cfg, seed=11)
    for epoch in range(4):
        warm.set_epoch(epoch)
        always.set_epoch(epoch)
        for i in range(len(warm)):
            got, want = warm[i], (plain if epoch < 2 else always)[i]
            assert torch.equal(got[0], want[0]) and got[1:] == want[1:]
            if epoch < 2:
                assert not torch.equal(got[0], always[i][0])


def test_dataset_speed_perturb_changes_frame_count(tiny_dataset: Path) -> None:
    cfg = AugmentConfig(speed_volume_perturb=True, speed_range=(1.25, 1.25), gain_range_db=(0.0, 0.0))
    ds = SpectrogramDataset(tiny_dataset, augment=cfg)
    for i in range(len(ds)):
        n = math.ceil(ds.n_samples[i] / 1.25)
        assert ds[i][0].shape[1] == 1 + n // 160


def test_noise_files_are_resampled_to_the_model_rate(tmp_path: Path) -> None:
    noise = write_tone(tmp_path / "n.ogg", 0.5, sample_rate=44100, freq=1000.0, subtype="VORBIS")
    bank = NoiseBank(tmp_path, SR)
    x = bank.get(0)
    assert x.size == math.ceil(sf.info(str(noise)).frames * SR / 44100)
    assert abs(peak_frequency(x) - 1000.0) < 1.0


# ---------------------------------------------------------------------------- recording-condition augmentations

OFF = {"speed_volume_perturb": False, "spec_augment": False}


def speech_with_silence(seed: int = 0) -> np.ndarray:
    """0.4 s of floor noise, 0.8 s of harmonics, 0.4 s of floor noise (generated)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.8 * SR)) / SR
    voiced = 0.05 * sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 15))
    audio = 3e-4 * rng.standard_normal(int(1.6 * SR))
    audio[int(0.4 * SR) : int(0.4 * SR) + t.size] += voiced
    return audio.astype(np.float32)


@pytest.fixture
def babble_manifest(tmp_path: Path) -> Path:
    from data.manifest import write_manifest

    rows = []
    for i in range(4):
        wav = write_tone(tmp_path / "babble" / f"b{i}.wav", 0.6 + 0.2 * i, freq=180 + 40 * i, seed=10 + i)
        txt = wav.with_suffix(".txt")
        txt.write_text("A")
        rows.append((wav, txt))
    manifest = tmp_path / "babble.csv"
    write_manifest(manifest, rows)
    return manifest


NEW = {
    "trim": {"trim_prob": 1.0},
    "pad": {"pad_prob": 1.0},
    "rir": {"rir_prob": 1.0},
    "noise (generated)": {"noise_prob": 1.0},
    "babble": {"babble_prob": 1.0},
    "eq": {"eq_prob": 1.0},
    "gain": {"gain_prob": 1.0},
    "clip": {"clip_prob": 1.0},
    "telephone": {"telephone_prob": 1.0},
}


@pytest.mark.parametrize("name", sorted(NEW))
def test_each_new_augmentation_is_seeded_and_keeps_the_contract(name: str, babble_manifest: Path) -> None:
    cfg = AugmentConfig(**OFF, **NEW[name], babble_manifest=str(babble_manifest))
    aug = Augmentor(cfg, SR)
    audio = speech_with_silence()
    before = audio.copy()
    a = aug.waveform(audio, Augmentor.rngs_for(5, 1, 2))
    b = Augmentor(cfg, SR).waveform(audio, Augmentor.rngs_for(5, 1, 2))
    np.testing.assert_array_equal(a, b)  # a function of (seed, epoch, index)
    np.testing.assert_array_equal(audio, before)  # input untouched
    assert a.dtype == np.float32 and np.all(np.isfinite(a))
    if name == "trim":
        assert 0.8 * SR <= a.size < audio.size  # the speech stays, some silence goes
    elif name == "pad":
        assert audio.size < a.size <= audio.size + 2 * SR  # silence added, at most 1 s each side
    else:
        assert a.shape == audio.shape  # same length at the same rate
    assert not np.array_equal(a, audio)
    if name != "telephone":  # only four variants
        others = [aug.waveform(audio, Augmentor.rngs_for(5, epoch, 2)) for epoch in (2, 3)]
        assert not all(np.array_equal(a, o) for o in others)


def test_new_augmentations_match_data_corrupt(babble_manifest: Path) -> None:
    """Each step is the data.corrupt function, fed from its own stream after its coin."""
    from data import corrupt

    audio = speech_with_silence(1)

    def stream(name: str) -> np.random.Generator:
        rng = Augmentor.rngs_for(0, 0, 7)[name]
        assert rng.random() < 1.0  # the coin
        return rng

    def run(**kw) -> np.ndarray:
        return Augmentor(AugmentConfig(**OFF, **kw), SR).waveform(audio, Augmentor.rngs_for(0, 0, 7))

    rng = stream("rir")
    room = corrupt.draw_room(rng, (0.3, 0.8), (30.0, 150.0), (0.3, 1.0))
    expected = corrupt.reverberate(audio, corrupt.room_impulse_response(room, SR, rng))
    np.testing.assert_array_equal(run(rir_prob=1.0), expected)
    np.testing.assert_array_equal(run(eq_prob=1.0), corrupt.random_eq(audio, SR, stream("eq"), 10.0))
    np.testing.assert_array_equal(run(gain_prob=1.0), corrupt.random_gain(audio, stream("gain"), -30.0, 6.0))
    rng = stream("trim")
    lead, trail = rng.uniform(0.0, 0.1, size=2)
    np.testing.assert_array_equal(run(trim_prob=1.0), corrupt.trim_silence(audio, SR, lead, trail))
    rng = stream("telephone")
    band, bits = rng.random() < 0.5, rng.random() < 0.5
    expected = corrupt.telephone(audio, SR, band=(300.0, 3400.0) if band else None, bits=8 if bits else None)
    np.testing.assert_array_equal(run(telephone_prob=1.0), expected)
    variants = set()
    for i in range(60):
        rng = Augmentor.rngs_for(0, 0, i)["telephone"]
        rng.random()
        variants.add((rng.random() < 0.5, rng.random() < 0.5))
    assert len(variants) == 4  # plain 8 kHz, band-pass, codec, both
    rng = stream("clip")
    np.testing.assert_array_equal(run(clip_prob=1.0), corrupt.clip_fraction(audio, rng.uniform(0.005, 0.05)))
    rng = stream("pad")
    lead, trail = rng.uniform(0.0, 1.0, size=2)
    noise_dbfs = None if rng.random() < PAD_DIGITAL_SHARE else speech_level_db(audio, SR) - rng.uniform(30.0, 60.0)
    np.testing.assert_array_equal(run(pad_prob=1.0), corrupt.pad_silence(audio, SR, lead, trail, noise_dbfs, rng))


def test_padding_is_digital_silence_or_a_background_below_the_speech() -> None:
    audio = speech_with_silence(2)
    aug = Augmentor(AugmentConfig(**OFF, pad_prob=1.0, pad_s=(0.2, 0.2)), SR)
    speech_db = speech_level_db(audio, SR)
    digital, background = 0, []
    for i in range(30):
        a = aug.waveform(audio, Augmentor.rngs_for(0, 0, i))
        n = int(0.2 * SR)
        np.testing.assert_array_equal(a[n : n + audio.size], audio)
        lead = a[:n]
        if not lead.any():
            digital += 1
        else:
            background.append(speech_db - 10 * np.log10(np.mean(lead.astype(np.float64) ** 2)))
    assert 4 <= digital <= 18  # a third of the time
    assert background and all(29.0 <= d <= 61.0 for d in background)


def test_generated_noise_and_babble_hit_their_snr(babble_manifest: Path) -> None:
    from data import corrupt

    audio = speech_with_silence(2)
    for types in (("white",), ("pink",), ("babble-like",)):
        cfg = AugmentConfig(**OFF, noise_prob=1.0, noise_min=0.1, noise_max=0.1, noise_types=types)
        out = Augmentor(cfg, SR).waveform(audio, Augmentor.rngs_for(0, 0, 0))
        assert corrupt.snr_db(audio, out) == pytest.approx(20.0, abs=0.01)
    cfg = AugmentConfig(**OFF, babble_prob=1.0, babble_manifest=str(babble_manifest), babble_snr_db=(5.0, 15.0))
    snrs = [corrupt.snr_db(audio, Augmentor(cfg, SR).waveform(audio, Augmentor.rngs_for(0, 0, i))) for i in range(8)]
    assert all(5.0 - 1e-3 <= s <= 15.0 + 1e-3 for s in snrs) and max(snrs) - min(snrs) > 2


def test_babble_pool_is_fixed_and_draws_distinct_talkers(babble_manifest: Path) -> None:
    from data.augment import BabblePool

    a, b = BabblePool(babble_manifest, SR, size=3), BabblePool(babble_manifest, SR, size=3)
    assert a.paths == b.paths and len(a) == 3
    drawn = a.draw(5, np.random.default_rng(0))
    assert len(drawn) == 3 and len({x.size for x in drawn}) == 3


def test_streams_are_independent(babble_manifest: Path) -> None:
    """Switching augmentations on does not change another's draws: adding steps that are
    identities here (0 dB gain, noise level 0) leaves the reverberated output unchanged."""
    audio = speech_with_silence(3)
    base = AugmentConfig(**OFF, rir_prob=1.0, trim_prob=1.0)
    more = AugmentConfig(
        **OFF,
        rir_prob=1.0,
        trim_prob=1.0,
        gain_prob=1.0,
        gain_db=(0.0, 0.0),
        noise_prob=1.0,
        noise_min=0.0,
        noise_max=0.0,
        eq_prob=0.5,
        eq_max_db=0.0,
    )
    for i in range(5):
        rngs_a, rngs_b = Augmentor.rngs_for(9, 4, i), Augmentor.rngs_for(9, 4, i)
        a = Augmentor(base, SR).waveform(audio, rngs_a)
        b = Augmentor(more, SR).waveform(audio, rngs_b)
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Streams do not depend on which were used first.
    r1 = Augmentor.rngs_for(1, 2, 3)
    r1["eq"].random()
    assert r1["rir"].random() == Augmentor.rngs_for(1, 2, 3)["rir"].random()


def test_dataset_with_every_augmentation_is_a_function_of_seed_epoch_index(tiny_dataset: Path, babble_manifest: Path) -> None:
    cfg = AugmentConfig(
        noise_prob=0.5,
        babble_prob=0.5,
        babble_manifest=str(babble_manifest),
        rir_prob=0.5,
        telephone_prob=0.3,
        eq_prob=0.5,
        gain_prob=0.5,
        clip_prob=0.3,
        trim_prob=0.5,
    )
    a = SpectrogramDataset(tiny_dataset, augment=cfg, seed=3)
    b = SpectrogramDataset(tiny_dataset, augment=cfg, seed=3)
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in reversed(range(len(a))):
            x, y = a[i][0], b[i][0]
            assert torch.equal(x, y) and torch.isfinite(x).all()
    a.set_epoch(0)
    assert any(not torch.equal(a[i][0], b[i][0]) for i in range(len(a)))  # b is at epoch 1


def test_train_py_takes_the_flags_from_augment_config(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    import train
    from checkpoint import load_checkpoint

    parser = train.build_parser()
    recipe = replace(
        AugmentConfig(),
        **RECIPE_MIX,
        babble_manifest="data/an4_train_manifest.csv",
        word_crop_prob=train.RECIPE_WORD_CROP_PROB,
        word_alignments=train.DEFAULT_WORD_ALIGNMENTS,
        warmup_epochs=train.RECIPE_AUGMENT_WARMUP_EPOCHS,
    )
    args = parser.parse_args([])
    args.word_alignments = train.DEFAULT_WORD_ALIGNMENTS  # what resolve_word_alignments picks for AN4 (test_words.py)
    train.resolve_augment_warmup(args)
    assert AugmentConfig.from_args(args) == recipe  # the recipe, declared once
    zero = [x for name in (*RECIPE_MIX, "word_crop_prob") for x in (f"--{name.replace('_', '-')}", "0")]
    args = parser.parse_args(["--no-augment", "--no-spec-augment", *zero])
    train.resolve_augment_warmup(args)  # no augmentation: no warm-up either, and no error
    assert args.augment_warmup_epochs == 0 and AugmentConfig.from_args(args) == AugmentConfig.none()
    common = tiny_train_args(tiny_dataset, tmp_path)
    with pytest.raises(SystemExit) as exc:
        train.main([*common, "--rir-prob", "0", "--rir-rt60", "0.3", "0.5"])
    assert exc.value.code == 2 and "--rir-rt60 does nothing: reverberation is off" in capsys.readouterr().err
    flags = [
        "--noise-prob",
        "0.5",
        "--babble-prob",
        "0.5",
        "--rir-prob",
        "0.5",
        "--telephone-prob",
        "0.2",
        "--eq-prob",
        "0.5",
        "--gain-prob",
        "0.5",
        "--clip-prob",
        "0.2",
        "--trim-prob",
        "0.5",
        "--augment-warmup-epochs",
        "1",
    ]
    assert train.main([*common, *flags]) == 0
    args = load_checkpoint(tmp_path / "deepspeech_last.pth").training.args
    assert args["rir_prob"] == 0.5 and args["babble_manifest"] is None  # babble from --train-manifest
    assert args["augment_warmup_epochs"] == 1


def test_bench_augment_reports_every_row(tiny_dataset: Path, capsys) -> None:
    from bench import bench_augment

    assert bench_augment.main(["--manifest", str(tiny_dataset), "--max-utterances", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["utterances_timed"] == 2 and summary["manifest_utterances"] == 6
    rows = [k for k in summary if isinstance(summary[k], dict)]
    assert rows[:2] == ["none", "recipe (speed/volume + SpecAugment)"] and "recipe + all (p=1)" in rows
    assert rows[-2:] == ["recipe + RECIPE_MIX", "recipe + RECIPE_MIX without padding"]
    assert len(rows) == 2 + len(AugmentConfig.probabilities()) + 3
    assert all(summary[k]["epoch_cpu_s"] >= 0 and summary[k]["epoch_wall_s"] >= 0 for k in rows)
    assert bench_augment.main(["--runs", "0"]) == 2


def test_add_args_takes_the_recipe_probabilities_as_defaults() -> None:
    parser = AugmentConfig.add_args(argparse.ArgumentParser(), RECIPE_MIX)
    args = parser.parse_args([])
    assert {name: getattr(args, name) for name in RECIPE_MIX} == RECIPE_MIX
    assert "(default: 0.3)" in parser.format_help()
    assert AugmentConfig.add_args(argparse.ArgumentParser()).parse_args([]).noise_prob is None  # off unless --noise-dir
    with pytest.raises(ValueError, match="not augmentation probabilities"):
        AugmentConfig.add_args(argparse.ArgumentParser(), {"speed_range": 0.5})
