"""A test oracle: an ARPA language model read back and scored with standard backoff
semantics (log10), to check what data/build_lm.py writes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from data.build_lm import BOS, EOS, UNK, LMError, NGram


class ArpaLM:
    """An ARPA model read back, scored with standard backoff semantics (log10)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.probs: list[dict[NGram, float]] = []
        self.backoffs: list[dict[NGram, float]] = []
        section = 0
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line or line.startswith("ngram ") or line == "\\data\\":
                    continue
                if line == "\\end\\":
                    break
                if line.startswith("\\") and line.endswith("-grams:"):
                    section = int(line[1 : -len("-grams:")])
                    while len(self.probs) < section:
                        self.probs.append({})
                        self.backoffs.append({})
                    continue
                parts = line.split()
                if section == 0 or len(parts) not in (section + 1, section + 2):
                    raise LMError(f"{self.path}:{lineno}: not an ARPA n-gram line: {line!r}")
                g = tuple(parts[1 : section + 1])
                self.probs[section - 1][g] = float(parts[0])
                if len(parts) == section + 2:
                    self.backoffs[section - 1][g] = float(parts[-1])
        if not self.probs:
            raise LMError(f"{self.path}: no n-grams found")
        self.order = len(self.probs)
        self.vocab = [g[0] for g in self.probs[0]]

    def logprob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context); unknown words map to ``<unk>``."""
        known = self.probs[0]
        word = word if (word,) in known else UNK
        context = tuple(w if (w,) in known else UNK for w in context)
        context = context[len(context) - (self.order - 1) :] if self.order > 1 else ()
        backoff = 0.0
        for start in range(len(context) + 1):
            h = context[start:]
            g = h + (word,)
            p = self.probs[len(g) - 1].get(g)
            if p is not None:
                return backoff + p
            if h:
                backoff += self.backoffs[len(h) - 1].get(h, 0.0)
        raise LMError(f"{self.path}: {word!r} has no unigram (and no <unk>)")

    def sentence_logprob(self, words: Sequence[str]) -> float:
        """log10 p(words </s> | <s>)."""
        history = [BOS]
        total = 0.0
        for w in (*words, EOS):
            total += self.logprob(w, history)
            history.append(w)
        return total
