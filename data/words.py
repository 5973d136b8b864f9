"""Word alignments of a manifest, and cutting an utterance into words.

A word alignment file (written by ``python align.py``) is JSON::

    {"format": "deepspeech-ctc word alignments", "version": 1,
     "model": "models/an4.pth", "frame_shift": 0.04,
     "utterances": [{"wav": "train/wav/an251-fash-b.wav", "words": ["YES"], "spans": [[0.52, 0.76]]}, ...]}

``wav`` is relative to the file's own folder (or absolute), so a data folder moves with its
alignments. ``spans`` are per word, in seconds: from the first to one frame past the last
CTC emission of the word's characters. Those emissions are peaky and say where a word is,
not where it starts and ends, so :func:`word_cut_points` cuts between two words at the
quietest 10 ms of the gap between their spans: a pause when there is one.

:func:`crop_words` (training augmentation, ``--word-crop-prob``) and ``align.py
--clips-dir`` (isolated-word evaluation sets) both cut with :func:`word_cut_points`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.audio import LEVEL_PERCENTILE, frame_levels_db
from utils import write_text_atomic

FORMAT = "deepspeech-ctc word alignments"
VERSION = 1
FRAME_S = 0.01  # energy frames of the cut search


class AlignmentFileError(ValueError):
    """A word alignment file that cannot be used (the message names the file and the fix)."""


@dataclass(frozen=True)
class WordAlignment:
    """The words of one utterance and their spans (seconds)."""

    words: tuple[str, ...]
    spans: tuple[tuple[float, float], ...]


def word_cut_points(
    audio: np.ndarray, sample_rate: int, spans: Sequence[Sequence[float]], levels: np.ndarray | None = None
) -> list[int]:
    """Sample offsets that cut ``audio`` into its words: ``len(spans) + 1`` non-decreasing
    values, the first 0 and the last ``len(audio)``. ``levels``: the audio's
    :func:`data.audio.frame_levels_db`, when the caller has them already.

    Between word ``i`` and ``i + 1`` the cut is the middle of the quietest 10 ms frame that
    lies wholly in the gap between ``spans[i]`` and ``spans[i + 1]``; with no such frame
    (adjacent or overlapping spans) it is the middle of the gap.
    """
    n = len(audio)
    cuts = [0]
    if len(spans) > 1:
        if levels is None:
            levels = frame_levels_db(np.asarray(audio, dtype=np.float32), sample_rate)
        hop = max(1, sample_rate // 100)
        for (_, end), (start, _) in zip(spans[:-1], spans[1:]):
            a, b = math.ceil(end / FRAME_S - 1e-9), math.floor(start / FRAME_S + 1e-9)
            b = min(b, len(levels))
            if b > a:
                cut = (a + int(np.argmin(levels[a:b]))) * hop + hop // 2
            else:
                cut = round((end + start) / 2 * sample_rate)
            cuts.append(min(n, max(cuts[-1], cut)))
    cuts.append(n)
    return cuts


def pause_depths_db(audio: np.ndarray, sample_rate: int, cuts: Sequence[int], levels: np.ndarray | None = None) -> list[float]:
    """For each cut between two words (``cuts[1:-1]``, from :func:`word_cut_points`): how
    many dB the 10 ms frame at the cut lies below the utterance's speech level (the 95th
    percentile of its frame energies, as :func:`data.audio.speech_level_db`). A pause
    between the words is deep; a cut through speech that runs on from one word into the
    next is shallow. ``levels`` as for :func:`word_cut_points`."""
    if levels is None:
        levels = frame_levels_db(np.asarray(audio, dtype=np.float32), sample_rate)
    speech = float(np.percentile(levels, LEVEL_PERCENTILE))
    hop = max(1, sample_rate // 100)
    return [speech - float(levels[min(len(levels) - 1, c // hop)]) for c in cuts[1:-1]]


def crop_words(
    audio: np.ndarray,
    sample_rate: int,
    alignment: WordAlignment,
    rng: np.random.Generator,
    max_words: int,
    min_pause_db: float = 0.0,
    skip_letter_runs: bool = False,
) -> tuple[np.ndarray, str]:
    """A random run of 1 to ``max_words`` consecutive words of a multi-word utterance, cut
    with :func:`word_cut_points`: ``(audio[a:b], its transcript)``. Never the whole
    utterance; an utterance of one word comes back unchanged.

    ``min_pause_db > 0`` cuts only where the speaker paused: a run's ends must be the
    utterance's ends or cuts at least that deep (:func:`pause_depths_db`); the run length
    is drawn among the lengths that have such a run, then the run among those. With no
    such run the utterance comes back whole.

    ``skip_letter_runs`` never cuts out a run made only of spelled letters (words of one
    character): an utterance that spells a name gives whole words or none, so a short
    sound alone is not taught to be a letter. Runs are drawn as with ``min_pause_db``.
    """
    words = alignment.words
    if len(words) < 2:
        return audio, " ".join(words)
    if min_pause_db <= 0 and not skip_letter_runs:
        cuts = word_cut_points(audio, sample_rate, alignment.spans)
        k = int(rng.integers(1, min(max_words, len(words) - 1) + 1))
        i = int(rng.integers(0, len(words) - k + 1))
        return audio[cuts[i] : cuts[i + k]], " ".join(words[i : i + k])
    levels = frame_levels_db(np.asarray(audio, dtype=np.float32), sample_rate) if min_pause_db > 0 else None
    cuts = word_cut_points(audio, sample_rate, alignment.spans, levels)
    cuttable = [True] * (len(words) + 1)
    if min_pause_db > 0:
        cuttable = [True, *(d >= min_pause_db for d in pause_depths_db(audio, sample_rate, cuts, levels)), True]

    def allowed(i: int, k: int) -> bool:
        letters_only = all(len(w) == 1 for w in words[i : i + k])
        return cuttable[i] and cuttable[i + k] and not (skip_letter_runs and letters_only)

    runs: dict[int, list[int]] = {}
    for k in range(1, min(max_words, len(words) - 1) + 1):
        starts = [i for i in range(len(words) - k + 1) if allowed(i, k)]
        if starts:
            runs[k] = starts
    if not runs:
        return audio, " ".join(words)
    k = list(runs)[int(rng.integers(0, len(runs)))]
    i = runs[k][int(rng.integers(0, len(runs[k])))]
    return audio[cuts[i] : cuts[i + k]], " ".join(words[i : i + k])


def write_alignments(path: str | Path, entries: Sequence[tuple[Path, WordAlignment]], info: dict) -> Path:
    """Write ``(wav path, alignment)`` pairs to ``path`` (atomically), with ``info`` (model,
    frame shift, ...) at the top level. Paths are stored relative to the file's folder."""
    path = Path(path)
    folder = path.resolve().parent
    utterances = []
    for wav, a in entries:
        wav = Path(wav).resolve()
        try:
            stored = os.path.relpath(wav, folder)
        except ValueError:  # another drive (Windows)
            stored = str(wav)
        utterances.append(
            {"wav": Path(stored).as_posix(), "words": list(a.words), "spans": [[round(s, 4), round(e, 4)] for s, e in a.spans]}
        )
    head = json.dumps({"format": FORMAT, "version": VERSION, **info}, indent=1)[:-2]  # without "\n}"
    body = ",\n  ".join(json.dumps(u) for u in utterances)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, f'{head},\n "utterances": [\n  {body}\n ]\n}}\n')


