"""Labels and transcripts: the one place text is normalised and encoded.

No dependency beyond the standard library, so the torch-free inference path can use it.

* :data:`LABELS` is the default character set, the CTC blank ``_`` first.
* :func:`normalize_text` is the rule every transcript, LM sentence and lexicon word goes
  through: runs of whitespace collapse to one space, and when the labels hold no
  lower-case letter the text is upper-cased. Nothing else is changed or dropped.
* :func:`text_to_ids` encodes normalised text and names any character outside the labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

LABELS: tuple[str, ...] = tuple("_'ABCDEFGHIJKLMNOPQRSTUVWXYZ ")
"""Default character set. Index 0 is the CTC blank, always."""
BLANK_INDEX = 0


class TranscriptError(ValueError):
    """A transcript that cannot be encoded with the model's labels."""


def load_labels(path: str | Path | None = None) -> list[str]:
    """Labels from a JSON list of single characters (blank first), or the default set."""
    if path is None:
        return list(LABELS)
    path = Path(path)
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: labels file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON list of labels ({e})") from None
    if isinstance(labels, str):
        labels = list(labels)
    if not isinstance(labels, list) or not all(isinstance(c, str) and len(c) == 1 for c in labels):
        raise ValueError(f"{path}: labels must be a JSON list of single characters")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: labels contain duplicates")
    if labels[:1] != ["_"]:
        raise ValueError(f"{path}: the first label must be the CTC blank '_', got {labels[:1]}")
    if " " not in labels:
        raise ValueError(f"{path}: labels need a space ' ' to separate words")
    return labels


def normalize_text(text: str, labels: Sequence[str] = LABELS) -> str:
    """Collapse whitespace runs to one space and strip; upper-case when ``labels`` has no
    lower-case letter. The one normalisation rule of the toolkit."""
    text = " ".join(text.split())
    return text if any(c.islower() for c in labels) else text.upper()


def text_to_ids(text: str, labels: Sequence[str], source: str | Path = "<text>") -> list[int]:
    """Encode a transcript (normalised first) as label ids.

    Any character outside ``labels`` (or the blank itself) is an error naming ``source``
    and the character; nothing is dropped silently.
    """
    index = {c: i for i, c in enumerate(labels)}
    text = normalize_text(text, labels)
    unknown = sorted({c for c in text if c not in index or index[c] == BLANK_INDEX})
    if unknown:
        shown = ", ".join(repr(c) for c in unknown)
        raise TranscriptError(
            f"{source}: transcript has characters outside the labels: {shown}. "
            "Clean the transcript or train with a --labels-path that includes them."
        )
    return [index[c] for c in text]


def ids_to_text(ids: Iterable[int], labels: Sequence[str]) -> str:
    return "".join(labels[i] for i in ids)


def read_transcript(path: str | Path) -> str:
    """The text of a one-line transcript file, stripped."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: transcript file not found") from None
    except UnicodeDecodeError:
        raise TranscriptError(f"{path}: transcript is not UTF-8 text") from None
