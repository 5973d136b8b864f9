"""Shared fixtures: tiny generated audio datasets and, when AN4_ARCHIVE is set, the real AN4 corpus."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def write_tone(
    path: Path,
    seconds: float,
    sample_rate: int = 16000,
    freq: float = 440.0,
    channels: int = 1,
    subtype: str = "PCM_16",
    seed: int = 0,
) -> Path:
    """A sine plus a little noise, written with soundfile."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), sample_rate, subtype=subtype)
    return path


def tiny_train_args(manifest: Path, out: Path, batch_size: int = 3, epochs: int = 1) -> list[str]:
    """train.py flags for a one-layer, 8-unit model trained and validated on ``manifest``,
    saving to ``out`` (``out/best.pth``)."""
    return [
        *("--train-manifest", str(manifest), "--val-manifest", str(manifest)),
        *("--save-folder", str(out), "--model-path", str(out / "best.pth")),
        *("--hidden-size", "8", "--hidden-layers", "1", "--conv-channels", "4"),
        *("--batch-size", str(batch_size), "--epochs", str(epochs), "--silent"),
    ]


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Six short utterances in the wav/ + txt/ layout and a relative manifest, sorted by duration.

    Returns the manifest path.
    """
    from data.manifest import write_manifest

    texts = ["A", "AB", "YES", "NO", "HELLO", "GO UP"]
    rows = []
    for i, text in enumerate(texts):
        wav = write_tone(tmp_path / "wav" / f"u{i}.wav", 0.4 + 0.1 * i, freq=200 + 60 * i, seed=i)
        txt = tmp_path / "txt" / f"u{i}.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text(text + "\n")
        rows.append((wav, txt))
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, rows)
    return manifest


@pytest.fixture(scope="session")
def an4_archive() -> Path:
    archive = os.environ.get("AN4_ARCHIVE")
    if not archive:
        pytest.skip("set AN4_ARCHIVE to the path of an4_raw.bigendian.tar.gz to run the real-corpus tests")
    path = Path(archive)
    if not path.is_file():
        pytest.fail(f"AN4_ARCHIVE={archive} does not exist")
    return path


@pytest.fixture(scope="session")
def an4_dir(an4_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real AN4 corpus prepared once per session by data/an4.py; returns the target dir
    holding an4_{train,val,test}_manifest.csv."""
    from data import an4

    target = tmp_path_factory.mktemp("an4")
    assert an4.main(["--archive", str(an4_archive), "--target-dir", str(target)]) == 0
    return target
