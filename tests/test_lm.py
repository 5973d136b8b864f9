"""data/build_lm.py (Kneser-Ney ARPA LMs) and search_lm_params.py (alpha/beta tuning)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
import torch
from arpa_oracle import ArpaLM

import search_lm_params
from data import build_lm
from data.build_lm import KneserNeyModel, adjusted_counts, count_ngrams, discounts
from data.manifest import write_manifest
from data.text import LABELS
from decoder import save_outputs

L = list(LABELS)
C = len(L)
requires_flashlight = pytest.mark.skipif(
    importlib.util.find_spec("flashlight") is None, reason="beam search needs flashlight-text"
)


def vocabulary(lm: ArpaLM) -> list[str]:
    """Everything an LM can predict: all unigrams but <s> (includes </s> and <unk>)."""
    return [w for w in lm.vocab if w != "<s>"]


def total_prob(lm: ArpaLM, context: tuple[str, ...]) -> float:
    return sum(10 ** lm.logprob(w, context) for w in vocabulary(lm))


def random_corpus(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    words = ("ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE ZERO ENTER ERASE RUBOUT STOP GO YES NO REPEAT").split()
    return [[rng.choice(words[: rng.randint(3, len(words))]) for _ in range(rng.randint(1, 8))] for _ in range(n)]


# ---------------------------------------------------------------------------- estimation


def test_discounts_hand_case_and_fallback() -> None:
    # counts of adjusted counts t1=4, t2=2, t3=1, t4=1: Y = 4/8, D1 = 1 - 2Y*2/4 = 0.5,
    # D2 = 2 - 3Y*1/2 = 1.25, D3+ = 3 - 4Y*1/1 = 1.0
    adjusted = {("a",): 1, ("b",): 1, ("c",): 1, ("d",): 1, ("e",): 2, ("f",): 2, ("g",): 3, ("h",): 4, ("<s>",): 9}
    (d1, d2, d3), fell_back = discounts(adjusted)
    assert not fell_back
    assert (d1, d2, d3) == pytest.approx((0.5, 1.25, 1.0))
    assert discounts({("a",): 1, ("b",): 2}) == (build_lm.FALLBACK_DISCOUNTS, True)  # t3 = 0


def test_adjusted_counts_are_continuation_counts() -> None:
    raw = count_ngrams([["A", "B"], ["C", "B"], ["A", "B"]], 2)
    adjusted = adjusted_counts(raw)
    assert raw[1][("A", "B")] == 2 and adjusted[1][("A", "B")] == 2  # top order: raw
    assert adjusted[0][("B",)] == 2  # preceded by A and C
    assert adjusted[0][("</s>",)] == 1  # preceded by B only
    assert adjusted[0][("<s>",)] == 3  # <s>-initial: raw


def test_bigram_probabilities_hand_computed(tmp_path: Path) -> None:
    # Corpus "A B", "A". Unigram continuation counts A=1, B=1, </s>=2 (total 4); every
    # order falls back to D = (0.5, 1, 1.5). gamma() = 2/4, uniform share 0.5/4 over
    # V = {A, B, </s>, <unk>}: p(A) = p(B) = .5/4 + .125 = .25, p(</s>) = 1/4 + .125, p(<unk>) = .125.
    # Bigrams: p(A|<s>) = (2-1)/2 + .5*.25 = .625; p(B|A) = .5/2 + .5*.25 = .375;
    # p(</s>|A) = .25 + .5*.375 = .4375; p(</s>|B) = .5 + .5*.375 = .6875.
    model = KneserNeyModel([["A", "B"], ["A"]], 2)
    model.write_arpa(tmp_path / "hand.arpa")
    lm = ArpaLM(tmp_path / "hand.arpa")
    expected = {
        ("A", ()): 0.25,
        ("B", ()): 0.25,
        ("</s>", ()): 0.375,
        ("<unk>", ()): 0.125,
        ("A", ("<s>",)): 0.625,
        ("B", ("A",)): 0.375,
        ("</s>", ("A",)): 0.4375,
        ("</s>", ("B",)): 0.6875,
        ("B", ("<s>",)): 0.5 * 0.25,  # unseen: backoff gamma(<s>) = 1/2 times p(B)
        ("ZEBRA", ("B",)): 0.5 * 0.125,
    }  # unknown word -> <unk>
    for (word, context), p in expected.items():
        assert 10 ** lm.logprob(word, context) == pytest.approx(p, abs=1e-6), (word, context)
    assert 10 ** lm.sentence_logprob(["A", "B"]) == pytest.approx(0.625 * 0.375 * 0.6875, abs=1e-6)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_sums_to_one(tmp_path: Path, order: int) -> None:
    tiny = [s.split() for s in ["THE CAT SAT", "THE CAT SAT ON THE MAT", "A CAT", "GO"]]
    for name, corpus in (("tiny", tiny), ("random", random_corpus(600))):
        model = KneserNeyModel(corpus, order)
        path = tmp_path / f"{name}.arpa"
        model.write_arpa(path)
        lm = ArpaLM(path)
        words = sorted({w for s in corpus for w in s})
        seen = {tuple(s[:k]) for s in corpus for k in range(1, len(s) + 1)}
        contexts = [
            (),
            ("<s>",),
            ("ZEBRA",),
            ("ZEBRA", words[0]),
            (words[1], "ZEBRA"),
            ("<s>", words[0]),
            (words[0], words[0], words[1]),
        ]
        contexts += [("<s>",) + c for c in sorted(seen)[:10]] + sorted(seen)[-10:]
        for context in contexts:
            assert total_prob(lm, context) == pytest.approx(1.0, abs=1e-4), (name, order, context)
        assert lm.logprob("<unk>", ()) > -5  # <unk> gets some mass
    if order >= 2:
        assert model.fallback != list(range(1, order + 1))  # the random corpus has real discounts


@requires_flashlight
def test_kenlm_loads_the_arpa_and_agrees(tmp_path: Path) -> None:
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    corpus = random_corpus(400, seed=1)
    path = tmp_path / "r.arpa"
    KneserNeyModel(corpus, 3).write_arpa(path)
    ours = ArpaLM(path)
    words = sorted({w for s in corpus for w in s})
    vocab = Dictionary(["<unk>", *words, "ZEBRA"])
    kenlm = KenLM(str(path), vocab)
    for sentence in corpus[:40] + [["ZEBRA", words[0]], [words[2], "ZEBRA", words[2], words[2]]]:
        state, total = kenlm.start(False), 0.0
        for w in sentence:
            state, score = kenlm.score(state, vocab.get_index(w))
            total += score
        state, score = kenlm.finish(state)
        total += score
        assert total == pytest.approx(ours.sentence_logprob(sentence), abs=1e-4), sentence


def test_order_larger_than_sentences_is_reduced() -> None:
    model = KneserNeyModel([["YES"], ["NO"]], 5)
    assert model.order == 3 and model.requested_order == 5
    with pytest.raises(build_lm.LMError, match="no words"):
        KneserNeyModel([[], []], 3)


# ---------------------------------------------------------------------------- CLI


def test_cli_builds_arpa_from_manifests(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra_txt = tmp_path / "extra" / "e.txt"
    extra_txt.parent.mkdir()
    extra_txt.write_text("go  up\n")  # normalised: one space, upper case
    extra = tmp_path / "extra" / "m.csv"
    write_manifest(extra, [(tmp_path / "extra" / "e.wav", extra_txt)])
    out = tmp_path / "lm" / "an4_3gram.arpa"
    rc = build_lm.main(["--manifest", str(tiny_dataset), "--manifest", str(extra), "--order", "3", "--out", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert f"wrote {out}: 7 sentences, order 3" in stdout
    assert "discount_fallback" in stdout
    lm = ArpaLM(out)
    assert set(vocabulary(lm)) == {"A", "AB", "YES", "NO", "HELLO", "GO", "UP", "</s>", "<unk>"}
    assert 10 ** lm.logprob("UP", ("<s>", "GO")) > 0.5  # seen twice after "GO"
    assert total_prob(lm, ("<s>", "GO")) == pytest.approx(1.0, abs=1e-4)


def test_cli_errors(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.arpa"
    assert build_lm.main(["--manifest", str(tmp_path / "nope.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope.csv: manifest not found" in err and "\n" not in err
    bad = tiny_dataset.parent / "txt" / "u0.txt"
    bad.write_text("CAFÉ\n")
    assert build_lm.main(["--manifest", str(tiny_dataset), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "u0.txt" in err and "'É'" in err
    assert build_lm.main(["--manifest", str(tiny_dataset), "--order", "1", "--out", str(out)]) == 2
    assert "--order must be >= 2" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------- alpha/beta tuning


def kat_log_probs(p_k: float, p_c: float, p: float = 0.9) -> torch.Tensor:
    """(T, C) log-probs for 'THE ?AT SAT'; the ? frame says K with p_k, C with p_c."""
    spec = "_TH_E_ _K_A_T_ _S_AT__"
    x = torch.full((len(spec), C), (1 - p) / (C - 1))
    for t, ch in enumerate(spec):
        x[t, L.index(ch)] = p
    x[8] = (1 - p_k - p_c) / (C - 2)
    x[8, L.index("K")], x[8, L.index("C")] = p_k, p_c
    return x.log()


@requires_flashlight
def test_search_lm_params_finds_the_known_best(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = ["THE CAT SAT"] * 6 + ["THE KAT SAT", "THE MAT", "A CAT"]
    lm_path = tmp_path / "lm.arpa"
    KneserNeyModel([s.split() for s in corpus], 3).write_arpa(lm_path)
    lm = ArpaLM(lm_path)
    # ln P(THE CAT SAT) - ln P(THE KAT SAT): the LM's preference for CAT
    delta = math.log(10) * (lm.sentence_logprob(["THE", "CAT", "SAT"]) - lm.sentence_logprob(["THE", "KAT", "SAT"]))
    assert delta > 0
    # utterance 1 (ref CAT, acoustics favour K by ln(.5/.45)) needs alpha > 0.105 / delta;
    # utterance 2 (ref KAT, acoustics favour K by ln(.9/.05)) breaks for alpha > 2.89 / delta.
    saved = tmp_path / "val.pt"
    save_outputs(saved, [kat_log_probs(0.5, 0.45), kat_log_probs(0.9, 0.05)], ["THE CAT SAT", "THE KAT SAT"], L, 0.02)
    top = 3.2 / delta  # grid: 0 (too small), 1.6 / delta (right), 3.2 / delta (too large)
    out = tmp_path / "tune" / "results.json"
    rc = search_lm_params.main(
        [
            "--saved-output",
            str(saved),
            "--lm-path",
            str(lm_path),
            "--lm-alpha-from",
            "0",
            "--lm-alpha-to",
            str(top),
            "--lm-num-alphas",
            "3",
            "--lm-beta-from",
            "0",
            "--lm-beta-to",
            "1",
            "--lm-num-betas",
            "2",
            "--beam-width",
            "16",
            "--num-workers",
            "2",
            "--output-path",
            str(out),
            "--quiet",
            "--save-defaults",
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    rows = {(round(r["alpha"] * delta, 3), r["beta"]): r["wer"] for r in report["results"]}
    assert rows == {
        (0.0, 0.0): pytest.approx(100 / 6),
        (0.0, 1.0): pytest.approx(100 / 6),
        (1.6, 0.0): 0.0,
        (1.6, 1.0): 0.0,
        (3.2, 0.0): pytest.approx(100 / 6),
        (3.2, 1.0): pytest.approx(100 / 6),
    }
    best = report["best"]
    assert best["alpha"] == pytest.approx(1.6 / delta) and best["beta"] == 0.0
    assert best["wer"] == 0.0 and best["cer"] == 0.0
    assert report["n_utterances"] == 2
    assert f"Best: alpha {1.6 / delta:.4g}  beta 0" in capsys.readouterr().out
    # --save-defaults: the tuned pair becomes the LM's default in make_decoder
    from decoder import make_decoder

    assert json.loads((tmp_path / "lm.json").read_text())["alpha"] == pytest.approx(1.6 / delta)
    args = parse_decoder_args(["--decoder", "beam", "--lm-path", str(lm_path)])
    with make_decoder(args, L) as decoder:
        assert decoder.alpha == pytest.approx(1.6 / delta) and decoder.beta == 0.0
    args = parse_decoder_args(["--decoder", "beam", "--lm-path", str(lm_path), "--alpha", "0.3"])
    with make_decoder(args, L) as decoder:
        assert decoder.alpha == 0.3  # a flag given on the command line wins
    (tmp_path / "lm.json").write_text("{not json")
    with pytest.raises(ValueError, match="lm.json"):
        make_decoder(args, L)


@requires_flashlight
def test_search_lm_params_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lm_path = tmp_path / "lm.arpa"
    KneserNeyModel([["A", "CAT"]], 2).write_arpa(lm_path)
    missing = tmp_path / "val.pt"
    assert search_lm_params.main(["--saved-output", str(missing), "--lm-path", str(lm_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "val.pt: saved outputs not found" in err
    save_outputs(missing, [kat_log_probs(0.5, 0.4)], ["THE CAT SAT"], L, 0.02)
    argv = ["--saved-output", str(missing), "--lm-path", str(lm_path)]
    assert search_lm_params.main(argv + ["--lm-alpha-from", "2", "--lm-alpha-to", "1"]) == 2
    assert "--lm-alpha-to" in capsys.readouterr().err
    assert search_lm_params.main(argv[:2] + ["--lm-path", str(tmp_path / "no.arpa")]) == 2
    assert "no.arpa: file not found" in capsys.readouterr().err


@requires_flashlight
def test_search_lm_params_lexicon_and_pruning_flags(tmp_path: Path) -> None:
    lm_path = tmp_path / "lm.arpa"
    KneserNeyModel([s.split() for s in ["THE CAT SAT", "THE KAT SAT"]], 3).write_arpa(lm_path)
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("THE\nCAT\nSAT\n")  # no KAT: the second utterance must come out as CAT
    saved = tmp_path / "val.pt"
    save_outputs(saved, [kat_log_probs(0.3, 0.6), kat_log_probs(0.9, 0.05)], ["THE CAT SAT", "THE KAT SAT"], L, 0.02)
    out = tmp_path / "r.json"
    argv = [
        "--saved-output",
        str(saved),
        "--lm-path",
        str(lm_path),
        "--lm-num-alphas",
        "1",
        "--lm-num-betas",
        "1",
        "--num-workers",
        "1",
        "--output-path",
        str(out),
        "--quiet",
        "--cutoff-top-n",
        "5",
        "--cutoff-prob",
        "0.99",
    ]
    assert search_lm_params.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["best"]["wer"] == 0.0 and report["lexicon"] is None
    assert (report["cutoff_top_n"], report["cutoff_prob"]) == (5, 0.99)
    assert search_lm_params.main(argv + ["--lexicon", str(lexicon)]) == 0
    report = json.loads(out.read_text())
    assert report["best"]["wer"] == pytest.approx(100 / 6) and report["lexicon"] == str(lexicon)


def parse_decoder_args(argv: list[str]):
    from decoder import DecoderConfig

    parser = argparse.ArgumentParser()
    DecoderConfig.add_args(parser)
    return DecoderConfig.from_args(parser.parse_args(argv))
