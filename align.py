"""Word alignments of a manifest from a trained model (CTC forced alignment), and
isolated-word clips cut from it.

    python align.py --manifest data/an4_train_manifest.csv --output data/an4_train_words.json
    python align.py --manifest data/an4_val_manifest.csv --output data/an4_val_words.json \\
        --clips-dir data/an4_val_words

The model's log-probabilities and the reference transcript give the most likely CTC path
that spells the transcript (Viterbi); each word's span runs from the first to one frame past
the last emission of its characters (:mod:`data.words` has the file format). The
alignments feed ``train.py --word-crop-prob`` (training on words cut out of utterances).
``--clips-dir`` also writes every word of every aligned utterance as its own clip, cut at
the quietest point between words, with a manifest (``DIR/manifest.csv``) that ``test.py``
and ``robustness.py`` evaluate like any other: a test of isolated words cut tight.

Utterances that cannot be aligned (a transcript with more labels than the model has output
frames for) are skipped and counted.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from data.audio import AudioError, load_audio, spectrogram
from data.manifest import ManifestError, read_manifest, write_manifest
from data.text import BLANK_INDEX, TranscriptError, ids_to_text, read_transcript, text_to_ids
from data.words import WordAlignment, word_cut_points, write_alignments
from inference import InferenceConfig, load_recognizer
from utils import make_parser

logger = logging.getLogger("align")


class AlignmentError(ValueError):
    """A transcript that no CTC path of the given length can spell."""


def ctc_align(log_probs: np.ndarray, targets: Sequence[int], blank: int = BLANK_INDEX) -> np.ndarray:
    """Viterbi CTC forced alignment.

    Args:
        log_probs: (T, C) log-probabilities of one utterance.
        targets: label ids of the transcript (no blanks).

    Returns:
        (len(targets), 2) int array: the first and last frame at which the best path that
        spells ``targets`` emits each label.

    Raises:
        AlignmentError: ``T`` is shorter than the shortest path (labels plus one blank
        between each pair of repeated labels).
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    T = lp.shape[0]
    targets = np.asarray(list(targets), dtype=np.int64)
    L = targets.size
    if L == 0:
        return np.zeros((0, 2), dtype=np.int64)
    repeats = int(np.sum(targets[1:] == targets[:-1]))
    if T < L + repeats:
        raise AlignmentError(f"{L} labels ({repeats} repeated) need at least {L + repeats} frames, the output has {T}")
    S = 2 * L + 1
    ext = np.full(S, blank, dtype=np.int64)
    ext[1::2] = targets
    may_skip = np.zeros(S, dtype=bool)  # s -> s+2 over a blank, between different labels
    may_skip[3::2] = targets[1:] != targets[:-1]
    score = np.full(S, -np.inf)
    score[0], score[1] = lp[0, blank], lp[0, ext[1]]
    back = np.zeros((T, S), dtype=np.int8)  # 0: stayed, 1: from s-1, 2: from s-2
    for t in range(1, T):
        one = np.concatenate(([-np.inf], score[:-1]))
        two = np.concatenate(([-np.inf, -np.inf], score[:-2]))
        two[~may_skip] = -np.inf
        options = np.stack([score, one, two])
        choice = np.argmax(options, axis=0)
        score = options[choice, np.arange(S)] + lp[t, ext]
        back[t] = choice
    s = S - 1 if score[S - 1] >= score[S - 2] else S - 2
    states = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        states[t] = s
        s -= back[t, s]
    frames = np.zeros((L, 2), dtype=np.int64)
    for k in range(L):
        at = np.nonzero(states == 2 * k + 1)[0]
        frames[k] = at[0], at[-1]
    return frames


def word_spans(targets: Sequence[int], frames: np.ndarray, space_index: int, frame_shift: float) -> list[tuple[float, float]]:
    """Per word of ``targets`` (words separated by ``space_index``): seconds from its first
    label's first frame to one frame past its last label's last frame."""
    spans, first = [], None
    for k, label in enumerate(list(targets) + [space_index]):
        if label == space_index:
            if first is not None:
                spans.append((first * frame_shift, (int(frames[k - 1, 1]) + 1) * frame_shift))
            first = None
        elif first is None:
            first = int(frames[k, 0])
    return spans


