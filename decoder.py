"""CTC decoding (greedy and beam search with a word n-gram LM) and WER/CER.

* :class:`GreedyDecoder`: argmax per frame, collapse repeats, drop blanks.
* :class:`BeamCTCDecoder`: CTC beam search by flashlight-text's C++ decoders
  (``pip install flashlight-text``), optionally with a word n-gram language model
  (ARPA, or KenLM binary together with ``--lexicon``) and/or a lexicon.
* :func:`word_errors`, :func:`char_errors`, :class:`ErrorRate`: corpus-level WER/CER.
* :func:`add_decoder_args` / :func:`make_decoder`: the one place scripts get a decoder from.
* :func:`save_outputs` / :func:`load_outputs`: model outputs saved by ``test.py --save-output``
  for ``search_lm_params.py``.

Text conventions (both decoders): a hypothesis's text has no leading or trailing space
and no runs of spaces (the space label separates words; repeated spaces carry no
information), so ``text.split(" ")`` gives the words. ``char_frames[i]`` is the output
frame at which ``text[i]`` was emitted (its first frame); a collapsed space keeps the
frame of its first occurrence. :meth:`Hypothesis.words` turns these into word times.

Beam search modes:

* no LM, no lexicon: lexicon-free prefix beam search (flashlight ``LexiconFreeDecoder``
  with a zero LM); any character sequence can come out. ``alpha``/``beta`` do not apply.
* LM (with or without ``lexicon``): words are restricted to a vocabulary: the lexicon's
  words when given, else the LM's own unigrams. deepspeech.pytorch's ``ctcdecode`` did
  the same with a word LM (it builds its dictionary from the LM's vocabulary). Scores are
  ``log P_am + alpha * ln P_lm + beta * n_words``, as in ``ctcdecode``: ``alpha`` weighs
  the natural-log LM probability (KenLM's log10 scores are converted) and ``beta`` is a
  bonus per word.
* lexicon without LM: the same vocabulary constraint with a zero LM; ``beta`` applies.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import math
import multiprocessing
import os
import tempfile
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import Levenshtein
import numpy as np

from data.text import BLANK_INDEX, normalize_text
from utils import atomic_write, flag

DEFAULT_BEAM_WIDTH = 32
DEFAULT_ALPHA = 0.8
DEFAULT_BETA = 1.0
DEFAULT_CUTOFF_TOP_N = 40
DEFAULT_CUTOFF_PROB = 1.0
DEFAULT_TOP_PATHS = 1
DEFAULT_LM_WORKERS = 1
DEFAULT_BEAM_THRESHOLD = 25.0

_LN10 = math.log(10.0)
_MASKED = -1e30  # emission for pruned tokens: effectively impossible, but finite (no inf - inf)
_KENLM_BINARY_MAGIC = b"mmap lm "
_SPECIAL_WORDS = ("<s>", "</s>", "<unk>")

logger = logging.getLogger(__name__)

OUTPUTS_FORMAT = "deepspeech-ctc-outputs"
OUTPUTS_FORMAT_VERSION = 1


class DecoderError(ValueError):
    """Bad decoder settings or files; the message names the flag or file and the fix."""


class BeamSearchUnavailable(ImportError):
    """flashlight-text (the beam search engine) is not installed."""


# ---------------------------------------------------------------------------- hypotheses


@dataclass
class Hypothesis:
    """One decoded transcript.

    Attributes:
        text: the transcript, spaces stripped at the ends and collapsed inside.
        char_frames: output-frame index of each character of ``text`` (same length).
        score: the path's log score (greedy: sum of the best log-probs; beam: the
            search score, acoustic + weighted LM + word bonus).
    """

    text: str
    char_frames: list[int] = field(default_factory=list)
    score: float = 0.0

    def words(self, frame_shift_s: float, duration_s: float | None = None) -> list[dict[str, Any]]:
        """Words with times in seconds: ``[{"word", "start", "end"}, ...]``.

        ``start`` is the first character's frame × ``frame_shift_s``, ``end`` is
        (the last character's frame + 1) × ``frame_shift_s``; with ``duration_s`` (the
        audio's length) neither goes past it, as the last output frame can reach up to
        one frame beyond the end of the audio.
        """
        limit = float("inf") if duration_s is None else duration_s
        out: list[dict[str, Any]] = []
        start = 0
        n = len(self.text)
        while start < n:
            end = self.text.find(" ", start)
            end = n if end < 0 else end
            if end > start:
                out.append(
                    {
                        "word": self.text[start:end],
                        "start": round(min(self.char_frames[start] * frame_shift_s, limit), 6),
                        "end": round(min((self.char_frames[end - 1] + 1) * frame_shift_s, limit), 6),
                    }
                )
            start = end + 1
        return out


def _make_hypothesis(
    labels: Sequence[str], space_index: int | None, tokens: Sequence[int], frames: Sequence[int], score: float
) -> Hypothesis:
    """Build a :class:`Hypothesis` from emitted (already collapsed, blank-free) tokens."""
    chars: list[str] = []
    out_frames: list[int] = []
    for tok, frame in zip(tokens, frames):
        if tok == space_index:
            if chars and chars[-1] != " ":
                chars.append(" ")
                out_frames.append(frame)
            continue
        chars.append(labels[tok])
        out_frames.append(frame)
    if chars and chars[-1] == " ":
        chars.pop()
        out_frames.pop()
    return Hypothesis("".join(chars), out_frames, float(score))


def _space_index(labels: Sequence[str]) -> int | None:
    return labels.index(" ") if " " in labels else None


def as_numpy(x: Any) -> np.ndarray:
    """A float32 numpy view of ``x``: a numpy array, or a torch tensor (any device/dtype)."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float32)


def _check_log_probs(log_probs: Any, lengths: Any, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate decoder input: (log-probs (B, T, C) float32, lengths (B,) int64) as numpy."""
    if not hasattr(log_probs, "shape") or len(log_probs.shape) != 3:
        shape = tuple(log_probs.shape) if hasattr(log_probs, "shape") else type(log_probs)
        raise ValueError(f"decode expects log-probs of shape (B, T, C), got {shape}")
    x = as_numpy(log_probs)
    B, T, C = x.shape
    if C != n_labels:
        raise ValueError(
            f"log-probs have {C} classes but the decoder has {n_labels} labels; "
            "decode with the labels stored in the model's checkpoint"
        )
    if lengths is None:
        return x, np.full(B, T, dtype=np.int64)
    if hasattr(lengths, "detach"):
        lengths = lengths.detach().to("cpu").numpy()
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.size != B:
        raise ValueError(f"lengths has {lengths.size} entries for a batch of {B}")
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"lengths must lie in [0, {T}], got {lengths.tolist()}")
    return x, lengths


# ---------------------------------------------------------------------------- greedy


class GreedyDecoder:
    """Best path decoding: argmax per frame, collapse repeats, drop blanks."""

    def __init__(self, labels: Sequence[str], blank_index: int = BLANK_INDEX) -> None:
        self.labels = list(labels)
        self.blank_index = blank_index
        self.space_index = _space_index(self.labels)

    def decode(self, log_probs: Any, lengths: Any = None) -> list[list[Hypothesis]]:
        """Decode a batch.

        Args:
            log_probs: (B, T, C) log-probabilities, numpy or torch (any float dtype/device).
            lengths: (B,) valid frames per utterance, or None for all T.

        Returns:
            B lists holding one :class:`Hypothesis` each.
        """
        x, lengths = _check_log_probs(log_probs, lengths, len(self.labels))
        B, T, _ = x.shape
        ids = x.argmax(axis=-1)  # (B, T)
        best = np.take_along_axis(x, ids[..., None], axis=-1)[..., 0]
        valid = np.arange(T)[None, :] < lengths[:, None]  # (B, T)
        scores = np.where(valid, best, 0.0).sum(axis=1, dtype=np.float64).tolist()
        prev = np.concatenate([np.full((B, 1), -1, dtype=ids.dtype), ids[:, :-1]], axis=1)
        keep = valid & (ids != self.blank_index) & (ids != prev)  # first frame of each new token
        counts = keep.sum(axis=1).tolist()
        b_idx, t_idx = np.nonzero(keep)
        tokens = ids[b_idx, t_idx].tolist()
        frames = t_idx.tolist()
        out: list[list[Hypothesis]] = []
        pos = 0
        for b in range(B):
            n = counts[b]
            out.append([_make_hypothesis(self.labels, self.space_index, tokens[pos : pos + n], frames[pos : pos + n], scores[b])])
            pos += n
        return out

    def describe(self) -> dict[str, Any]:
        """Plain-data description of the decoder (for reports and JSON metadata)."""
        return {"type": "greedy"}

    def close(self) -> None:
        """Nothing to release; here so every decoder can be used in a ``with`` block."""

    def __enter__(self) -> "GreedyDecoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- LM files


def lm_file_kind(path: str | Path) -> str:
    """``"arpa"`` or ``"binary"`` (KenLM); :class:`DecoderError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DecoderError(f"--lm-path {path}: file not found")
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(_KENLM_BINARY_MAGIC):
        return "binary"
    for line in head.splitlines():
        line = line.strip()
        if not line:
            continue
        if line == b"\\data\\":
            return "arpa"
        break
    raise DecoderError(
        f"--lm-path {path}: not an ARPA file (no \\data\\ header) nor a KenLM binary. "
        "Build one with `python data/build_lm.py` or KenLM's lmplz/build_binary."
    )


def read_arpa_vocabulary(path: str | Path) -> list[str]:
    """The words of an ARPA file's unigram section, in file order (specials included)."""
    words: list[str] = []
    in_unigrams = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("\\"):
                if in_unigrams:
                    break
                in_unigrams = line == "\\1-grams:"
                continue
            if in_unigrams:
                parts = line.split()
                if len(parts) >= 2:
                    words.append(parts[1])
    if not words:
        raise DecoderError(f"--lm-path {path}: ARPA file has no \\1-grams: entries")
    return words


def read_lexicon(path: str | Path) -> list[str]:
    """Words of a lexicon file: the first field of each non-empty line.

    A plain word list (one word per line) and wav2letter/torchaudio lexicons
    (``WORD<tab>W O R D |``) both work; spellings are always derived from the word's
    characters, so extra columns are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise DecoderError(f"--lexicon {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DecoderError(f"--lexicon {path}: not UTF-8 text (expected one word per line)") from None
    words = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not words:
        raise DecoderError(f"--lexicon {path}: holds no words (expected one word per line)")
    return words


@contextmanager
def _quiet_stderr_fd() -> Iterator[list[str]]:
    """Silence file descriptor 2 (KenLM prints a progress bar there); yields a list that
    receives what was printed, for error messages."""
    captured: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", "replace"))


def _import_flashlight() -> Any:
    try:
        from flashlight.lib.text import decoder as fl_decoder
        from flashlight.lib.text import dictionary as fl_dictionary
    except ImportError as e:
        raise BeamSearchUnavailable(
            f"--decoder beam needs flashlight-text ({e}). Install it with "
            "`pip install flashlight-text` (Python 3.10-3.12), or use --decoder greedy."
        ) from None
    return fl_decoder, fl_dictionary


# ---------------------------------------------------------------------------- beam search


class BeamCTCDecoder:
    """CTC beam search (flashlight-text) with an optional word n-gram LM and lexicon.

    Args:
        labels: characters, blank at ``blank_index``; the space label separates words.
        beam_width: hypotheses kept per frame.
        lm_path: ARPA or KenLM binary word LM (a binary needs ``lexicon``: its vocabulary
            cannot be read back); None for no LM.
        alpha: LM weight (on natural-log probabilities).
        beta: bonus per word (applies with an LM or a lexicon).
        cutoff_top_n: tokens considered per frame (the best ``cutoff_top_n`` by log-prob).
        cutoff_prob: per frame, only the most probable tokens whose cumulative probability
            reaches ``cutoff_prob`` are considered (1.0: no pruning), as in ctcdecode.
        top_paths: distinct hypotheses returned per utterance, best first (fewer when the
            beam holds fewer distinct transcripts).
        lexicon: word list file restricting the output words (see :func:`read_lexicon`).
        lm_workers: processes decoding the utterances of a batch in parallel.
        blank_index: index of the CTC blank.
        beam_threshold: hypotheses scoring more than this below the best are dropped.
    """

    def __init__(
        self,
        labels: Sequence[str],
        beam_width: int = DEFAULT_BEAM_WIDTH,
        lm_path: str | Path | None = None,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        cutoff_top_n: int = DEFAULT_CUTOFF_TOP_N,
        cutoff_prob: float = DEFAULT_CUTOFF_PROB,
        top_paths: int = DEFAULT_TOP_PATHS,
        lexicon: str | Path | None = None,
        lm_workers: int = DEFAULT_LM_WORKERS,
        blank_index: int = BLANK_INDEX,
        beam_threshold: float = DEFAULT_BEAM_THRESHOLD,
    ) -> None:
        self._fl, fl_dictionary = _import_flashlight()
        self.labels = list(labels)
        self.blank_index = blank_index
        self.space_index = _space_index(self.labels)
        self.beam_width = int(beam_width)
        self.lm_path = str(lm_path) if lm_path is not None else None
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.cutoff_top_n = int(cutoff_top_n)
        self.cutoff_prob = float(cutoff_prob)
        self.top_paths = int(top_paths)
        self.lexicon_path = str(lexicon) if lexicon is not None else None
        self.lm_workers = int(lm_workers)
        self.beam_threshold = float(beam_threshold)
        if self.beam_width < 1:
            raise DecoderError(f"beam_width must be >= 1, got {beam_width}")
        if self.cutoff_top_n < 1:
            raise DecoderError(f"cutoff_top_n must be >= 1, got {cutoff_top_n}")
        if not 0.0 < self.cutoff_prob <= 1.0:
            raise DecoderError(f"cutoff_prob must lie in (0, 1], got {cutoff_prob}")
        if not 1 <= self.top_paths <= self.beam_width:
            raise DecoderError(f"top_paths must lie in [1, beam_width={beam_width}], got {top_paths}")
        if self.lm_workers < 1:
            raise DecoderError(f"lm_workers must be >= 1, got {lm_workers}")
        if self.lexicon_path is not None or self.lm_path is not None:
            if self.space_index is None:
                raise DecoderError("an LM or lexicon needs a space ' ' label to separate words")

        self._init_args = dict(
            labels=self.labels,
            beam_width=self.beam_width,
            lm_path=self.lm_path,
            alpha=self.alpha,
            beta=self.beta,
            cutoff_top_n=self.cutoff_top_n,
            cutoff_prob=self.cutoff_prob,
            top_paths=self.top_paths,
            lexicon=self.lexicon_path,
            lm_workers=1,
            blank_index=self.blank_index,
            beam_threshold=self.beam_threshold,
        )
        self.uses_lexicon = self.lm_path is not None or self.lexicon_path is not None
        self.vocabulary: list[str] = []
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pool_finalizer: weakref.finalize | None = None
        if self.uses_lexicon:
            self._build_lexicon_search(fl_dictionary)
        else:
            self._lm = self._fl.ZeroLM()
        self._decoder = self._new_decoder()

    # -- construction

    def _build_lexicon_search(self, fl_dictionary: Any) -> None:
        fl = self._fl
        kind = lm_file_kind(self.lm_path) if self.lm_path is not None else None
        if self.lexicon_path is not None:
            words = read_lexicon(self.lexicon_path)
            source = f"--lexicon {self.lexicon_path}"
        elif kind == "binary":
            raise DecoderError(
                f"--lm-path {self.lm_path}: a KenLM binary LM needs --lexicon (a word list, "
                "one word per line): its vocabulary cannot be read from the binary. "
                "Or pass the ARPA file."
            )
        else:
            words = read_arpa_vocabulary(self.lm_path)
            source = f"--lm-path {self.lm_path}"
        index = {c: i for i, c in enumerate(self.labels)}
        spellings: dict[str, list[int]] = {}
        skipped: list[str] = []
        for word in dict.fromkeys(words):
            if word in _SPECIAL_WORDS:
                continue
            spelled = normalize_text(word, self.labels)
            ids = [index.get(c, -1) for c in spelled]
            if any(i < 0 or i == self.blank_index or i == self.space_index for i in ids):
                skipped.append(word)
                continue
            spellings[word] = ids
        if not spellings:
            raise DecoderError(
                f"{source}: none of its {len(words)} words can be spelled with the model's labels {''.join(self.labels)!r}"
            )
        if skipped:
            logger.warning(
                "%s: %d words cannot be spelled with the labels and are left out (e.g. %s)",
                source,
                len(skipped),
                ", ".join(repr(w) for w in skipped[:5]),
            )
        self.vocabulary = list(spellings)
        word_dict = fl_dictionary.Dictionary(["<unk>"] + self.vocabulary)
        self._unk_index = word_dict.get_index("<unk>")
        if self.lm_path is not None:
            from flashlight.lib.text.decoder.kenlm import KenLM

            with _quiet_stderr_fd() as log:
                try:
                    self._lm = KenLM(self.lm_path, word_dict)
                    error = None
                except RuntimeError as e:  # KenLM's parse errors arrive as RuntimeError
                    error = str(e)
            if error is not None:
                detail = " ".join((error or "".join(log)).split()) or "unknown error"
                raise DecoderError(f"--lm-path {self.lm_path}: KenLM cannot load it ({detail})")
        else:
            self._lm = fl.ZeroLM()
        self._trie = fl.Trie(len(self.labels), self.space_index)
        start = self._lm.start(False)
        for word, ids in spellings.items():
            word_index = word_dict.get_index(word)
            _, score = self._lm.score(start, word_index)
            self._trie.insert(ids + [self.space_index], word_index, score)
        self._trie.smear(fl.SmearingMode.MAX)

    def _new_decoder(self) -> Any:
        fl = self._fl
        token_beam = min(self.cutoff_top_n, len(self.labels))
        if self.uses_lexicon:
            opts = fl.LexiconDecoderOptions(
                beam_size=self.beam_width,
                beam_size_token=token_beam,
                beam_threshold=self.beam_threshold,
                lm_weight=self.alpha * _LN10 if self.lm_path is not None else 0.0,
                word_score=self.beta,
                unk_score=float("-inf"),
                sil_score=0.0,
                log_add=False,
                criterion_type=fl.CriterionType.CTC,
            )
            return fl.LexiconDecoder(opts, self._trie, self._lm, self.space_index, self.blank_index, self._unk_index, [], False)
        opts = fl.LexiconFreeDecoderOptions(
            beam_size=self.beam_width,
            beam_size_token=token_beam,
            beam_threshold=self.beam_threshold,
            lm_weight=0.0,
            sil_score=0.0,
            log_add=True,
            criterion_type=fl.CriterionType.CTC,
        )
        sil = self.space_index if self.space_index is not None else self.blank_index
        return fl.LexiconFreeDecoder(opts, self._lm, sil, self.blank_index, [])

    def set_lm_weights(self, alpha: float, beta: float) -> None:
        """Change ``alpha`` and ``beta`` without reloading the LM (used for tuning)."""
        self.alpha, self.beta = float(alpha), float(beta)
        self._init_args.update(alpha=self.alpha, beta=self.beta)
        self._decoder = self._new_decoder()

    # -- decoding

    def prepare_emissions(self, log_probs: Any) -> np.ndarray:
        """One utterance's (T, C) log-probs as the search's float32 input.

        Applies ``cutoff_prob`` and, in vocabulary mode, appends one frame that can
        only be a space, so that the last word is completed like the others.
        """
        arr = np.array(as_numpy(log_probs), dtype=np.float32)
        if self.cutoff_prob < 1.0 and arr.shape[0] > 0:
            order = np.argsort(-arr, axis=-1, kind="stable")
            probs = np.exp(np.take_along_axis(arr, order, axis=-1))
            before = np.cumsum(probs, axis=-1) - probs  # mass of the better tokens
            drop = np.zeros(arr.shape, dtype=bool)
            np.put_along_axis(drop, order, before >= self.cutoff_prob, axis=-1)
            arr[drop] = _MASKED
        if self.uses_lexicon:
            end = np.full((1, arr.shape[1]), _MASKED, dtype=np.float32)
            end[0, self.space_index] = 0.0
            arr = np.concatenate([arr, end], axis=0)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def decode_emissions(self, emissions: np.ndarray) -> list[Hypothesis]:
        """Search one utterance prepared by :meth:`prepare_emissions`; best first."""
        T, C = emissions.shape
        if T == 0:
            return [Hypothesis("", [], 0.0)]
        results = self._decoder.decode(emissions.ctypes.data, T, C)
        hyps: list[Hypothesis] = []
        seen: set[str] = set()
        for result in sorted(results, key=lambda r: -r.score):
            path = list(result.tokens)  # [start state, frame 0 .. frame T-1, end state]
            prev = path[0]
            tokens: list[int] = []
            frames: list[int] = []
            for t, tok in enumerate(path[1 : T + 1]):
                if tok != self.blank_index and tok != prev:
                    tokens.append(tok)
                    frames.append(t)
                prev = tok
            hyp = _make_hypothesis(self.labels, self.space_index, tokens, frames, result.score)
            if hyp.text in seen:
                continue
            seen.add(hyp.text)
            hyps.append(hyp)
            if len(hyps) == self.top_paths:
                break
        return hyps or [Hypothesis("", [], float("-inf"))]

    def decode(self, log_probs: Any, lengths: Any = None) -> list[list[Hypothesis]]:
        """Decode a batch.

        Args:
            log_probs: (B, T, C) log-probabilities (log-softmax output), numpy or torch.
            lengths: (B,) valid frames per utterance, or None for all T.

        Returns:
            B lists of up to ``top_paths`` distinct hypotheses, best first.
        """
        x, lengths = _check_log_probs(log_probs, lengths, len(self.labels))
        emissions = [self.prepare_emissions(x[b, : int(lengths[b])]) for b in range(x.shape[0])]
        if self.lm_workers > 1 and len(emissions) > 1:
            pool = self._get_pool()
            jobs = [(e, self.alpha, self.beta) for e in emissions]
            return list(pool.map(_worker_decode, jobs))
        return [self.decode_emissions(e) for e in emissions]

    def _get_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.lm_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(self._init_args,),
            )
            self._pool_finalizer = weakref.finalize(self, self._pool.shutdown, wait=True)
        return self._pool

    def close(self) -> None:
        """Stop the ``lm_workers`` processes (they also stop when the decoder is freed)."""
        if self._pool_finalizer is not None:
            self._pool_finalizer()
        self._pool = None
        self._pool_finalizer = None

    def __enter__(self) -> "BeamCTCDecoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Plain-data description of the decoder (for reports and JSON metadata)."""
        return {
            "type": "beam",
            "beam_width": self.beam_width,
            "lm": self.lm_path,
            "alpha": self.alpha if self.lm_path else None,
            "beta": self.beta if self.uses_lexicon else None,
            "cutoff_top_n": self.cutoff_top_n,
            "cutoff_prob": self.cutoff_prob,
            "top_paths": self.top_paths,
            "lexicon": self.lexicon_path,
            "vocabulary_size": len(self.vocabulary) if self.uses_lexicon else None,
        }


_WORKER_DECODER: BeamCTCDecoder | None = None


def _worker_init(init_args: dict[str, Any]) -> None:
    global _WORKER_DECODER
    _WORKER_DECODER = BeamCTCDecoder(**init_args)


def _worker_decode(job: tuple[np.ndarray, float, float]) -> list[Hypothesis]:
    emissions, alpha, beta = job
    assert _WORKER_DECODER is not None
    if (alpha, beta) != (_WORKER_DECODER.alpha, _WORKER_DECODER.beta):
        _WORKER_DECODER.set_lm_weights(alpha, beta)
    return _WORKER_DECODER.decode_emissions(emissions)


# ---------------------------------------------------------------------------- metrics


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(word edit distance, number of reference words); words split on whitespace."""
    ref_words = ref.split()
    return Levenshtein.distance(ref_words, hyp.split()), len(ref_words)


def char_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(character edit distance, number of reference characters), spaces removed."""
    ref_chars = ref.replace(" ", "")
    return Levenshtein.distance(ref_chars, hyp.replace(" ", "")), len(ref_chars)


def _rate(edits: int, n_ref: int) -> float:
    # With no reference units at all, every hypothesis unit is an insertion; the rate is
    # then counted against one unit so it stays finite (0.0 when nothing was inserted).
    return 100.0 * edits / max(n_ref, 1)


class ErrorRate:
    """Corpus-level WER/CER: total edits / total reference units × 100.

    With no reference units the rate is 0.0 when there are no edits, else
    100 × edits (counted against one unit).
    """

    def __init__(self) -> None:
        self.word_edits = 0
        self.n_words = 0
        self.char_edits = 0
        self.n_chars = 0
        self.n_utterances = 0

    def update(self, refs: Sequence[str], hyps: Sequence[str]) -> None:
        if isinstance(refs, str) or isinstance(hyps, str):
            raise TypeError("ErrorRate.update takes lists of strings (refs, hyps)")
        if len(refs) != len(hyps):
            raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
        for ref, hyp in zip(refs, hyps):
            e, n = word_errors(ref, hyp)
            self.word_edits += e
            self.n_words += n
            e, n = char_errors(ref, hyp)
            self.char_edits += e
            self.n_chars += n
        self.n_utterances += len(refs)

    @property
    def wer(self) -> float:
        return _rate(self.word_edits, self.n_words)

    @property
    def cer(self) -> float:
        return _rate(self.char_edits, self.n_chars)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "wer": self.wer,
            "cer": self.cer,
            "word_edits": self.word_edits,
            "n_words": self.n_words,
            "char_edits": self.char_edits,
            "n_chars": self.n_chars,
            "n_utterances": self.n_utterances,
        }


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class DecoderConfig:
    """Which decoder and its settings. Beam-only settings are None unless given, so that
    giving one with the greedy decoder is an error; None means the default named in the
    field's comment (or, for alpha/beta, the LM's tuned values)."""

    decoder: str = "greedy"  # "greedy" | "beam"
    beam_width: int | None = None  # DEFAULT_BEAM_WIDTH
    lm_path: Path | None = None
    alpha: float | None = None  # tuned value in the LM's .json, else DEFAULT_ALPHA
    beta: float | None = None  # tuned value in the LM's .json, else DEFAULT_BETA
    cutoff_top_n: int | None = None  # DEFAULT_CUTOFF_TOP_N
    cutoff_prob: float | None = None  # DEFAULT_CUTOFF_PROB
    top_paths: int | None = None  # DEFAULT_TOP_PATHS
    lexicon: Path | None = None
    lm_workers: int | None = None  # DEFAULT_LM_WORKERS

    BEAM_FIELDS = ("beam_width", "lm_path", "alpha", "beta", "cutoff_top_n", "cutoff_prob", "top_paths", "lexicon", "lm_workers")

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """The decoder flags (test.py, transcribe.py, the server), in one group."""
        g = parser.add_argument_group("decoder")
        g.add_argument("--decoder", choices=("greedy", "beam"), default="greedy", help="greedy (best path) or beam search")
        g.add_argument(
            "--beam-width", type=int, default=None, help=f"beam: hypotheses kept per frame (default: {DEFAULT_BEAM_WIDTH})"
        )
        g.add_argument(
            "--lm-path",
            type=Path,
            default=None,
            help="beam: word n-gram LM, ARPA (data/build_lm.py) or KenLM binary (with --lexicon)",
        )
        g.add_argument(
            "--alpha",
            type=float,
            default=None,
            help=f"beam + LM: LM weight (default: the LM's tuned value in LM.json, else {DEFAULT_ALPHA})",
        )
        g.add_argument(
            "--beta",
            type=float,
            default=None,
            help=f"beam + LM or lexicon: word insertion bonus (default: the LM's tuned value, else {DEFAULT_BETA})",
        )
        g.add_argument(
            "--cutoff-top-n", type=int, default=None, help=f"beam: tokens considered per frame (default: {DEFAULT_CUTOFF_TOP_N})"
        )
        g.add_argument(
            "--cutoff-prob",
            type=float,
            default=None,
            help="beam: consider per frame only the best tokens whose cumulative probability "
            f"reaches this (default: {DEFAULT_CUTOFF_PROB}, no pruning)",
        )
        g.add_argument(
            "--top-paths", type=int, default=None, help=f"beam: transcripts returned per utterance (default: {DEFAULT_TOP_PATHS})"
        )
        g.add_argument(
            "--lexicon",
            type=Path,
            default=None,
            help="beam: word list (one word per line) restricting the output words "
            "(default with an ARPA LM: the LM's vocabulary)",
        )
        g.add_argument(
            "--lm-workers",
            type=int,
            default=None,
            help=f"beam: processes decoding a batch in parallel (default: {DEFAULT_LM_WORKERS})",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DecoderConfig":
        """The config the flags of :meth:`add_args` select, checked (:meth:`validate`)."""
        cfg = cls(**{f: getattr(args, f) for f in ("decoder",) + cls.BEAM_FIELDS})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check the settings without building anything; :class:`DecoderError` if wrong."""
        if self.decoder not in ("greedy", "beam"):
            raise DecoderError(f"--decoder must be greedy or beam, got {self.decoder!r}")
        given = [n for n in self.BEAM_FIELDS if getattr(self, n) is not None]
        if self.decoder == "greedy":
            if given:
                raise DecoderError(
                    f"{', '.join(flag(n) for n in given)} only appl{'ies' if len(given) == 1 else 'y'} "
                    "to beam search: add --decoder beam"
                )
            return
        beam_width = self.beam_width if self.beam_width is not None else DEFAULT_BEAM_WIDTH
        checks = [
            ("beam_width", lambda v: v >= 1, "an integer >= 1"),
            ("cutoff_top_n", lambda v: v >= 1, "an integer >= 1"),
            ("cutoff_prob", lambda v: 0.0 < v <= 1.0, "a probability in (0, 1]"),
            ("top_paths", lambda v: 1 <= v <= beam_width, f"in [1, --beam-width={beam_width}]"),
            ("lm_workers", lambda v: v >= 1, "an integer >= 1"),
            ("alpha", math.isfinite, "a finite number"),
            ("beta", math.isfinite, "a finite number"),
        ]
        for name, ok, what in checks:
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise DecoderError(f"{flag(name)} must be {what}, got {value}")
        if self.lm_path is None and self.alpha is not None:
            raise DecoderError("--alpha weighs the language model: add --lm-path")
        if self.lm_path is None and self.lexicon is None and self.beta is not None:
            raise DecoderError("--beta is a bonus per word: it needs --lm-path or --lexicon")
        if self.lm_path is not None:
            kind = lm_file_kind(self.lm_path)
            if kind == "binary" and self.lexicon is None:
                raise DecoderError(
                    f"--lm-path {self.lm_path}: a KenLM binary LM needs --lexicon (a word list): "
                    "its vocabulary cannot be read from the binary. Or pass the ARPA file."
                )
        if self.lexicon is not None and not Path(self.lexicon).is_file():
            raise DecoderError(f"--lexicon {self.lexicon}: file not found")


def lm_defaults_path(lm_path: str | Path) -> Path:
    """Where the tuned alpha/beta of an LM live: ``an4_3gram.arpa`` -> ``an4_3gram.json``."""
    return Path(lm_path).with_suffix(".json")


def save_lm_defaults(lm_path: str | Path, alpha: float, beta: float, **info: Any) -> Path:
    """Store tuned decoder weights next to the LM; :func:`make_decoder` uses them when
    ``--alpha``/``--beta`` are not given."""
    path = lm_defaults_path(lm_path)
    with atomic_write(path) as f:
        f.write(json.dumps({"lm": Path(lm_path).name, "alpha": alpha, "beta": beta, **info}, indent=2) + "\n")
    return path


def load_lm_defaults(lm_path: str | Path) -> dict[str, float]:
    """The tuned ``{"alpha", "beta"}`` stored for ``lm_path``, or ``{}`` when there are none."""
    path = lm_defaults_path(lm_path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {k: float(data[k]) for k in ("alpha", "beta")}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise DecoderError(
            f"{path}: not a decoder-defaults file (expected JSON with alpha and beta); "
            "remove it or re-run search_lm_params.py --save-defaults"
        ) from None


def make_decoder(cfg: DecoderConfig, labels: Sequence[str]) -> GreedyDecoder | BeamCTCDecoder:
    """The decoder ``cfg`` describes.

    Raises:
        DecoderError: inconsistent settings or unusable LM/lexicon files (message names them).
        BeamSearchUnavailable: a beam decoder without flashlight-text installed.
    Callers print ``error: <message>`` and exit with status 2 on either.
    """
    cfg.validate()
    if cfg.decoder == "greedy":
        return GreedyDecoder(labels)

    def pick(name: str, default: Any) -> Any:
        value = getattr(cfg, name)
        return default if value is None else value

    tuned = load_lm_defaults(cfg.lm_path) if cfg.lm_path is not None else {}
    return BeamCTCDecoder(
        labels,
        beam_width=pick("beam_width", DEFAULT_BEAM_WIDTH),
        lm_path=cfg.lm_path,
        alpha=pick("alpha", tuned.get("alpha", DEFAULT_ALPHA)),
        beta=pick("beta", tuned.get("beta", DEFAULT_BETA)),
        cutoff_top_n=pick("cutoff_top_n", DEFAULT_CUTOFF_TOP_N),
        cutoff_prob=pick("cutoff_prob", DEFAULT_CUTOFF_PROB),
        top_paths=pick("top_paths", DEFAULT_TOP_PATHS),
        lexicon=cfg.lexicon,
        lm_workers=pick("lm_workers", DEFAULT_LM_WORKERS),
    )


# ---------------------------------------------------------------------------- saved outputs


def save_outputs(
    path: str | Path,
    log_probs: Sequence[Any],
    references: Sequence[str],
    labels: Sequence[str],
    frame_shift: float,
    half: bool = True,
) -> None:
    """Save model outputs for LM tuning (``search_lm_params.py --saved-output``).

    Args:
        path: output file (written atomically).
        log_probs: one (T_i, C) log-prob tensor or array per utterance, padding already removed.
        references: the reference transcript of each utterance.
        labels: the model's labels (C of them).
        frame_shift: seconds per output frame.
        half: store log-probs as float16 (half the size; plenty for decoding).

    The file holds plain data only and loads with ``torch.load(weights_only=True)``:
    ``{"format", "format_version", "log_probs": [Tensor (T_i, C)], "references": [str],
    "labels": [str], "frame_shift": float}``.
    """
    import torch

    if len(log_probs) != len(references):
        raise ValueError(f"{len(log_probs)} log-prob tensors but {len(references)} references")
    dtype = torch.float16 if half else torch.float32
    tensors = []
    for i, lp in enumerate(log_probs):
        lp = torch.as_tensor(as_numpy(lp))
        if lp.dim() != 2 or lp.shape[1] != len(labels):
            raise ValueError(f"log_probs[{i}] has shape {tuple(lp.shape)}, expected (T, {len(labels)})")
        tensors.append(lp.to(dtype).contiguous().clone())
    payload = {
        "format": OUTPUTS_FORMAT,
        "format_version": OUTPUTS_FORMAT_VERSION,
        "log_probs": tensors,
        "references": [str(r) for r in references],
        "labels": list(labels),
        "frame_shift": float(frame_shift),
    }
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_outputs(path: str | Path) -> dict[str, Any]:
    """Load a file written by :func:`save_outputs`; ValueError naming the file if it is not one."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: saved outputs not found (write them with test.py --save-output)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        raise ValueError(f"{path}: not a saved-outputs file ({type(e).__name__}); write it with test.py --save-output") from None
    if not isinstance(data, dict) or data.get("format") != OUTPUTS_FORMAT:
        raise ValueError(f"{path}: not a saved-outputs file; write it with test.py --save-output")
    if data.get("format_version") != OUTPUTS_FORMAT_VERSION:
        raise ValueError(
            f"{path}: saved-outputs format version {data.get('format_version')}, "
            f"this code reads {OUTPUTS_FORMAT_VERSION}; re-run test.py --save-output"
        )
    lps, refs, labels = data.get("log_probs"), data.get("references"), data.get("labels")
    if not (
        isinstance(lps, list)
        and isinstance(refs, list)
        and isinstance(labels, list)
        and len(lps) == len(refs)
        and all(isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[1] == len(labels) for t in lps)
    ):
        raise ValueError(f"{path}: saved outputs are inconsistent (log_probs/references/labels)")
    return data


__all__ = [
    "Hypothesis",
    "GreedyDecoder",
    "BeamCTCDecoder",
    "DecoderError",
    "BeamSearchUnavailable",
    "DecoderConfig",
    "word_errors",
    "char_errors",
    "ErrorRate",
    "make_decoder",
    "save_outputs",
    "load_outputs",
    "lm_file_kind",
    "read_arpa_vocabulary",
    "read_lexicon",
]
