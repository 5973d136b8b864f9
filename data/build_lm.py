"""Build a word n-gram language model (ARPA) from manifest transcripts, in pure Python.

    python data/build_lm.py --manifest data/an4_train_manifest.csv --order 3 --out an4_3gram.arpa

The model is interpolated modified Kneser-Ney (Chen & Goodman 1998), the estimate
KenLM's lmplz makes:

* Each transcript is one sentence ``<s> w1 ... wk </s>``. Adjusted counts: raw counts
  for the highest order and for n-grams starting with ``<s>``, otherwise the number of
  distinct words seen to the left (continuation counts).
* Three discounts per order from the counts of adjusted counts t1..t4:
  ``Y = t1 / (t1 + 2 t2)``, ``D1 = 1 - 2Y t2/t1``, ``D2 = 2 - 3Y t3/t2``,
  ``D3+ = 3 - 4Y t4/t3``. On tiny corpora these are often undefined or out of range;
  then the order falls back to (0.5, 1.0, 1.5), as lmplz's ``--discount_fallback`` does,
  and a note says so.
* ``p(w|h) = (a(hw) - D(a(hw))) / S(h) + gamma(h) p(w|h')`` with
  ``gamma(h) = (D1 N1(h) + D2 N2(h) + D3+ N3+(h)) / S(h)``; unigrams interpolate with
  the uniform distribution over the vocabulary, ``</s>`` and ``<unk>`` (so ``<unk>``
  gets ``gamma / |V|``). In the ARPA file each n-gram holds its interpolated
  probability and each context its ``gamma`` as backoff weight, so under ARPA backoff
  semantics every context's distribution sums to one.

Transcripts are normalised like the training targets (whitespace collapsed, upper-cased
when the labels have no lower-case letter; see ``data.text.normalize_text``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.manifest import read_manifest  # noqa: E402
from data.text import load_labels, normalize_text, read_transcript, text_to_ids  # noqa: E402
from utils import atomic_write  # noqa: E402

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
NGram = tuple[str, ...]


class LMError(ValueError):
    """A corpus or option that cannot give a language model; the message says why."""


# ---------------------------------------------------------------------------- corpus


def read_sentences(manifests: Iterable[str | Path], labels: Sequence[str]) -> list[list[str]]:
    """Word lists of every transcript in the manifests, checked against ``labels``."""
    sentences: list[list[str]] = []
    for manifest in manifests:
        for row in read_manifest(manifest):
            txt = row.txt
            text = normalize_text(read_transcript(txt), labels)
            text_to_ids(text, labels, source=txt)  # same character check as training
            sentences.append(text.split())
    return sentences


# ---------------------------------------------------------------------------- estimation


def count_ngrams(sentences: Iterable[Sequence[str]], order: int) -> list[dict[NGram, int]]:
    """Raw counts; ``counts[n-1]`` maps each n-gram of the padded sentences to its count."""
    counts: list[dict[NGram, int]] = [defaultdict(int) for _ in range(order)]
    for words in sentences:
        tokens = (BOS, *words, EOS)
        for n in range(1, order + 1):
            table = counts[n - 1]
            for i in range(len(tokens) - n + 1):
                table[tokens[i : i + n]] += 1
    return [dict(c) for c in counts]


def adjusted_counts(raw: list[dict[NGram, int]]) -> list[dict[NGram, int]]:
    """Kneser-Ney adjusted counts (raw for the top order and ``<s>``-initial n-grams,
    else the number of distinct left extensions)."""
    order = len(raw)
    adjusted: list[dict[NGram, int]] = [dict() for _ in range(order)]
    adjusted[order - 1] = dict(raw[order - 1])
    for n in range(order - 1, 0, -1):  # n-grams of length n from (n+1)-grams
        left: dict[NGram, int] = defaultdict(int)
        for g in raw[n]:
            left[g[1:]] += 1
        table = adjusted[n - 1]
        for g, c in raw[n - 1].items():
            table[g] = c if g[0] == BOS else left[g]
    return adjusted


def discounts(adjusted: dict[NGram, int]) -> tuple[tuple[float, float, float], bool]:
    """(D1, D2, D3+) for one order and whether the fallback was used."""
    t = [0, 0, 0, 0, 0]
    for g, a in adjusted.items():
        if g == (BOS,):
            continue
        if a <= 4:
            t[a] += 1
    t1, t2, t3, t4 = t[1], t[2], t[3], t[4]
    if t1 == 0 or t2 == 0 or t3 == 0:
        return FALLBACK_DISCOUNTS, True
    y = t1 / (t1 + 2 * t2)
    d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
    if not all(0.0 < dk < k for dk, k in zip(d, (1, 2, 3))):
        return FALLBACK_DISCOUNTS, True
    return d, False


class KneserNeyModel:
    """Interpolated modified Kneser-Ney estimate.

    Attributes:
        order: n-gram order.
        probs: ``probs[n-1][ngram]`` = log10 p(last word | preceding words), interpolated.
        backoffs: ``backoffs[n-1][ngram]`` = log10 gamma(ngram) for n-grams used as contexts.
        discounts: (D1, D2, D3+) per order; ``fallback``: orders (1-based) that fell back.
    """

    def __init__(self, sentences: Sequence[Sequence[str]], order: int) -> None:
        if order < 1:
            raise LMError(f"order must be >= 1, got {order}")
        sentences = [list(s) for s in sentences]
        if not any(sentences):
            raise LMError("the corpus holds no words")
        longest = max(len(s) for s in sentences) + 2  # with <s> and </s>
        self.requested_order = order
        self.order = min(order, longest)
        raw = count_ngrams(sentences, self.order)
        adjusted = adjusted_counts(raw)
        self.discounts: list[tuple[float, float, float]] = []
        self.fallback: list[int] = []
        for n in range(1, self.order + 1):
            d, fell_back = discounts(adjusted[n - 1])
            self.discounts.append(d)
            if fell_back:
                self.fallback.append(n)
        self.probs: list[dict[NGram, float]] = [dict() for _ in range(self.order)]
        self.backoffs: list[dict[NGram, float]] = [dict() for _ in range(self.order)]
        self._estimate(adjusted)

    @staticmethod
    def _discount(d: tuple[float, float, float], a: int) -> float:
        return d[min(a, 3) - 1]

    def _estimate(self, adjusted: list[dict[NGram, int]]) -> None:
        # Unigrams: interpolated with the uniform distribution over V = words, </s>, <unk>.
        d = self.discounts[0]
        unigrams = {g: a for g, a in adjusted[0].items() if g != (BOS,)}
        total = sum(unigrams.values())
        mass = sum(self._discount(d, a) for a in unigrams.values())
        vocab = set(unigrams) | {(UNK,)}
        uniform = (mass / total) / len(vocab)
        lin: list[dict[NGram, float]] = [dict() for _ in range(self.order)]
        for g in vocab:
            a = unigrams.get(g, 0)
            lin[0][g] = (a - self._discount(d, a)) / total + uniform if a else uniform
        # Higher orders, each interpolated with the order below (always present: every
        # n-gram's suffix is itself an observed (n-1)-gram).
        for n in range(2, self.order + 1):
            d = self.discounts[n - 1]
            by_context: dict[NGram, list[tuple[str, int]]] = defaultdict(list)
            for g, a in adjusted[n - 1].items():
                by_context[g[:-1]].append((g[-1], a))
            lower = lin[n - 2]
            for context, entries in by_context.items():
                s = sum(a for _, a in entries)
                gamma = sum(self._discount(d, a) for _, a in entries) / s
                self.backoffs[n - 2][context] = math.log10(gamma)
                for w, a in entries:
                    g = context + (w,)
                    lin[n - 1][g] = (a - self._discount(d, a)) / s + gamma * lower[g[1:]]
        for n in range(self.order):
            self.probs[n] = {g: math.log10(p) for g, p in lin[n].items()}
        self.probs[0][(BOS,)] = -99.0  # never predicted; present as a context
        if (BOS,) not in self.backoffs[0] and self.order > 1:
            self.backoffs[0][(BOS,)] = 0.0

    def write_arpa(self, path: str | Path) -> None:
        """Write the model as an ARPA file (atomically)."""
        with atomic_write(path) as f:
            f.write("\n\\data\\\n")
            for n in range(1, self.order + 1):
                f.write(f"ngram {n}={len(self.probs[n - 1])}\n")
            for n in range(1, self.order + 1):
                f.write(f"\n\\{n}-grams:\n")
                backoffs = self.backoffs[n - 1] if n < self.order else {}
                for g in sorted(self.probs[n - 1]):
                    line = f"{self.probs[n - 1][g]:.7f}\t{' '.join(g)}"
                    if g in backoffs:
                        line += f"\t{backoffs[g]:.7f}"
                    f.write(line + "\n")
            f.write("\n\\end\\\n")


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        action="append",
        required=True,
        help="manifest whose transcripts form the corpus (repeat for several)",
    )
    parser.add_argument("--order", type=int, default=3, help="n-gram order")
    parser.add_argument("--out", type=Path, required=True, help="ARPA file to write")
    parser.add_argument(
        "--labels-path",
        type=Path,
        default=None,
        help="labels JSON (as for train.py); decides case normalisation (default: the built-in labels)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.order < 2:
            raise LMError(f"--order must be >= 2 (KenLM, the decoder's LM engine, needs at least bigrams), got {args.order}")
        labels = load_labels(args.labels_path)
        sentences = read_sentences(args.manifest, labels)
        model = KneserNeyModel(sentences, args.order)
        model.write_arpa(args.out)
    except (OSError, ValueError) as e:  # FileNotFoundError, Manifest/Transcript/LM errors
        print(f"error: {e}", file=sys.stderr)
        return 2
    if model.order < model.requested_order:
        print(
            f"note: order reduced to {model.order}: the longest sentence has "
            f"{model.order - 2} words, so no {model.requested_order}-grams exist"
        )
    for n in model.fallback:
        print(
            f"note: order {n}: counts of counts too small for modified Kneser-Ney "
            f"discounts; using {FALLBACK_DISCOUNTS} (like lmplz --discount_fallback)"
        )
    sizes = ", ".join(f"{n + 1}-grams {len(p)}" for n, p in enumerate(model.probs))
    print(f"wrote {args.out}: {len(sentences)} sentences, order {model.order}, {sizes}")
    return 0


__all__ = ["KneserNeyModel", "LMError", "read_sentences", "count_ngrams", "adjusted_counts", "discounts"]

if __name__ == "__main__":
    sys.exit(main())