def align_manifest(recognizer, manifest: str | Path, batch_size: int = 16) -> tuple[list[tuple[Path, WordAlignment]], list[str]]:
    """``([(wav path, alignment)], [skip reasons])`` for every row of ``manifest``."""
    labels = recognizer.labels
    if " " not in labels:
        raise ValueError("the model has no space label: words cannot be told apart")
    space = labels.index(" ")
    sr = recognizer.audio_config.sample_rate
    rows = read_manifest(manifest)
    out, skipped = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        texts, feats, kept = [], [], []
        for row in chunk:
            try:
                ids = text_to_ids(read_transcript(row.txt), labels, source=row.txt)
                audio = load_audio(row.wav, sr)
            except (AudioError, FileNotFoundError, TranscriptError) as e:
                skipped.append(f"{row.wav}: {e}")
                continue
            texts.append(ids)
            feats.append(spectrogram(audio, recognizer.audio_config))
            kept.append(row)
        for row, ids, lp in zip(kept, texts, recognizer.log_probs(feats)):
            words = ids_to_text(ids, labels).split()
            if not words:
                skipped.append(f"{row.wav}: empty transcript")
                continue
            try:
                frames = ctc_align(lp, ids)
            except AlignmentError as e:
                skipped.append(f"{row.wav}: {e}")
                continue
            spans = word_spans(ids, frames, space, recognizer.frame_shift)
            out.append((row.wav, WordAlignment(tuple(words), tuple(spans))))
    return out, skipped


def write_clips(entries: Sequence[tuple[Path, WordAlignment]], folder: str | Path, sample_rate: int) -> Path:
    """Every word of every utterance as a clip (16-bit wav) with its transcript, and
    ``folder/manifest.csv`` listing them; written in a temporary folder, then moved."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "wav").mkdir(parents=True)
    (tmp / "txt").mkdir()
    rows = []
    for wav, a in entries:
        audio = load_audio(wav, sample_rate)
        cuts = word_cut_points(audio, sample_rate, a.spans)
        for i, word in enumerate(a.words):
            clip = audio[cuts[i] : cuts[i + 1]]
            if clip.size == 0:
                continue
            name = f"{Path(wav).stem}-w{i:02d}"
            sf.write(str(tmp / "wav" / f"{name}.wav"), clip, sample_rate, subtype="PCM_16")
            (tmp / "txt" / f"{name}.txt").write_text(word + "\n")
            rows.append((folder / "wav" / f"{name}.wav", folder / "txt" / f"{name}.txt"))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return write_manifest(folder / "manifest.csv", rows)


def build_parser():
    p = make_parser(__doc__)
    InferenceConfig.add_args(p)
    g = p.add_argument_group("alignment")
    g.add_argument("--manifest", required=True, help="CSV manifest whose utterances are aligned")
    g.add_argument("--output", required=True, help="word alignment file (JSON) to write")
    g.add_argument("--clips-dir", default=None, help="also write each word as a clip here, with DIR/manifest.csv")
    g.add_argument("--batch-size", type=int, default=16, help="utterances per forward pass")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = InferenceConfig.from_args(args)
        recognizer = load_recognizer(cfg)
        entries, skipped = align_manifest(recognizer, args.manifest, args.batch_size)
    except (FileNotFoundError, ImportError, ValueError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for reason in skipped[:5]:
        logger.warning("skipped %s", reason)
    if not entries:
        print(f"error: {args.manifest}: no utterance could be aligned ({len(skipped)} skipped)", file=sys.stderr)
        return 1
    info = {"model": str(cfg.model_path), "manifest": str(args.manifest), "frame_shift": recognizer.frame_shift}
    write_alignments(args.output, entries, info)
    n_words = sum(len(a.words) for _, a in entries)
    logger.info("wrote %s: %d utterances, %d words (%d skipped)", args.output, len(entries), n_words, len(skipped))
    if args.clips_dir:
        manifest = write_clips(entries, args.clips_dir, recognizer.audio_config.sample_rate)
        logger.info("wrote %s: one clip per word", manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
