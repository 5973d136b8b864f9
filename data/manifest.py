"""CSV manifests: the one interface between corpus preparation and the data loader.

A manifest has one row per utterance and no header::

    wav_path,transcript_path[,duration_seconds]

as deepspeech.pytorch v2 wrote them (two columns), optionally with the duration so that
a large corpus loads without opening every audio file. Paths are relative to the
manifest's folder, or absolute (what deepspeech.pytorch v2 wrote). Standard library only.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

from utils import atomic_write


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the row and the fix."""


class Utterance(NamedTuple):
    """One manifest row: audio, transcript, and the duration in seconds when known."""

    wav: Path
    txt: Path
    duration: float | None = None


def spread_evenly(rows: list, max_rows: int | None) -> list:
    """All ``rows``, or ``max_rows`` of them spread evenly from the first to the last."""
    if max_rows is None or max_rows >= len(rows):
        return list(rows)
    idx = np.unique(np.round(np.linspace(0, len(rows) - 1, max_rows)).astype(int))
    return [rows[i] for i in idx]


def read_manifest(path: str | Path) -> list[Utterance]:
    """Rows of a CSV manifest with absolute paths.

    Blank lines are ignored; any other row that is not two non-empty fields plus an
    optional non-negative duration is an error naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found. Create one with data/an4.py or `python data/utils.py create`.")
    base = path.resolve().parent
    rows: list[Utterance] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) not in (2, 3) or not row[0].strip() or not row[1].strip():
                    raise ManifestError(f"{path}:{lineno}: expected 'wav_path,transcript_path[,duration]', got {','.join(row)!r}")
                duration = None
                if len(row) == 3:
                    try:
                        duration = float(row[2])
                    except ValueError:
                        duration = -1.0
                    if not (math.isfinite(duration) and duration >= 0):
                        raise ManifestError(
                            f"{path}:{lineno}: expected 'wav_path,transcript_path[,duration]' with a "
                            f"duration in seconds >= 0, got {row[2]!r}"
                        )
                wav, txt = (Path(p.strip()).expanduser() for p in row[:2])
                rows.append(
                    Utterance(wav if wav.is_absolute() else base / wav, txt if txt.is_absolute() else base / txt, duration)
                )
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not a UTF-8 text manifest") from None
    except csv.Error as e:
        raise ManifestError(f"{path}: not a CSV manifest ({e})") from None
    return rows


def write_manifest(path: str | Path, rows: Iterable[Utterance | tuple], relative: bool = True) -> Path:
    """Write a manifest atomically. Rows are :class:`Utterance` or ``(wav, txt[, duration])``;
    the duration column is written for rows that have one. With ``relative`` paths are
    relative to the manifest's folder (so a dataset and its manifests can move together)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        for row in rows:
            utt = row if isinstance(row, Utterance) else Utterance(*row)
            wav, txt = Path(utt.wav).resolve(), Path(utt.txt).resolve()
            if relative:
                wav, txt = Path(os.path.relpath(wav, base)), Path(os.path.relpath(txt, base))
            fields = [wav.as_posix(), txt.as_posix()]
            if utt.duration is not None:
                fields.append(f"{utt.duration:.3f}")
            writer.writerow(fields)
    return path
