"""Word alignments (align.py, data/words.py) and the word-crop augmentation."""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tiny_train_args
from test_checkpoint import save, tiny_model

import align
import train
from checkpoint import load_checkpoint
from data.audio import load_audio
from data.augment import AugmentConfig, Augmentor
from data.data_loader import SpectrogramDataset
from data.manifest import ManifestError, read_manifest, write_manifest
from data.text import LABELS, text_to_ids
from data.words import (
    AlignmentFileError,
    WordAlignment,
    crop_words,
    pause_depths_db,
    read_alignments,
    word_cut_points,
    write_alignments,
)

SR = 16000
REPO = Path(__file__).resolve().parents[1]


def tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t) + 0.001 * rng.standard_normal(t.size)).astype(np.float32)


def quiet(seconds: float, seed: int) -> np.ndarray:
    return (0.001 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def words_audio(n_words: int, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``n_words`` tones of 0.3 s with 0.2 s of near-silence around each, and their true spans."""
    parts, spans, t = [quiet(0.2, seed)], [], 0.2
    for i in range(n_words):
        parts += [tone(0.3, 300 + 100 * i, seed + i), quiet(0.2, seed + 100 + i)]
        spans.append((t, t + 0.3))
        t += 0.5
    return np.concatenate(parts), spans


@pytest.fixture
def worded(tmp_path: Path) -> Path:
    """Four utterances of 1-4 'words' (tones between pauses), a manifest and an alignment file."""
    texts = ["GO", "GO UP", "ONE TWO THREE", "A B C D"]
    rows, entries = [], []
    for i, text in enumerate(texts):
        audio, spans = words_audio(len(text.split()), seed=i)
        wav = tmp_path / "wav" / f"u{i}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(wav), audio, SR, subtype="PCM_16")
        txt = tmp_path / "txt" / f"u{i}.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text(text + "\n")
        rows.append((wav, txt))
        entries.append((wav, WordAlignment(tuple(text.split()), tuple(spans))))
    write_manifest(tmp_path / "manifest.csv", rows)
    write_alignments(tmp_path / "words.json", entries, {"model": "hand-made"})
    return tmp_path


# ---------------------------------------------------------------------------- forced alignment


def one_hot_log_probs(path: list[int], n_labels: int = 5) -> np.ndarray:
    lp = np.full((len(path), n_labels), np.log(0.01))
    lp[np.arange(len(path)), path] = np.log(0.96)
    return lp


def test_ctc_align_follows_the_only_good_path() -> None:
    frames = align.ctc_align(one_hot_log_probs([0, 0, 1, 1, 0, 2, 0, 0]), [1, 2])
    assert frames.tolist() == [[2, 3], [5, 5]]
    # a repeated label needs a blank between its two emissions
    assert align.ctc_align(one_hot_log_probs([3, 0, 3]), [3, 3]).tolist() == [[0, 0], [2, 2]]
    assert align.ctc_align(np.zeros((4, 5)), []).shape == (0, 2)


def test_ctc_align_refuses_transcripts_longer_than_the_output() -> None:
    with pytest.raises(align.AlignmentError, match="need at least 3 frames, the output has 2"):
        align.ctc_align(np.zeros((2, 5)), [3, 3])
    with pytest.raises(align.AlignmentError, match="need at least 3 frames"):
        align.ctc_align(np.zeros((2, 5)), [1, 2, 3])


def collapse(path: tuple[int, ...]) -> tuple[list[int], list[list[int]]]:
    """(labels, frames of each label) of a CTC path."""
    labels, frames, prev = [], [], 0
    for t, c in enumerate(path):
        if c != 0 and c != prev:
            labels.append(c)
            frames.append([t, t])
        elif c != 0:
            frames[-1][1] = t
        prev = c
    return labels, frames


@pytest.mark.parametrize("target", [[1, 2], [1, 1], [2, 1, 2]])
def test_ctc_align_is_the_best_path_by_brute_force(target: list[int]) -> None:
    rng = np.random.default_rng(sum(target))
    lp = np.log(rng.dirichlet(np.ones(3), size=6))
    best, best_frames = -np.inf, None
    for path in itertools.product(range(3), repeat=6):
        labels, frames = collapse(path)
        score = lp[np.arange(6), path].sum()
        if labels == target and score > best:
            best, best_frames = score, frames
    assert align.ctc_align(lp, target).tolist() == best_frames


def test_word_spans_from_label_frames() -> None:
    ids = text_to_ids("GO UP", LABELS)
    frames = np.array([[2, 2], [3, 4], [6, 6], [8, 8], [10, 11]])
    assert align.word_spans(ids, frames, LABELS.index(" "), 0.02) == pytest.approx([(0.04, 0.1), (0.16, 0.24)])


# ---------------------------------------------------------------------------- cutting


def test_cut_points_fall_in_the_pauses() -> None:
    audio, spans = words_audio(3)
    # spans narrower than the words, as CTC emissions are
    narrow = [(s + 0.1, s + 0.15) for s, _ in spans]
    cuts = word_cut_points(audio, SR, narrow)
    assert cuts[0] == 0 and cuts[-1] == audio.size and len(cuts) == 4
    for cut, ((_, end), (start, _)) in zip(cuts[1:-1], zip(spans[:-1], spans[1:])):
        assert end * SR <= cut <= start * SR  # inside the 0.2 s pause
    # adjacent spans: the middle of the gap; overlapping: never backwards
    assert word_cut_points(audio, SR, [(0.1, 0.3), (0.3, 0.5)])[1] == round(0.3 * SR)
    assert word_cut_points(audio, SR, [(0.1, 0.4), (0.2, 0.5)]) == [0, round(0.3 * SR), audio.size]
    assert word_cut_points(audio, SR, [(0.1, 0.3)]) == [0, audio.size]


def test_crop_words_is_a_run_of_words_never_the_whole() -> None:
    audio, spans = words_audio(4)
    a = WordAlignment(("A", "B", "C", "D"), tuple(spans))
    seen = set()
    for seed in range(40):
        clip, text = crop_words(audio, SR, a, np.random.default_rng(seed), max_words=2)
        words = text.split()
        assert 1 <= len(words) <= 2 and " ".join(words) in "A B C D" and clip.size < audio.size
        seen.add(text)
        again, text2 = crop_words(audio, SR, a, np.random.default_rng(seed), max_words=2)
        assert text2 == text and np.array_equal(again, clip)
    assert seen == {"A", "B", "C", "D", "A B", "B C", "C D"}
    single = WordAlignment(("A",), ((0.2, 0.5),))
    assert crop_words(audio, SR, single, np.random.default_rng(0), 2) == (audio, "A")
    two = WordAlignment(("A", "B"), tuple(spans[:2]))
    assert all(len(crop_words(audio, SR, two, np.random.default_rng(s), 5)[1].split()) == 1 for s in range(10))


def test_crop_with_min_pause_cuts_only_where_the_speaker_paused() -> None:
    # A B C D with pauses around each word, except that C runs on into D without one.
    audio, spans = words_audio(4)
    join = slice(round(spans[2][1] * SR), round(spans[3][0] * SR))
    audio = audio.copy()
    audio[join] = tone(1.0, 650, 9)[: join.stop - join.start]
    a = WordAlignment(("A", "B", "C", "D"), tuple(spans))
    cuts = word_cut_points(audio, SR, spans)
    depths = pause_depths_db(audio, SR, cuts)
    assert depths[0] > 40 and depths[1] > 40 and depths[2] < 5  # 0.4 tones over 0.001 noise; C-D is a tone
    seen = set()
    for seed in range(60):
        clip, text = crop_words(audio, SR, a, np.random.default_rng(seed), max_words=2, min_pause_db=30)
        seen.add(text)
        assert np.array_equal(clip, crop_words(audio, SR, a, np.random.default_rng(seed), 2, min_pause_db=30)[0])
    # Runs that start or end at the C|D cut are never drawn: "C" and "D" alone, "B C".
    assert seen == {"A", "B", "A B", "C D"}
    # No deep pause at all: the utterance stays whole; min_pause_db=0 draws as before.
    assert crop_words(audio, SR, a, np.random.default_rng(0), 2, min_pause_db=100) == (audio, "A B C D")
    for seed in range(10):
        old = crop_words(audio, SR, a, np.random.default_rng(seed), 2)
        assert old[1] == crop_words(audio, SR, a, np.random.default_rng(seed), 2, min_pause_db=0)[1]
    with pytest.raises(ValueError, match="word_crop_min_pause_db"):
        AugmentConfig(word_crop_min_pause_db=-1)


def test_crop_can_skip_runs_of_spelled_letters() -> None:
    audio, spans = words_audio(4)
    a = WordAlignment(("A", "B", "ONE", "C"), tuple(spans))
    seen = set()
    for seed in range(60):
        clip, text = crop_words(audio, SR, a, np.random.default_rng(seed), max_words=2, skip_letter_runs=True)
        seen.add(text)
        assert np.array_equal(clip, crop_words(audio, SR, a, np.random.default_rng(seed), 2, skip_letter_runs=True)[0])
    # Every run holds a word of more than one character; "A", "B", "A B" and "C" are never cut out.
    assert seen == {"ONE", "B ONE", "ONE C"}
    letters = WordAlignment(("A", "B", "C", "D"), tuple(spans))
    assert crop_words(audio, SR, letters, np.random.default_rng(0), 2, skip_letter_runs=True) == (audio, "A B C D")
    # With a pause threshold too, both rules hold.
    both = {crop_words(audio, SR, a, np.random.default_rng(s), 2, 30, True)[1] for s in range(60)}
    assert both == seen


# ---------------------------------------------------------------------------- the file


def test_alignment_file_round_trip_with_relative_paths(worded: Path, tmp_path: Path) -> None:
    doc = json.loads((worded / "words.json").read_text())
    assert doc["format"] == "deepspeech-ctc word alignments" and doc["model"] == "hand-made"
    assert doc["utterances"][1]["wav"] == "wav/u1.wav"
    a = read_alignments(worded / "words.json")
    assert a[(worded / "wav" / "u2.wav").resolve()].words == ("ONE", "TWO", "THREE")
    copy = tmp_path.parent / (tmp_path.name + "_copy")  # paths are relative: a copied folder still resolves
    shutil.copytree(worded, copy)
    b = read_alignments(copy / "words.json")
    assert (copy / "wav" / "u3.wav").resolve() in b and len(b) == 4


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "word alignment file not found"),
        ("{", "invalid JSON"),
        ('{"format": "other"}', "not a word alignment file"),
        ('{"format": "deepspeech-ctc word alignments", "version": 9}', "version 9"),
        ('{"format": "deepspeech-ctc word alignments", "version": 1, "utterances": []}', "holds no utterances"),
        ('{"format": "deepspeech-ctc word alignments", "version": 1, "utterances": [{"wav": "a.wav"}]}', "malformed"),
        (
            '{"format": "deepspeech-ctc word alignments", "version": 1, '
            '"utterances": [{"wav": "a.wav", "words": ["A", "B"], "spans": [[0, 1]]}]}',
            "2 words and 1 spans",
        ),
    ],
)
def test_bad_alignment_files_are_named_with_the_fix(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "words.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AlignmentFileError, match=message) as e:
        read_alignments(path)
    assert str(path) in str(e.value) and "python align.py" in str(e.value)


# ---------------------------------------------------------------------------- augmentation


def test_augmentor_crop_is_seeded_and_checks_the_transcript(worded: Path) -> None:
    cfg = AugmentConfig(
        speed_volume_perturb=False, spec_augment=False, word_crop_prob=1.0, word_alignments=str(worded / "words.json")
    )
    aug = Augmentor(cfg, SR)
    wav = worded / "wav" / "u3.wav"
    audio = load_audio(wav, SR)
    clip, text = aug.crop(audio, "A B C D", wav, aug.rngs_for(1, 2, 3))
    again, text2 = aug.crop(audio, "A B C D", wav, aug.rngs_for(1, 2, 3))
    assert text in {"A", "B", "C", "D", "A B", "B C", "C D"} and text2 == text and np.array_equal(clip, again)
    assert aug.crop(audio, "A B C E", wav, aug.rngs_for(1, 2, 3)) == (audio, None)  # stale alignment
    assert aug.crop(audio, "GO", worded / "wav" / "u0.wav", aug.rngs_for(1, 2, 3))[1] is None  # one word
    assert aug.crop(audio, "X Y", worded / "elsewhere.wav", aug.rngs_for(1, 2, 3))[1] is None  # not aligned
    off = Augmentor(AugmentConfig(word_crop_prob=0.0), SR)
    assert off.crop(audio, "A B C D", wav, off.rngs_for(1, 2, 3)) == (audio, None) and off.alignments == {}
    # The flag reaches the crop: no pause is 120 dB deep, so the utterance stays whole.
    flags = ["--word-crop-prob", "1", "--word-crop-min-pause-db", "120", "--word-alignments", str(worded / "words.json")]
    args = train.build_parser().parse_args(["--train-manifest", str(worded / "manifest.csv"), *flags])
    strict = Augmentor(AugmentConfig.from_args(args), SR)
    assert strict.cfg.word_crop_min_pause_db == 120
    assert strict.crop(audio, "A B C D", wav, strict.rngs_for(1, 2, 3)) == (audio, "A B C D")
    # u3 spells four letters: with --word-crop-skip-letters nothing of it is cut out.
    args = train.build_parser().parse_args(
        ["--train-manifest", str(worded / "manifest.csv"), *flags[:2], *flags[4:], "--word-crop-skip-letters"]
    )
    spelled = Augmentor(AugmentConfig.from_args(args), SR)
    assert spelled.cfg.word_crop_skip_letters and not strict.cfg.word_crop_skip_letters
    assert spelled.crop(audio, "A B C D", wav, spelled.rngs_for(1, 2, 3)) == (audio, "A B C D")


def test_dataset_trains_on_the_cropped_words(worded: Path) -> None:
    cfg = AugmentConfig(word_crop_prob=1.0, word_alignments=str(worded / "words.json"), spec_augment=False)
    ds = SpectrogramDataset(worded / "manifest.csv", augment=cfg)
    texts = {}
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            spect, ids, _, text = ds[i]
            assert ids == text_to_ids(text, LABELS) and set(text.split()) <= set(ds.texts[i].split())
            if len(ds.texts[i].split()) > 1:
                assert len(text.split()) <= 2 and text != ds.texts[i] and spect.shape[1] < ds.n_frames[i] * 1.2
            texts.setdefault(i, set()).add(text)
    assert texts[0] == {"GO"} and len(texts[3]) > 1
    plain = SpectrogramDataset(worded / "manifest.csv")
    assert [plain[i][3] for i in range(len(plain))] == ["GO", "GO UP", "ONE TWO THREE", "A B C D"]


def test_dataset_refuses_alignments_of_another_manifest(worded: Path) -> None:
    other = worded / "other.json"
    write_alignments(other, [(worded / "nowhere.wav", WordAlignment(("A",), ((0.0, 0.1),)))], {})
    cfg = AugmentConfig(word_crop_prob=0.5, word_alignments=str(other))
    with pytest.raises(ManifestError, match="covers none of the 4 utterances"):
        SpectrogramDataset(worded / "manifest.csv", augment=cfg)


def test_config_and_flags(worded: Path, capsys) -> None:
    with pytest.raises(ValueError, match="word crop needs word_alignments"):
        AugmentConfig(word_crop_prob=0.5)
    with pytest.raises(ValueError, match="word_crop_prob must be in"):
        AugmentConfig(word_crop_prob=1.5, word_alignments="x.json")
    assert AugmentConfig(speed_volume_perturb=False, spec_augment=False, word_crop_prob=0.1, word_alignments="x").enabled
    parser = AugmentConfig.add_args(argparse.ArgumentParser())
    words = str(worded / "words.json")
    cfg = AugmentConfig.from_args(parser.parse_args(["--word-crop-prob", "0.3", "--word-alignments", words]))
    assert (cfg.word_crop_prob, cfg.word_crop_max_words, cfg.word_alignments) == (0.3, 2, words)
    args = ["--word-crop-prob", "0.3", "--word-alignments", words, "--word-crop-max-words", "3"]
    assert AugmentConfig.from_args(parser.parse_args(args)).word_crop_max_words == 3
    for argv, message in [
        (["--word-crop-prob", "0.3"], "--word-crop-prob needs --word-alignments FILE"),
        (["--word-crop-prob", "0.3", "--word-alignments", str(worded / "no.json")], "no.json: file not found"),
        (["--word-alignments", words], "--word-alignments does nothing: the word crop is off"),
        (["--word-crop-max-words", "3"], "--word-crop-max-words does nothing: the word crop is off"),
        (["--word-crop-prob", "0.3", "--word-alignments", words, "--word-crop-max-words", "0"], "word_crop_max_words"),
    ]:
        with pytest.raises(ValueError, match=message):
            AugmentConfig.from_args(parser.parse_args(argv))


def test_train_with_word_crop_records_it(worded: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    common = tiny_train_args(worded / "manifest.csv", out, batch_size=2)
    words = str(worded / "words.json")
    assert train.main([*common, "--word-crop-prob", "0.5", "--word-alignments", words]) == 0
    args = load_checkpoint(out / "deepspeech_last.pth").training.args
    assert args["word_crop_prob"] == 0.5 and args["word_alignments"] == words
    with pytest.raises(SystemExit) as exc:
        train.main([*common, "--word-crop-prob", "0.5", "--word-alignments", str(worded / "none.json")])
    assert exc.value.code == 2 and "none.json: file not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------- align.py


def test_align_cli_writes_alignments_and_word_clips(worded: Path, tmp_path: Path, capsys) -> None:
    model = save(tmp_path / "tiny.pth", tiny_model())
    out = tmp_path / "out"
    argv = ["--model-path", str(model), "--manifest", str(worded / "manifest.csv"), "--threads", "1"]
    assert align.main([*argv, "--output", str(out / "words.json"), "--clips-dir", str(out / "clips")]) == 0
    aligned = read_alignments(out / "words.json")
    assert len(aligned) == 4
    for wav, a in aligned.items():
        duration = sf.info(str(wav)).duration
        assert " ".join(a.words) in {"GO", "GO UP", "ONE TWO THREE", "A B C D"}
        assert all(0 <= s <= e <= duration + 0.1 for s, e in a.spans)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(a.spans[:-1], a.spans[1:]))
    rows = read_manifest(out / "clips" / "manifest.csv")
    assert len(rows) == 10  # one clip per word
    assert sorted(r.txt.read_text().strip() for r in rows) == sorted("GO GO UP ONE TWO THREE A B C D".split())
    total = sum(sf.info(str(r.wav)).frames for r in rows)
    assert total == sum(sf.info(str(w)).frames for w in aligned)  # the clips partition the utterances
    assert not (out / "clips.tmp").exists()


def test_align_cli_errors(worded: Path, tmp_path: Path, capsys) -> None:
    model = save(tmp_path / "tiny.pth", tiny_model())
    assert align.main(["--model-path", str(model), "--manifest", str(tmp_path / "no.csv"), "--output", "x.json"]) == 2
    assert "no.csv" in capsys.readouterr().err
    manifest = str(worded / "manifest.csv")
    assert align.main(["--model-path", str(tmp_path / "no.pth"), "--manifest", manifest, "--output", "x"]) == 2
    assert "no.pth" in capsys.readouterr().err
    # a transcript far longer than the audio is skipped and counted; none left is an error
    (worded / "txt" / "u0.txt").write_text("A" * 400 + "\n")
    rows = read_manifest(worded / "manifest.csv")[:1]
    write_manifest(worded / "one.csv", [(r.wav, r.txt) for r in rows])
    one = str(worded / "one.csv")
    assert align.main(["--model-path", str(model), "--manifest", one, "--output", str(tmp_path / "o.json")]) == 1
    assert "no utterance could be aligned (1 skipped)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        align.main(["--manifest", "m.csv", "--output", "o.json", "--batch-size", "0"])


def test_recipe_word_crop_uses_the_default_alignments_only_where_they_apply(worded: Path, monkeypatch, caplog) -> None:
    parser = train.build_parser()
    assert parser.get_default("word_crop_prob") == train.RECIPE_WORD_CROP_PROB > 0
    assert read_alignments(REPO / train.DEFAULT_WORD_ALIGNMENTS)  # shipped, and readable
    monkeypatch.setattr(train, "DEFAULT_WORD_ALIGNMENTS", str(worded / "words.json"))
    args = parser.parse_args(["--train-manifest", str(worded / "manifest.csv")])
    train.resolve_word_alignments(args)
    assert (args.word_crop_prob, args.word_alignments) == (train.RECIPE_WORD_CROP_PROB, str(worded / "words.json"))
    assert args.word_crop_skip_letters is train.RECIPE_WORD_CROP_SKIP_LETTERS is True
    no_skip = parser.parse_args(["--train-manifest", str(worded / "manifest.csv"), "--no-word-crop-skip-letters"])
    train.resolve_word_alignments(no_skip)
    assert no_skip.word_crop_skip_letters is False and AugmentConfig.from_args(no_skip).word_crop_skip_letters is False
    # another corpus: the default alignments cover none of it, so the crop is off, with the way to switch it on
    other = worded / "other.csv"
    write_manifest(other, [(worded / "wav" / "u1.wav", worded / "txt" / "u1.txt")])
    (worded / "words.json").write_text((worded / "words.json").read_text().replace("wav/u1.wav", "wav/elsewhere.wav"))
    args = parser.parse_args(["--train-manifest", str(other)])
    train.resolve_word_alignments(args)
    assert (args.word_crop_prob, args.word_alignments) == (0.0, None)
    assert "word crop off" in caplog.text and f"python align.py --manifest {other}" in caplog.text
    # given explicitly, nothing is changed (and a wrong file is an error later, with its name)
    args = parser.parse_args(["--train-manifest", str(other), "--word-alignments", "mine.json"])
    train.resolve_word_alignments(args)
    assert (args.word_crop_prob, args.word_alignments) == (train.RECIPE_WORD_CROP_PROB, "mine.json")
    args = parser.parse_args(["--train-manifest", str(other), "--word-crop-prob", "0"])
    train.resolve_word_alignments(args)
    assert (args.word_crop_prob, args.word_alignments, args.word_crop_skip_letters) == (0.0, None, None)
    AugmentConfig.from_args(args)  # the recipe's skip-letters default is no refinement of a crop that is off
    v4 = parser.parse_args(["--no-word-crop-skip-letters", "--pad-prob", "0", "--word-crop-prob", "0"])
    assert AugmentConfig.from_args(v4).word_crop_skip_letters is False  # recipe v4 from recipe v7's defaults
