"""Audio front end, manifests, labels, dataset, collate, samplers and the loader."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch
from conftest import write_tone

from data.audio import AudioConfig, AudioError, load_audio, spectrogram
from data.augment import AugmentConfig
from data.data_loader import AudioDataLoader, Batch, BucketingSampler, DistributedBucketingSampler, SpectrogramDataset, collate
from data.manifest import ManifestError, read_manifest, write_manifest
from data.text import LABELS, TranscriptError, ids_to_text, load_labels, text_to_ids

SR = 16000


def peak_frequency(x: np.ndarray, sr: int = SR) -> float:
    n_fft = 1 << 18
    return float(np.argmax(np.abs(np.fft.rfft(x * np.hanning(x.size), n_fft))) * sr / n_fft)


# ---------------------------------------------------------------------------- spectrogram


def reference_spectrogram(x: np.ndarray, n_fft: int = 320, hop: int = 160, normalize: bool = True) -> np.ndarray:
    """The documented features computed with numpy only: zero padding of n_fft // 2 on
    both sides, frames every hop, periodic Hamming window, |rfft|, log1p, then one
    scalar mean and (unbiased, like torch.std) standard deviation."""
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="constant")
    n_frames = 1 + x.size // hop
    frames = np.stack([padded[t * hop : t * hop + n_fft] for t in range(n_frames)])
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic: divides by N, not N-1
    spect = np.log1p(np.abs(np.fft.rfft(frames * window, axis=1))).T  # (F, T)
    if normalize:
        spect = (spect - spect.mean()) / spect.std(ddof=1)
    return spect


def test_window_is_periodic_hamming_as_scipy_get_window() -> None:
    periodic = torch.hamming_window(320, periodic=True).double().numpy()
    np.testing.assert_allclose(periodic, scipy.signal.get_window("hamming", 320), atol=1e-6)
    assert not np.allclose(periodic, scipy.signal.windows.hamming(320, sym=True))  # v2.0's symmetric window


@pytest.mark.parametrize("n_samples", [1, 159, 160, 161, 4000, 16000, 16079])
def test_spectrogram_shape(n_samples: int) -> None:
    cfg = AudioConfig()
    spect = spectrogram(np.random.default_rng(0).standard_normal(n_samples).astype(np.float32), cfg)
    assert spect.shape == (161, 1 + n_samples // 160) == (cfg.n_freq, cfg.n_frames(n_samples))
    assert spect.dtype == np.float32


@pytest.mark.parametrize("normalize", [True, False])
def test_spectrogram_values_match_numpy_reference(normalize: bool) -> None:
    x = (0.3 * np.random.default_rng(1).standard_normal(12345)).astype(np.float32)
    x[:2000] += 0.5 * np.sin(2 * np.pi * 440 * np.arange(2000) / SR).astype(np.float32)
    spect = spectrogram(x, AudioConfig(normalize="utterance" if normalize else "none")).astype(np.float64)
    np.testing.assert_allclose(spect, reference_spectrogram(x, normalize=normalize), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("window", ["hamming", "hann", "blackman", "bartlett"])
def test_windows_are_torch_periodic_windows(window: str) -> None:
    from data.audio import _window

    expected = getattr(torch, f"{window}_window")(320, periodic=True, dtype=torch.float64).numpy()
    np.testing.assert_allclose(_window(AudioConfig(window=window)), expected, atol=1e-6)


def test_global_normalisation_and_old_bool_field() -> None:
    from data.audio import with_feature_stats

    x = np.random.default_rng(3).standard_normal(4000).astype(np.float32)
    raw = spectrogram(x, AudioConfig(normalize="none"))
    mean, std = raw.mean(axis=1), raw.std(axis=1)
    cfg = with_feature_stats(AudioConfig(normalize="none"), mean, std)
    assert cfg.normalize == "global" and len(cfg.feature_mean) == 161
    np.testing.assert_allclose(spectrogram(x, cfg), (raw - mean[:, None]) / std[:, None], atol=1e-5)
    assert AudioConfig.from_dict(cfg.to_dict()) == cfg  # survives a checkpoint round trip
    assert AudioConfig(normalize=True).normalize == "utterance" and AudioConfig(normalize=False).normalize == "none"
    with pytest.raises(ValueError, match="feature_mean"):
        AudioConfig(normalize="global")
    with pytest.raises(ValueError, match="only used"):
        AudioConfig(feature_mean=(0.0,) * 161, feature_std=(1.0,) * 161)


def test_level_normalisation_makes_features_level_independent() -> None:
    """``level_db`` scales the waveform to a speech level (95th percentile of 10 ms frame
    energies) before the features: the same utterance 30 dB quieter or 6 dB louder gives the
    same features, which ``log1p`` alone does not."""
    from data.audio import normalize_level, speech_level_db

    rng = np.random.default_rng(4)
    x = np.zeros(16000, dtype=np.float32)
    x[4000:12000] = 0.2 * rng.standard_normal(8000).astype(np.float32)  # "speech" between silences
    x += 1e-4 * rng.standard_normal(16000).astype(np.float32)
    cfg = AudioConfig(level_db=-25.0)
    assert speech_level_db(normalize_level(x, cfg), SR) == pytest.approx(-25.0, abs=1e-3)
    assert speech_level_db(x, SR) == pytest.approx(
        10 * np.log10(np.percentile(np.mean(x.reshape(100, 160) ** 2, axis=1), 95)), abs=0.2
    )
    for db in (-30.0, 6.0):
        y = x * np.float32(10 ** (db / 20))
        np.testing.assert_allclose(spectrogram(y, cfg), spectrogram(x, cfg), atol=1e-4)
    assert np.abs(spectrogram(x * np.float32(10 ** (-30 / 20))) - spectrogram(x)).max() > 0.1  # without it
    np.testing.assert_array_equal(spectrogram(x, AudioConfig(level_db=None)), spectrogram(x))  # off: unchanged
    silence = np.zeros(800, dtype=np.float32)
    assert np.array_equal(normalize_level(silence, cfg), silence) and np.isfinite(spectrogram(silence, cfg)).all()
    assert AudioConfig.from_dict(cfg.to_dict()) == cfg
    assert AudioConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "level_db"}).level_db is None  # old files
    for bad in (3.0, -120.0, float("nan"), True, "-20"):
        with pytest.raises(ValueError, match="level_db"):
            AudioConfig(level_db=bad)


def test_remove_dc_makes_the_features_independent_of_a_dc_offset() -> None:
    rng = np.random.default_rng(5)
    x = np.zeros(16000, dtype=np.float32)
    x[4000:12000] = 0.2 * rng.standard_normal(8000).astype(np.float32)
    x -= x.mean()
    for cfg in (AudioConfig(remove_dc=True), AudioConfig(remove_dc=True, level_db=-25.0)):
        for offset in (0.01, -0.05, 0.2):
            np.testing.assert_allclose(spectrogram(x + np.float32(offset), cfg), spectrogram(x, cfg), atol=1e-4)
        plain = replace(cfg, remove_dc=False)
        assert np.abs(spectrogram(x + np.float32(0.05), plain) - spectrogram(x, plain)).max() > 0.1  # without it
        np.testing.assert_allclose(spectrogram(x, cfg), spectrogram(x, plain), atol=1e-5)  # no offset: the same
    assert np.isfinite(spectrogram(np.zeros(800, dtype=np.float32), AudioConfig(remove_dc=True))).all()
    cfg = AudioConfig(remove_dc=True)
    assert AudioConfig.from_dict(cfg.to_dict()) == cfg
    assert AudioConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "remove_dc"}).remove_dc is False  # old files
    for bad in (1, "yes", None):
        with pytest.raises(ValueError, match="remove_dc"):
            AudioConfig(remove_dc=bad)


def test_median_speech_level_of_files_skips_unreadable_ones_only_when_asked(tmp_path: Path) -> None:
    from data.audio import median_speech_level_db, speech_level_db

    rng = np.random.default_rng(5)
    levels = []
    for i, amplitude in enumerate((0.02, 0.1, 0.4)):
        x = (amplitude * rng.standard_normal(4000)).astype(np.float32)
        sf.write(tmp_path / f"{i}.wav", x, SR, subtype="FLOAT")
        levels.append(speech_level_db(load_audio(tmp_path / f"{i}.wav"), SR))
    (tmp_path / "bad.wav").write_bytes(b"RIFF not audio")
    paths = [tmp_path / "0.wav", tmp_path / "bad.wav", tmp_path / "1.wav", tmp_path / "2.wav"]
    assert median_speech_level_db(paths, SR, skip_unreadable=True) == pytest.approx(levels[1])
    with pytest.raises(AudioError, match="bad.wav"):
        median_speech_level_db(paths, SR)
    with pytest.raises(ValueError, match="no readable audio"):
        median_speech_level_db([tmp_path / "bad.wav"], SR, skip_unreadable=True)


def test_spectrogram_pads_with_zeros_not_reflection() -> None:
    x = np.ones(3200, dtype=np.float32)
    spect = spectrogram(x, AudioConfig(normalize="none"))
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(320) / 320)
    # Frame 0 sees 160 zeros then 160 ones: its DC bin is the sum of the window's second half.
    assert spect[0, 0].item() == pytest.approx(math.log1p(window[160:].sum()), rel=1e-5)
    assert spect[0, 5].item() == pytest.approx(math.log1p(window.sum()), rel=1e-5)


def test_spectrogram_normalisation_and_other_configs() -> None:
    x = np.random.default_rng(2).standard_normal(8000).astype(np.float32)
    spect = spectrogram(x)
    assert spect.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert spect.std(ddof=1) == pytest.approx(1.0, abs=1e-5)
    cfg = AudioConfig(sample_rate=8000, window_size=0.025, window_stride=0.01, window="hann")
    assert (cfg.n_fft, cfg.hop_length, cfg.n_freq) == (200, 80, 101)
    assert spectrogram(x, cfg).shape == (101, 1 + 8000 // 80)
    with pytest.raises(ValueError):
        spectrogram(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError):
        AudioConfig(window="kaiser")


# ---------------------------------------------------------------------------- audio loading


@pytest.mark.parametrize("source_rate", [8000, 44100])
def test_resampling_keeps_frequency_and_length(tmp_path: Path, source_rate: int) -> None:
    n = source_rate  # 1 s
    x = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / source_rate)
    sf.write(str(tmp_path / "a.wav"), x.astype(np.float32), source_rate, subtype="FLOAT")
    y = load_audio(tmp_path / "a.wav", SR)
    assert y.dtype == np.float32 and y.size == math.ceil(n * SR / source_rate) == SR
    assert abs(peak_frequency(y) - 1000.0) < 0.5
    assert np.sqrt(np.mean(y[500:-500] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_downmix_averages_channels(tmp_path: Path) -> None:
    x = (0.4 * np.sin(2 * np.pi * 300 * np.arange(1600) / SR)).astype(np.float32)
    sf.write(str(tmp_path / "cancel.wav"), np.stack([x, -x], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "cancel.wav"), 0.0, atol=1e-7)
    four = np.stack([x, 0.5 * x, 0 * x, -0.5 * x], axis=1)
    sf.write(str(tmp_path / "four.wav"), four, SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "four.wav"), 0.25 * x, atol=1e-7)


@pytest.mark.parametrize(
    "name,subtype,tol",
    [
        ("u8.wav", "PCM_U8", 1 / 64),
        ("s16.wav", "PCM_16", 1e-4),
        ("s24.wav", "PCM_24", 1e-6),
        ("s32.wav", "PCM_32", 1e-6),
        ("f32.wav", "FLOAT", 1e-7),
        ("f64.wav", "DOUBLE", 1e-7),
        ("a.flac", "PCM_16", 1e-4),
        ("b.flac", "PCM_24", 1e-6),
    ],
)
def test_load_formats(tmp_path: Path, name: str, subtype: str, tol: float) -> None:
    x = (0.6 * np.sin(2 * np.pi * 220 * np.arange(4000) / SR)).astype(np.float32)
    sf.write(str(tmp_path / name), x, SR, subtype=subtype)
    y = load_audio(tmp_path / name)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=tol)


def test_load_ogg_vorbis(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "a.ogg", 1.0, freq=500.0, subtype="VORBIS")
    y = load_audio(path)
    assert y.dtype == np.float32 and abs(y.size - SR) <= 1
    assert abs(peak_frequency(y) - 500.0) < 1.0


def bad_audio_files(tmp_path: Path) -> dict[str, tuple[Path, type]]:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    header_only = tmp_path / "header_only.wav"
    sf.write(str(header_only), np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    nan = tmp_path / "nan.wav"
    x = np.zeros(1600, dtype=np.float32)
    x[100] = np.nan
    sf.write(str(nan), x, SR, subtype="FLOAT")
    return {
        "missing": (tmp_path / "missing.wav", FileNotFoundError),
        "empty": (empty, AudioError),
        "garbage": (garbage, AudioError),
        "header_only": (header_only, AudioError),
        "nan": (nan, AudioError),
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "header_only", "nan"])
def test_bad_audio_raises_naming_the_file(tmp_path: Path, kind: str) -> None:
    path, error = bad_audio_files(tmp_path)[kind]
    with pytest.raises(error) as info:
        load_audio(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------- manifests and labels


def test_manifest_round_trip_and_moving_the_folder(tiny_dataset: Path, tmp_path: Path) -> None:
    rows = read_manifest(tiny_dataset)
    assert len(rows) == 6 and all(w.is_absolute() and w.is_file() and t.is_file() and d is None for w, t, d in rows)
    text = tiny_dataset.read_text()
    assert str(tmp_path) not in text and text.splitlines()[0] == "wav/u0.wav,txt/u0.txt"
    copy = tmp_path / "again.csv"
    write_manifest(copy, rows)
    assert read_manifest(copy) == rows
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    shutil.copytree(tmp_path, moved)
    try:
        moved_rows = read_manifest(moved / "manifest.csv")
        assert [w.name for w, *_ in moved_rows] == [w.name for w, *_ in rows]
        assert all(w.is_relative_to(moved) and w.is_file() for w, *_ in moved_rows)
        assert len(SpectrogramDataset(moved / "manifest.csv")) == 6
    finally:
        shutil.rmtree(moved)


def test_absolute_path_manifest_from_deepspeech_pytorch_v2(tiny_dataset: Path, tmp_path: Path) -> None:
    rows = read_manifest(tiny_dataset)
    legacy = tmp_path / "elsewhere" / "legacy.csv"
    legacy.parent.mkdir()
    legacy.write_text("".join(f"{w},{t}\n" for w, t, _ in rows) + "\n")  # trailing blank line is fine
    assert read_manifest(legacy) == rows
    assert SpectrogramDataset(legacy).texts == ["A", "AB", "YES", "NO", "HELLO", "GO UP"]


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ("wav/u0.wav", "expected"),
        ("wav/u0.wav,txt/u0.txt,2.0,extra", "expected"),
        ("wav/u0.wav,", "expected"),
        (",txt/u0.txt", "expected"),
        ("wav/u0.wav,txt/u0.txt,soon", "expected"),
        ("wav/u0.wav,txt/u0.txt,-1", "expected"),
        ("wav/u0.wav,txt/u0.txt,nan", "expected"),
    ],
)
def test_bad_manifest_rows_raise_with_file_and_line(tiny_dataset: Path, bad_row: str, message: str) -> None:
    lines = tiny_dataset.read_text().splitlines()
    lines.insert(2, bad_row)
    tiny_dataset.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=f"{tiny_dataset}:3: {message}"):
        read_manifest(tiny_dataset)
    with pytest.raises(ManifestError):
        SpectrogramDataset(tiny_dataset, on_error="skip")  # a broken manifest is never skipped


def test_duration_column_is_used_without_opening_the_audio(tiny_dataset: Path, tmp_path: Path) -> None:
    rows = read_manifest(tiny_dataset)
    with_durations = tmp_path / "with_durations.csv"
    write_manifest(with_durations, [(w, t, 1.25) for w, t, _ in rows])
    assert tiny_dataset.read_text().splitlines()[0].count(",") == 1
    assert with_durations.read_text().splitlines()[0].endswith(",1.250")
    for w, _, _ in rows:
        w.unlink()  # nothing reads the audio at construction when the manifest has durations
    ds = SpectrogramDataset(with_durations)
    assert ds.durations == [1.25] * 6 and ds.n_samples == [20000] * 6


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_labels_loading(tmp_path: Path) -> None:
    assert load_labels() == list(LABELS) and len(LABELS) == 29 and LABELS[0] == "_" and LABELS[28] == " "
    good = tmp_path / "labels.json"
    good.write_text(json.dumps(list("_abc ")))
    assert load_labels(good) == list("_abc ")
    good.write_text(json.dumps("_xy "))
    assert load_labels(good) == list("_xy ")
    cases = {
        "missing": (None, FileNotFoundError, "not found"),
        "garbage": ("{not json", ValueError, "not a JSON list"),
        "multi": (json.dumps(["_", "ab", " "]), ValueError, "single characters"),
        "dupes": (json.dumps(["_", "a", "a", " "]), ValueError, "duplicates"),
        "blank": (json.dumps(["a", "_", " "]), ValueError, "blank"),
        "space": (json.dumps(["_", "a"]), ValueError, "space"),
    }
    for name, (content, error, message) in cases.items():
        path = tmp_path / f"{name}.json"
        if content is not None:
            path.write_text(content)
        with pytest.raises(error, match=message) as info:
            load_labels(path)
        assert str(path) in str(info.value)


def test_text_encoding_normalises_and_rejects_unknown_characters() -> None:
    ids = text_to_ids("  hello   world's ", LABELS)
    assert ids_to_text(ids, LABELS) == "HELLO WORLD'S"
    assert ids[0] == LABELS.index("H") and ids[5] == 28
    with pytest.raises(TranscriptError, match=r"x\.txt: .*'3', '_'"):
        text_to_ids("A_3", LABELS, source="x.txt")
    assert text_to_ids("ab", list("_ab ")) == [1, 2]
    with pytest.raises(TranscriptError):
        text_to_ids("AB", list("_ab "))  # lower-case labels: no upper-casing


# ---------------------------------------------------------------------------- dataset


def test_dataset_items(tiny_dataset: Path) -> None:
    ds = SpectrogramDataset(tiny_dataset)
    assert len(ds) == 6 and ds.texts == ["A", "AB", "YES", "NO", "HELLO", "GO UP"]
    assert ds.durations == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert sum(ds.durations) == pytest.approx(3.9)
    assert ds.n_frames == [1 + round(d * SR) // 160 for d in ds.durations]
    spect, ids, path, text = ds[5]
    assert spect.shape == (161, ds.n_frames[5]) and spect.dtype == torch.float32
    assert ids == text_to_ids("GO UP", LABELS) and text == "GO UP" and path.endswith("u5.wav")
    assert torch.equal(spect, torch.from_numpy(spectrogram(load_audio(path))))
    assert torch.equal(ds[-1][0], spect)
    with pytest.raises(IndexError):
        ds[6]


def test_single_word_repeats_list_one_word_utterances_k_times(tiny_dataset: Path, tmp_path: Path) -> None:
    plain = SpectrogramDataset(tiny_dataset)
    ds = SpectrogramDataset(tiny_dataset, single_word_repeats=3)
    # "A", "AB", "YES", "NO", "HELLO" are one word each; "GO UP" is two.
    assert ds.texts == [t for t in plain.texts for _ in range(3 if " " not in t else 1)]
    assert len(ds) == 16 and ds.single_word_repeats == 3
    assert ds.wav_paths[:4] == [plain.wav_paths[0]] * 3 + [plain.wav_paths[1]]
    assert ds.durations == [d for d, t in zip(plain.durations, plain.texts) for _ in range(3 if " " not in t else 1)]
    assert ds.n_frames == [plain.n_frames[0]] * 3 + [plain.n_frames[1]] * 3 + ds.n_frames[6:]
    assert torch.equal(ds[1][0], plain[0][0]) and torch.equal(ds[15][0], plain[5][0])
    # Copies are separate indices: with augmentation each has its own draws.
    aug = SpectrogramDataset(
        tiny_dataset, augment=AugmentConfig(speed_volume_perturb=True, spec_augment=True), seed=7, single_word_repeats=3
    )
    assert aug.texts[0] == aug.texts[1] == "A" and not torch.equal(aug[0][0], aug[1][0])
    assert BucketingSampler(ds, 4).bins[0] == [0, 1, 2, 3]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="single_word_repeats"):
            SpectrogramDataset(tiny_dataset, single_word_repeats=bad)
    with pytest.raises(ValueError, match="lazy_transcripts"):
        SpectrogramDataset(tiny_dataset, single_word_repeats=2, lazy_transcripts=True)


def test_dataset_durations_from_other_rates(tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "a.wav", 0.5, sample_rate=44100)
    (tmp_path / "a.txt").write_text("A")
    write_manifest(tmp_path / "m.csv", [(wav, tmp_path / "a.txt")])
    ds = SpectrogramDataset(tmp_path / "m.csv")
    assert ds.n_samples == [load_audio(wav).size] and ds.n_frames == [ds[0][0].shape[1]]


def test_dataset_caches_decoded_audio(tiny_dataset: Path) -> None:
    ds = SpectrogramDataset(tiny_dataset)
    first = ds[0][0]
    Path(ds.wav_paths[0]).unlink()
    assert torch.equal(ds[0][0], first)
    uncached = SpectrogramDataset(tiny_dataset.parent / "manifest.csv", cache_audio=False, on_error="skip")
    assert len(uncached) == 5
    with pytest.raises(ValueError):
        uncached.preload()


def test_dataset_unknown_character_names_file_and_char(tiny_dataset: Path) -> None:
    txt = tiny_dataset.parent / "txt" / "u3.txt"
    txt.write_text("NO#\n")
    with pytest.raises(TranscriptError, match=rf"{txt}: .*'#'"):
        SpectrogramDataset(tiny_dataset)


def test_dataset_on_error_raise_and_skip(tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tiny_dataset.parent
    (root / "txt" / "u1.txt").write_text("A#B")
    (root / "wav" / "u2.wav").unlink()
    (root / "wav" / "u3.wav").write_bytes(b"")
    (root / "wav" / "u4.wav").write_bytes(b"RIFF garbage that is not audio")
    (root / "txt" / "u5.txt").unlink()
    with pytest.raises(TranscriptError, match="u1.txt"):
        SpectrogramDataset(tiny_dataset)
    with caplog.at_level(logging.WARNING):
        ds = SpectrogramDataset(tiny_dataset, on_error="skip")
    assert ds.texts == ["A"] and len(ds.skipped) == 5
    reasons = dict(ds.skipped)
    assert "'#'" in reasons[str(root / "wav" / "u1.wav")]
    assert "audio file not found" in reasons[str(root / "wav" / "u2.wav")]
    assert "empty" in reasons[str(root / "wav" / "u3.wav")]
    assert "cannot read audio" in reasons[str(root / "wav" / "u4.wav")]
    assert "transcript file not found" in reasons[str(root / "wav" / "u5.wav")]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 5 of 6" in warnings[0].getMessage()
    (root / "txt" / "u0.txt").write_text("?")
    with pytest.raises(ManifestError, match="no usable utterances"):
        SpectrogramDataset(tiny_dataset, on_error="skip")
    with pytest.raises(ValueError):
        SpectrogramDataset(tiny_dataset, on_error="ignore")


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "header_only"])
def test_dataset_rejects_bad_audio_at_construction(tmp_path: Path, kind: str) -> None:
    path, error = bad_audio_files(tmp_path)[kind]
    (tmp_path / "t.txt").write_text("A")
    (tmp_path / "m.csv").write_text(f"{path.name},t.txt\n")
    with pytest.raises(error, match=str(path)):
        SpectrogramDataset(tmp_path / "m.csv")


def test_dataset_audio_error_at_load_time_names_the_file(tmp_path: Path) -> None:
    path, _ = bad_audio_files(tmp_path)["nan"]  # a valid header: only decoding finds the NaN
    (tmp_path / "t.txt").write_text("A")
    (tmp_path / "m.csv").write_text(f"{path.name},t.txt\n")
    ds = SpectrogramDataset(tmp_path / "m.csv")
    with pytest.raises(AudioError, match=f"{path}: audio holds NaN"):
        ds[0]
    loader = AudioDataLoader(ds, batch_size=1, num_workers=1)
    with pytest.raises(AudioError) as info:
        next(iter(loader))
    assert str(info.value) == f"{path}: audio holds NaN or infinite samples"  # no worker traceback


# ---------------------------------------------------------------------------- collate


def test_collate_pads_and_keeps_order() -> None:
    a, b, c = torch.randn(161, 7), torch.randn(161, 12), torch.randn(161, 3)
    batch = collate([(a, [2, 3], "a.wav", "AB"), (b, [4], "b.wav", "C"), (c, [], "c.wav", "")])
    assert isinstance(batch, Batch)
    assert batch.inputs.shape == (3, 1, 161, 12) and batch.inputs.dtype == torch.float32
    assert torch.equal(batch.inputs[0, 0, :, :7], a) and torch.all(batch.inputs[0, 0, :, 7:] == 0)
    assert torch.equal(batch.inputs[1, 0], b)
    assert torch.equal(batch.inputs[2, 0, :, :3], c) and torch.all(batch.inputs[2, 0, :, 3:] == 0)
    assert batch.input_lengths.tolist() == [7, 12, 3] and batch.input_lengths.dtype == torch.long
    assert batch.targets.tolist() == [2, 3, 4] and batch.targets.dtype == torch.long
    assert batch.target_lengths.tolist() == [2, 1, 0] and batch.target_lengths.dtype == torch.long
    assert batch.paths == ["a.wav", "b.wav", "c.wav"] and batch.texts == ["AB", "C", ""]
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.inputs, batch.inputs)
    with pytest.raises(ValueError):
        collate([])
    with pytest.raises(ValueError, match="b.wav"):
        collate([(a, [1], "a.wav", "A"), (torch.randn(80, 5), [1], "b.wav", "A")])


# ---------------------------------------------------------------------------- samplers


def epoch_batches(sampler: BucketingSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sortagrad_first_epoch_then_seeded_shuffled_bins() -> None:
    sampler = BucketingSampler(10, batch_size=3, seed=1)
    bins = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert len(sampler) == 4
    assert epoch_batches(sampler, 0) == bins
    shuffled = [epoch_batches(sampler, e) for e in range(1, 6)]
    assert all(sorted(batches) == bins for batches in shuffled)
    assert len({str(b) for b in shuffled}) > 1
    again = BucketingSampler(10, batch_size=3, seed=1)
    assert [epoch_batches(again, e) for e in range(1, 6)] == shuffled
    other = BucketingSampler(10, batch_size=3, seed=2)
    assert [epoch_batches(other, e) for e in range(1, 6)] != shuffled


def test_no_shuffle_no_sortagrad_and_drop_last() -> None:
    fixed = BucketingSampler(7, batch_size=2, shuffle=False)
    assert all(epoch_batches(fixed, e) == [[0, 1], [2, 3], [4, 5], [6]] for e in range(3))
    no_sorta = BucketingSampler(40, batch_size=2, sortagrad=False, seed=3)
    first = epoch_batches(no_sorta, 0)
    assert first != sorted(first) and sorted(first) == [[i, i + 1] for i in range(0, 40, 2)]
    dropped = BucketingSampler(7, batch_size=2, drop_last=True)
    assert len(dropped) == 3 and epoch_batches(dropped, 0) == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError):
        BucketingSampler(1, batch_size=2, drop_last=True)
    with pytest.raises(ValueError):
        BucketingSampler(0, batch_size=2)
    with pytest.raises(ValueError):
        BucketingSampler(5, batch_size=0)


def test_bins_follow_dataset_durations(tiny_dataset: Path) -> None:
    ds = SpectrogramDataset(tiny_dataset)
    assert epoch_batches(BucketingSampler(ds, 4), 0) == [[0, 1, 2, 3], [4, 5]]
    ds.durations = [0.9, 0.1, 0.5, 0.3, 0.3, 0.2]  # an unsorted (V3-style) manifest
    assert epoch_batches(BucketingSampler(ds, 2), 0) == [[1, 5], [3, 4], [2, 0]]


@pytest.mark.parametrize("epoch,done", [(0, 2), (3, 0), (3, 4), (3, 7)])
def test_resume_mid_epoch_gives_exactly_the_remaining_batches(epoch: int, done: int) -> None:
    full = epoch_batches(BucketingSampler(20, 3, seed=5), epoch)
    run = BucketingSampler(20, 3, seed=5)
    run.set_epoch(epoch)
    for _, _ in zip(range(done), run):
        run.batches_done += 1  # the training loop counts finished steps
    state = run.state_dict()
    assert state == {"epoch": epoch, "batches_done": done, "n_batches": 7}
    assert all(type(v) is int for v in state.values())
    assert len(run) - run.batches_done == 7 - done
    resumed = BucketingSampler(20, 3, seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) - resumed.batches_done == 7 - done and resumed.start_batch == done
    resumed.set_epoch(epoch)  # what a training loop does on resume: keeps the position
    assert resumed.start_batch == done and resumed.batches_done == done
    assert list(resumed) == full[done:]
    assert resumed.start_batch == 0 and resumed.batches_done == done  # iterating does not count
    assert list(resumed) == full  # a second pass of the same epoch starts over
    assert resumed.batches_done == 0
    resumed.set_epoch(epoch + 1)
    assert resumed.state_dict() == {"epoch": epoch + 1, "batches_done": 0, "n_batches": 7}


def test_load_state_dict_rejects_mismatched_state() -> None:
    sampler = BucketingSampler(20, 3)
    with pytest.raises(ValueError, match="7 batches per epoch but this sampler has 5"):
        BucketingSampler(20, 4).load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError):
        sampler.load_state_dict({"epoch": 1})
    with pytest.raises(ValueError):
        sampler.load_state_dict({"epoch": 1, "batches_done": 8})
    sampler.load_state_dict({"epoch": 2, "batches_done": 1})  # n_batches is optional
    assert len(list(sampler)) == 6


@pytest.mark.parametrize("n_items,replicas", [(23, 2), (24, 3), (5, 4)])
def test_distributed_sampler_partitions_the_same_bins(n_items: int, replicas: int) -> None:
    base = BucketingSampler(n_items, 2, seed=9)
    n_bins = len(base.bins)
    for epoch in range(3):
        ranks = [DistributedBucketingSampler(n_items, 2, seed=9, num_replicas=replicas, rank=r) for r in range(replicas)]
        per_rank = [epoch_batches(s, epoch) for s in ranks]
        assert all(len(b) == len(s) == math.ceil(n_bins / replicas) for b, s in zip(per_rank, ranks))
        covered = [tuple(b) for batches in per_rank for b in batches]
        assert sorted(set(covered)) == sorted(tuple(b) for b in base.bins)  # all bins, only bins
        assert len(covered) - n_bins == (-n_bins) % replicas  # padding only
        order = epoch_batches(base, epoch)
        interleaved = [per_rank[k % replicas][k // replicas] for k in range(n_bins)]
        assert interleaved == order  # same shuffle on every rank, rank r takes bins r, r+R, ...
    with pytest.raises(ValueError):
        DistributedBucketingSampler(10, 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="torch.distributed"):
        DistributedBucketingSampler(10, 2)


def test_distributed_sampler_resumes() -> None:
    full = epoch_batches(DistributedBucketingSampler(30, 2, num_replicas=2, rank=1), 2)
    run = DistributedBucketingSampler(30, 2, num_replicas=2, rank=1)
    run.load_state_dict({"epoch": 2, "batches_done": 3, "n_batches": 8})
    run.set_epoch(2)
    assert list(run) == full[3:]


# ---------------------------------------------------------------------------- loader


def collect(loader: AudioDataLoader, epochs: range) -> list[Batch]:
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out.extend(loader)
    return out


def assert_same_batches(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.paths == y.paths and x.texts == y.texts
        for name in ("inputs", "input_lengths", "targets", "target_lengths"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name


def test_loader_passes_collate_to_dataloader(tiny_dataset: Path) -> None:
    ds = SpectrogramDataset(tiny_dataset)
    loader = AudioDataLoader(ds, batch_size=4)
    assert loader.collate_fn is collate
    batches = list(loader)
    assert [b.inputs.shape[0] for b in batches] == [4, 2]
    assert batches[1].input_lengths.tolist() == ds.n_frames[4:]


@pytest.mark.parametrize("persistent", [True, False])
def test_workers_give_identical_augmented_batches(tiny_dataset: Path, tmp_path: Path, persistent: bool) -> None:
    write_tone(tmp_path / "noise" / "n.wav", 0.3, freq=60, seed=4)
    cfg = AugmentConfig(speed_volume_perturb=True, spec_augment=True, noise_dir=str(tmp_path / "noise"))

    def run(workers: int) -> list[Batch]:
        ds = SpectrogramDataset(tiny_dataset, augment=cfg, seed=7)
        sampler = BucketingSampler(ds, 2, seed=7)
        loader = AudioDataLoader(ds, batch_sampler=sampler, num_workers=workers, persistent_workers=persistent)
        return collect(loader, range(3))

    serial, parallel = run(0), run(2)
    assert_same_batches(serial, parallel)
    assert not torch.equal(serial[0].inputs, serial[3].inputs)  # epochs differ (same first bin)


def test_loader_resumes_mid_epoch_with_workers(tiny_dataset: Path) -> None:
    cfg = AugmentConfig(spec_augment=True)

    def make(workers: int) -> tuple[AudioDataLoader, BucketingSampler]:
        ds = SpectrogramDataset(tiny_dataset, augment=cfg)
        sampler = BucketingSampler(ds, 1, seed=3)
        return AudioDataLoader(ds, batch_sampler=sampler, num_workers=workers), sampler

    reference = collect(make(0)[0], range(2))
    loader, sampler = make(2)
    loader.set_epoch(1)
    it = iter(loader)
    for k in range(4):
        next(it)
        sampler.batches_done += 1  # the training loop's count, whatever the workers prefetched
        assert sampler.state_dict()["batches_done"] == k + 1
    state = sampler.state_dict()
    del it
    loader2, sampler2 = make(0)
    sampler2.load_state_dict(state)
    assert len(sampler2) - sampler2.batches_done == 2
    resumed = collect(loader2, range(1, 2))
    assert_same_batches(resumed, reference[6 + 4 :])


def test_bench_features_quick(capsys: pytest.CaptureFixture) -> None:
    from bench.bench_features import main

    assert main(["--quick", "--n-utts", "2", "--runs", "1", "--seconds", "0.5"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["features_x_realtime"] > 1 and summary["dataset_augmented_x_realtime"] > 1
    assert summary["features_level_norm_x_realtime"] > 1
    assert any(line.startswith("spectrogram, level_db") for line in out)
    assert main(["--runs", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
