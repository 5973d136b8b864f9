"""decoder.py: greedy and beam decoding on hand-made log-probs, WER/CER, decoder flags."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import decoder as dec
from data.build_lm import KneserNeyModel
from data.text import LABELS
from decoder import (
    BeamCTCDecoder,
    DecoderConfig,
    DecoderError,
    ErrorRate,
    GreedyDecoder,
    Hypothesis,
    char_errors,
    load_outputs,
    make_decoder,
    save_outputs,
    word_errors,
)

L = list(LABELS)
C = len(L)
requires_flashlight = pytest.mark.skipif(
    importlib.util.find_spec("flashlight") is None, reason="beam search needs flashlight-text"
)


def frames(spec: str, p: float = 0.9) -> torch.Tensor:
    """(T, C) log-probs: frame t puts probability ``p`` on label ``spec[t]``, the rest spread."""
    x = torch.full((len(spec), C), (1 - p) / (C - 1))
    for t, ch in enumerate(spec):
        x[t, L.index(ch)] = p
    return x.log()


def set_probs(x: torch.Tensor, t: int, probs: dict[str, float]) -> None:
    """Set frame ``t`` to ``probs`` (label -> prob), the remaining mass spread evenly."""
    rest = (1 - sum(probs.values())) / (C - len(probs))
    row = torch.full((C,), rest)
    for ch, p in probs.items():
        row[L.index(ch)] = p
    x[t] = row.log()


def kat_frames(p_k: float, p_c: float) -> torch.Tensor:
    """'THE ?AT SAT' where the ? frame says K with p_k and C with p_c."""
    x = frames("_TH_E_ _K_A_T_ _S_AT__")
    set_probs(x, 8, {"K": p_k, "C": p_c})
    return x


def lm_file(tmp_path: Path, sentences: list[str], order: int = 3) -> Path:
    path = tmp_path / "lm.arpa"
    KneserNeyModel([s.split() for s in sentences], order).write_arpa(path)
    return path


CAT_CORPUS = ["THE CAT SAT"] * 6 + ["A KAT", "THE MAT", "THE CAT RAN"]


# ---------------------------------------------------------------------------- greedy


def test_greedy_collapses_repeats_and_drops_blanks() -> None:
    x = torch.stack([frames("__CC_AA_TT__"), frames("_A_A__AAA_B_")])
    hyps = GreedyDecoder(L).decode(x)
    assert [h[0].text for h in hyps] == ["CAT", "AAAB"]  # A_A -> AA (blank separates), AAA -> A
    assert hyps[0][0].char_frames == [2, 5, 8]
    assert hyps[1][0].char_frames == [1, 3, 6, 10]
    # score: sum of the best log-prob per frame
    assert hyps[0][0].score == pytest.approx(12 * math.log(0.9), rel=1e-5)


def test_greedy_strips_and_collapses_spaces_and_word_times() -> None:
    x = frames("  HI_ _  _TH_ERE  ")[None]
    ((hyp,),) = GreedyDecoder(L).decode(x)
    assert hyp.text == "HI THERE"
    assert hyp.char_frames == [2, 3, 5, 10, 11, 13, 14, 15]
    assert hyp.words(0.02) == [
        {"word": "HI", "start": 0.04, "end": 0.08},
        {"word": "THERE", "start": 0.2, "end": 0.32},
    ]


def test_greedy_respects_lengths_and_empty() -> None:
    x = torch.stack([frames("_A_B_CCC"), frames("_A_B_CCC"), frames("DDDDDDDD")])
    hyps = GreedyDecoder(L).decode(x, torch.tensor([8, 4, 0]))
    assert [h[0].text for h in hyps] == ["ABC", "AB", ""]
    assert hyps[2][0].char_frames == [] and hyps[2][0].words(0.02) == []


def test_decode_rejects_wrong_shapes() -> None:
    g = GreedyDecoder(L)
    with pytest.raises(ValueError, match="labels"):
        g.decode(torch.zeros(1, 5, C + 1))
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        g.decode(torch.zeros(5, C))
    with pytest.raises(ValueError, match="lengths"):
        g.decode(torch.zeros(2, 5, C), torch.tensor([5, 6]))


def test_hypothesis_words_hand_case() -> None:
    h = Hypothesis("GO UP", [3, 4, 7, 9, 12], 0.0)
    assert h.words(0.5) == [{"word": "GO", "start": 1.5, "end": 2.5}, {"word": "UP", "start": 4.5, "end": 6.5}]
    # the last output frame reaches past the end of 6.2 s of audio: times stop at the audio's end
    assert h.words(0.5, 6.2) == [{"word": "GO", "start": 1.5, "end": 2.5}, {"word": "UP", "start": 4.5, "end": 6.2}]
    assert h.words(0.5, 2.0)[0] == {"word": "GO", "start": 1.5, "end": 2.0}


# ---------------------------------------------------------------------------- beam


@requires_flashlight
def test_beam_without_lm_equals_greedy_on_sharp_posteriors() -> None:
    rng = np.random.default_rng(0)
    specs = []
    for _ in range(6):
        spec = ""
        for _ in range(rng.integers(3, 12)):
            spec += rng.choice(L) * int(rng.integers(1, 4))
        specs.append(spec.ljust(40, "_"))
    x = torch.stack([frames(s, p=0.97) for s in specs])
    x = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).log_softmax(-1)
    lengths = torch.tensor([40, 38, 40, 25, 40, 33])
    greedy = GreedyDecoder(L).decode(x, lengths)
    beam = BeamCTCDecoder(L, beam_width=16).decode(x, lengths)
    for g, b in zip(greedy, beam):
        assert b[0].text == g[0].text
        assert b[0].char_frames == g[0].char_frames


@requires_flashlight
def test_lm_fixes_kat_to_cat_only_with_alpha(tmp_path: Path) -> None:
    lm = lm_file(tmp_path, CAT_CORPUS)
    x = kat_frames(0.5, 0.45)[None]
    assert GreedyDecoder(L).decode(x)[0][0].text == "THE KAT SAT"
    no_lm_weight = BeamCTCDecoder(L, beam_width=16, lm_path=lm, alpha=0.0, beta=0.0)
    assert no_lm_weight.decode(x)[0][0].text == "THE KAT SAT"
    with_lm = BeamCTCDecoder(L, beam_width=16, lm_path=lm, alpha=1.0, beta=0.0)
    ((best,),) = with_lm.decode(x)
    assert best.text == "THE CAT SAT"
    assert [w["word"] for w in best.words(0.02)] == ["THE", "CAT", "SAT"]
    assert best.char_frames == [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 19]
    # set_lm_weights switches without reloading
    with_lm.set_lm_weights(0.0, 0.0)
    assert with_lm.decode(x)[0][0].text == "THE KAT SAT"


@requires_flashlight
def test_lm_vocabulary_restricts_words_and_beta_counts_words(tmp_path: Path) -> None:
    lm = lm_file(tmp_path, CAT_CORPUS)
    d = BeamCTCDecoder(L, beam_width=16, lm_path=lm, alpha=0.5, beta=0.0)
    assert sorted(d.vocabulary) == ["A", "CAT", "KAT", "MAT", "RAN", "SAT", "THE"]
    ((hyp,),) = d.decode(frames("_D_O_G_ _C_A_T_")[None])  # DOG is not a word of the LM
    assert "DOG" not in hyp.text.split() and hyp.text.endswith("CAT")
    # beta is added once per word to the score
    x = kat_frames(0.5, 0.45)[None]
    s0 = BeamCTCDecoder(L, lm_path=lm, alpha=0.5, beta=0.0).decode(x)[0][0].score
    s1 = BeamCTCDecoder(L, lm_path=lm, alpha=0.5, beta=2.0).decode(x)[0][0].score
    assert s1 - s0 == pytest.approx(3 * 2.0, abs=1e-3)


@requires_flashlight
def test_top_paths_are_distinct_and_ordered() -> None:
    x = kat_frames(0.5, 0.3)
    set_probs(x, 16, {"S": 0.6, "Z": 0.3})
    (hyps,) = BeamCTCDecoder(L, beam_width=20, top_paths=4).decode(x[None])
    # path probabilities 0.5*0.6 > 0.3*0.6 > 0.5*0.3 > 0.3*0.3 on the two ambiguous frames
    assert [h.text for h in hyps] == ["THE KAT SAT", "THE CAT SAT", "THE KAT ZAT", "THE CAT ZAT"]
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] - scores[1] == pytest.approx(math.log(0.5 / 0.3), abs=0.05)
    assert all(len(h.char_frames) == len(h.text) for h in hyps)


@requires_flashlight
def test_lexicon_constrains_output_words(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("the\tt h e |\ncat\nsat\nc3po\n")
    x = kat_frames(0.6, 0.35)[None]
    d = BeamCTCDecoder(L, beam_width=16, lexicon=lexicon, beta=0.0)
    assert sorted(d.vocabulary) == ["cat", "sat", "the"]  # c3po cannot be spelled: left out
    assert "1 words cannot be spelled" in caplog.text and "'c3po'" in caplog.text
    assert d.decode(x)[0][0].text == "THE CAT SAT"
    assert BeamCTCDecoder(L, beam_width=16).decode(x)[0][0].text == "THE KAT SAT"


@requires_flashlight
def test_cutoff_prob_and_cutoff_top_n_prune_tokens() -> None:
    x = kat_frames(0.6, 0.35)[None]
    full = BeamCTCDecoder(L, beam_width=16, top_paths=2).decode(x)[0]
    assert [h.text for h in full] == ["THE KAT SAT", "THE CAT SAT"]
    # K alone holds 0.6 >= 0.5 of the mass on the ambiguous frames: C is pruned there.
    pruned = BeamCTCDecoder(L, beam_width=16, top_paths=2, cutoff_prob=0.5).decode(x)[0]
    assert pruned[0].text == "THE KAT SAT"
    assert "THE CAT SAT" not in [h.text for h in pruned]
    # Only the argmax token per frame: the beam holds a single path.
    single = BeamCTCDecoder(L, beam_width=16, top_paths=3, cutoff_top_n=1).decode(x)[0]
    assert [h.text for h in single] == ["THE KAT SAT"]


@requires_flashlight
def test_lm_workers_decode_in_processes_like_in_process(tmp_path: Path) -> None:
    lm = lm_file(tmp_path, CAT_CORPUS)
    x = torch.stack([kat_frames(0.5, 0.45), frames("_TH_E_ _M_A_T_________"), kat_frames(0.9, 0.05)])
    serial = BeamCTCDecoder(L, lm_path=lm, alpha=1.0).decode(x)
    with BeamCTCDecoder(L, lm_path=lm, alpha=1.0, lm_workers=2) as parallel:
        got = parallel.decode(x)
    assert [h[0].text for h in got] == [h[0].text for h in serial]
    assert [h[0].char_frames for h in got] == [h[0].char_frames for h in serial]


def test_missing_flashlight_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flashlight.lib.text", None)
    with pytest.raises(ImportError, match="pip install flashlight-text"):
        BeamCTCDecoder(L)


# ---------------------------------------------------------------------------- WER / CER


def test_word_and_char_errors_hand_cases() -> None:
    assert word_errors("THE CAT SAT", "THE BAT SAT ON") == (2, 3)  # 1 sub + 1 ins
    assert word_errors("A B C D", "A C D") == (1, 4)  # 1 del
    assert word_errors("GO", "") == (1, 1)
    assert char_errors("AB C", "ABD") == (1, 3)  # spaces ignored: ABC vs ABD
    assert char_errors("HELLO WORLD", "HELO WORLDS") == (2, 10)
    assert char_errors("", "") == (0, 0)


def test_error_rate_is_corpus_level() -> None:
    rate = ErrorRate()
    rate.update(["A", "B C D E"], ["X", "B C D E"])
    assert rate.wer == pytest.approx(20.0)  # 1 / 5 words, not the mean of 100 % and 0 %
    assert rate.cer == pytest.approx(20.0)
    rate.update(["YES"], ["YES NO"])
    assert (rate.word_edits, rate.n_words) == (2, 6)
    assert rate.wer == pytest.approx(100 * 2 / 6)
    assert (rate.char_edits, rate.n_chars) == (3, 8)
    assert rate.as_dict()["n_utterances"] == 3
    with pytest.raises(ValueError):
        rate.update(["A"], [])


def test_error_rate_with_empty_references() -> None:
    assert ErrorRate().wer == 0.0 and ErrorRate().cer == 0.0
    rate = ErrorRate()
    rate.update([""], [""])
    assert rate.wer == 0.0 and rate.cer == 0.0
    rate.update([""], ["A B"])
    assert rate.wer == 200.0 and rate.cer == 200.0


# ---------------------------------------------------------------------------- flags


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    DecoderConfig.add_args(parser)
    return DecoderConfig.from_args(parser.parse_args(list(argv)))


@requires_flashlight
def test_make_decoder_defaults_and_beam_flags(tmp_path: Path) -> None:
    assert isinstance(make_decoder(parse(), L), GreedyDecoder)
    lm = lm_file(tmp_path, CAT_CORPUS)
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text("CAT\nSAT\nTHE\n")
    d = make_decoder(
        parse(
            "--decoder",
            "beam",
            "--beam-width",
            "7",
            "--lm-path",
            str(lm),
            "--alpha",
            "1.5",
            "--beta",
            "0.5",
            "--cutoff-top-n",
            "12",
            "--cutoff-prob",
            "0.99",
            "--top-paths",
            "2",
            "--lexicon",
            str(lexicon),
            "--lm-workers",
            "1",
        ),
        L,
    )
    assert isinstance(d, BeamCTCDecoder)
    assert d.describe() == {
        "type": "beam",
        "beam_width": 7,
        "lm": str(lm),
        "alpha": 1.5,
        "beta": 0.5,
        "cutoff_top_n": 12,
        "cutoff_prob": 0.99,
        "top_paths": 2,
        "lexicon": str(lexicon),
        "vocabulary_size": 3,
    }
    plain = make_decoder(parse("--decoder", "beam"), L)
    assert (plain.beam_width, plain.cutoff_top_n, plain.cutoff_prob, plain.top_paths) == (
        dec.DEFAULT_BEAM_WIDTH,
        dec.DEFAULT_CUTOFF_TOP_N,
        dec.DEFAULT_CUTOFF_PROB,
        1,
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lm-path", "x.arpa"], "--lm-path only applies to beam search: add --decoder beam"),
        (["--beam-width", "4", "--top-paths", "2"], "--beam-width, --top-paths only apply"),
        (["--decoder", "beam", "--lm-path", "missing.arpa"], "missing.arpa: file not found"),
        (["--decoder", "beam", "--lexicon", "nope.txt"], "--lexicon nope.txt: file not found"),
        (["--decoder", "beam", "--alpha", "1"], "--alpha weighs the language model: add --lm-path"),
        (["--decoder", "beam", "--beta", "1"], "--beta is a bonus per word"),
        (["--decoder", "beam", "--beam-width", "0"], "--beam-width must be an integer >= 1"),
        (["--decoder", "beam", "--beam-width", "4", "--top-paths", "5"], "--top-paths must be in [1, --beam-width=4]"),
        (["--decoder", "beam", "--cutoff-prob", "0"], "--cutoff-prob must be a probability"),
        (["--decoder", "beam", "--cutoff-top-n", "0"], "--cutoff-top-n must be an integer >= 1"),
        (["--decoder", "beam", "--lm-workers", "0"], "--lm-workers must be an integer >= 1"),
    ],
)
def test_make_decoder_rejects_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(DecoderError) as e:
        make_decoder(parse(*argv), L)
    assert message in str(e.value)


@requires_flashlight
def test_bad_lm_files_give_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(DecoderError, match=r"notes\.txt: not an ARPA file"):
        make_decoder(parse("--decoder", "beam", "--lm-path", str(text)), L)
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0" + b"\0" * 64)
    with pytest.raises(DecoderError, match=r"lm\.bin: a KenLM binary LM needs --lexicon"):
        make_decoder(parse("--decoder", "beam", "--lm-path", str(binary)), L)
    broken = tmp_path / "broken.arpa"
    broken.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\tA\n\\end\\\n")
    with pytest.raises(DecoderError, match=r"broken\.arpa: KenLM cannot load it"):
        make_decoder(parse("--decoder", "beam", "--lm-path", str(broken)), L)
    lexicon = tmp_path / "digits.txt"
    lexicon.write_text("123\n")
    with pytest.raises(DecoderError, match=r"digits\.txt: none of its 1 words can be spelled"):
        make_decoder(parse("--decoder", "beam", "--lexicon", str(lexicon)), L)


# ---------------------------------------------------------------------------- saved outputs


def test_save_and_load_outputs_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "val.pt"
    lps = [frames("_A_B_"), frames("_C__")]
    save_outputs(path, lps, ["AB", "C"], L, 0.02)
    raw = torch.load(path, weights_only=True)
    assert raw["log_probs"][0].dtype == torch.float16
    data = load_outputs(path)
    assert data["references"] == ["AB", "C"] and data["labels"] == L
    assert data["frame_shift"] == 0.02
    assert torch.allclose(data["log_probs"][1].float(), lps[1], atol=1e-2)
    hyps = GreedyDecoder(L).decode(data["log_probs"][0][None])
    assert hyps[0][0].text == "AB"


def test_load_outputs_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt: saved outputs not found"):
        load_outputs(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt: not a saved-outputs file"):
        load_outputs(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="other.pt: not a saved-outputs file"):
        load_outputs(other)
    with pytest.raises(ValueError, match="expected"):
        save_outputs(tmp_path / "x.pt", [torch.zeros(3, 5)], ["A"], L, 0.02)


@requires_flashlight
def test_bench_decode_runs_and_ends_with_json(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_decode", Path(__file__).resolve().parents[1] / "bench" / "bench_decode.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--runs", "1", "--utterances", "2", "--seconds", "1", "--beam-width", "8"]) == 0
    finally:
        torch.set_num_threads(threads)  # the bench pins one thread
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["decode_greedy_x_realtime"] > 0 and report["decode_beam_x_realtime"] > 0
    assert report["beam_width"] == 8