def count_aligned(alignments: dict[Path, WordAlignment], wav_paths: Iterable[str | Path]) -> int:
    """How many of ``wav_paths`` have an alignment in ``alignments`` (from :func:`read_alignments`)."""
    return sum(Path(w).resolve() in alignments for w in wav_paths)


def read_alignments(path: str | Path) -> dict[Path, WordAlignment]:
    """The alignments of a file written by :func:`write_alignments`, keyed by resolved wav path.

    Raises:
        AlignmentFileError: missing file, not JSON, not an alignment file, or a malformed entry.
    """
    path = Path(path)
    fix = "write one with: python align.py --model-path MODEL --manifest MANIFEST --output FILE"
    if not path.is_file():
        raise AlignmentFileError(f"{path}: word alignment file not found ({fix})")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AlignmentFileError(f"{path}: not a word alignment file (invalid JSON: {e}); {fix}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise AlignmentFileError(f'{path}: not a word alignment file (no "format": "{FORMAT}"); {fix}')
    if doc.get("version") != VERSION:
        raise AlignmentFileError(f"{path}: word alignment version {doc.get('version')!r}, this code reads {VERSION}; {fix}")
    folder = path.resolve().parent
    out: dict[Path, WordAlignment] = {}
    for i, u in enumerate(doc.get("utterances") or []):
        try:
            words = tuple(str(w) for w in u["words"])
            spans = tuple((float(s), float(e)) for s, e in u["spans"])
            wav = (folder / u["wav"]).resolve()
        except (KeyError, TypeError, ValueError):
            raise AlignmentFileError(f"{path}: utterance {i} is malformed (needs wav, words, spans); {fix}") from None
        if len(words) != len(spans) or any(not (0 <= s <= e) for s, e in spans):
            raise AlignmentFileError(
                f"{path}: utterance {i} ({u['wav']}) has {len(words)} words and {len(spans)} spans, "
                "or a span that is not 0 <= start <= end; " + fix
            )
        out[wav] = WordAlignment(words, spans)
    if not out:
        raise AlignmentFileError(f"{path}: holds no utterances; {fix}")
    return out


__all__ = [
    "AlignmentFileError",
    "WordAlignment",
    "count_aligned",
    "crop_words",
    "pause_depths_db",
    "read_alignments",
    "word_cut_points",
    "write_alignments",
]
