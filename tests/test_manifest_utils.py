"""data/utils.py: manifest create / merge, library and CLI, on generated audio."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import write_tone

from data import utils
from data.audio import probe_audio
from data.manifest import read_manifest
from data.text import read_transcript


def make_corpus(root: Path, items: dict[str, float], with_txt: bool = True) -> dict[str, Path]:
    """``root/wav/<name>.wav`` of the given seconds and ``root/txt/<name>.txt``; returns name -> wav."""
    wavs = {}
    for i, (name, seconds) in enumerate(items.items()):
        wavs[name] = write_tone(root / "wav" / f"{name}.wav", seconds, freq=200 + 50 * i, seed=i)
        if with_txt:
            txt = root / "txt" / f"{name}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(name.upper() + "\n")
    return wavs


def lines(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def cli(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    rc = utils.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_transcript_path_for() -> None:
    assert utils.transcript_path_for("/d/train/wav/x.wav") == Path("/d/train/txt/x.txt")
    assert utils.transcript_path_for("/d/wav/sub/x.wav") == Path("/d/txt/sub/x.txt")
    assert utils.transcript_path_for("/wav/d/wav/x.y.wav") == Path("/wav/d/txt/x.y.txt")  # the last wav folder
    assert utils.transcript_path_for("rel/wav/x.wav") == Path("rel/txt/x.txt")
    assert utils.transcript_path_for("/d/wavs/x.wav") == Path("/d/wavs/x.txt")  # no wav/ folder: beside it


def test_create_sorted_relative_and_skips_missing_transcripts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "corpus"
    make_corpus(data, {"c": 0.9, "a": 0.5, "e": 0.3, "b": 0.5, "d": 0.7})
    write_tone(data / "wav" / "orphan.wav", 0.4)  # no transcript
    out_path = tmp_path / "manifests" / "m.csv"
    rc, out, err = cli(capsys, "create", "--data-dir", data, "--output-path", out_path)
    assert rc == 0
    assert "1 wav files without a transcript" in err and "orphan.wav" in err
    assert "5 utterances" in out and "1 without transcript" in out
    rows = lines(out_path)
    assert [Path(w).stem for w, *_ in rows] == ["e", "a", "b", "d", "c"]  # by duration, ties by path
    assert rows[0] == ["../corpus/wav/e.wav", "../corpus/txt/e.txt", "0.300"]  # duration column
    for wav, txt, _ in read_manifest(out_path):
        assert read_transcript(txt) == wav.stem.upper()


def test_create_library_report(tmp_path: Path) -> None:
    make_corpus(tmp_path / "d", {"x": 0.2, "y": 0.6})
    write_tone(tmp_path / "d" / "wav" / "z.wav", 0.3)
    report = utils.create_manifest(tmp_path / "d", tmp_path / "m.csv")
    assert [u.wav.name for u in report.utterances] == ["x.wav", "y.wav"]
    assert report.missing_transcripts == [tmp_path / "d" / "wav" / "z.wav"]
    assert report.seconds == pytest.approx(0.8)


def test_create_flat_folder_and_nested_speakers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    flat = tmp_path / "flat"
    write_tone(flat / "a.wav", 0.3)
    (flat / "a.txt").write_text("A\n")
    nested = tmp_path / "nested"
    write_tone(nested / "wav" / "spk1" / "b.wav", 0.2)
    (nested / "txt" / "spk1").mkdir(parents=True)
    (nested / "txt" / "spk1" / "b.txt").write_text("B\n")
    for folder, name in ((flat, "a"), (nested, "b")):
        rc, _, err = cli(capsys, "create", "--data-dir", folder, "--output-path", folder / "m.csv")
        assert rc == 0, err
        [(wav, txt, _)] = read_manifest(folder / "m.csv")
        assert wav.stem == txt.stem == name and txt.is_file()


def test_create_absolute(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_corpus(tmp_path / "d", {"a": 0.2, "b": 0.3})
    rc, _, _ = cli(capsys, "create", "--data-dir", tmp_path / "d", "--output-path", tmp_path / "m.csv", "--absolute")
    assert rc == 0
    rows = lines(tmp_path / "m.csv")
    assert rows[0] == [str((tmp_path / "d/wav/a.wav").resolve()), str((tmp_path / "d/txt/a.txt").resolve()), "0.200"]
    assert all(os.path.isabs(p) for row in rows for p in row[:2])


def test_create_duration_bounds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_corpus(tmp_path / "d", {"a": 0.2, "b": 0.4, "c": 0.6, "d": 0.8})
    rc, out, _ = cli(
        capsys,
        "create",
        "--data-dir",
        tmp_path / "d",
        "--output-path",
        tmp_path / "m.csv",
        "--min-duration",
        "0.3",
        "--max-duration",
        "0.6",
    )
    assert rc == 0 and "2 outside the duration range" in out
    assert [w.stem for w, *_ in read_manifest(tmp_path / "m.csv")] == ["b", "c"]
    rc, _, err = cli(capsys, "create", "--data-dir", tmp_path / "d", "--output-path", tmp_path / "n.csv", "--min-duration", "5")
    assert rc == 2 and "outside the duration range" in err and not (tmp_path / "n.csv").exists()


@pytest.mark.parametrize("case", ["missing_dir", "no_wavs", "bad_wav", "min_gt_max", "negative"])
def test_create_errors(tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    data = tmp_path / "d"
    extra: list[str] = []
    if case == "missing_dir":
        name = str(data)
    elif case == "no_wavs":
        data.mkdir()
        (data / "readme.txt").write_text("x")
        name = "no *.wav file"
    elif case == "bad_wav":
        make_corpus(data, {"good": 0.2})
        (data / "wav" / "broken.wav").write_bytes(b"RIFF....not audio")
        (data / "txt" / "broken.txt").write_text("X")
        name = "broken.wav"
    elif case == "min_gt_max":
        make_corpus(data, {"a": 0.2})
        extra, name = ["--min-duration", "2", "--max-duration", "1"], "--min-duration"
    else:
        make_corpus(data, {"a": 0.2})
        extra, name = ["--max-duration", "-1"], "--max-duration"
    rc, _, err = cli(capsys, "create", "--data-dir", data, "--output-path", tmp_path / "m.csv", *extra)
    assert rc == 2 and err.startswith("error: ") and name in err and "Traceback" not in err
    assert not (tmp_path / "m.csv").exists()


def test_merge_mixed_relative_and_v2_absolute(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = make_corpus(tmp_path / "a", {"a1": 0.6, "a2": 0.2})
    b = make_corpus(tmp_path / "b", {"b1": 0.4, "b2": 0.8})
    utils.create_manifest(tmp_path / "a", tmp_path / "a" / "a.csv")
    # deepspeech.pytorch v2 wrote absolute paths, unsorted
    (tmp_path / "b" / "b.csv").write_text(
        "".join(f"{b[n].resolve()},{(tmp_path / 'b/txt' / (n + '.txt')).resolve()}\n" for n in ("b2", "b1"))
    )
    out_path = tmp_path / "out" / "deeper" / "merged.csv"
    rc, out, err = cli(
        capsys, "merge", "--manifests", tmp_path / "a" / "a.csv", tmp_path / "b" / "b.csv", "--output-path", out_path
    )
    assert rc == 0, err
    assert "4 utterances" in out
    rows = lines(out_path)
    assert [Path(w).stem for w, *_ in rows] == ["a2", "b1", "a1", "b2"]
    assert rows[0] == ["../../a/wav/a2.wav", "../../a/txt/a2.txt", "0.200"]  # rewritten relative to the new manifest
    merged = read_manifest(out_path)
    assert {w.resolve() for w, *_ in merged} == {p.resolve() for p in [*a.values(), *b.values()]}
    durations = [probe_audio(w).duration for w, *_ in merged]
    assert durations == sorted(durations)

    rc, _, _ = cli(
        capsys,
        "merge",
        "--manifests",
        tmp_path / "a" / "a.csv",
        tmp_path / "b" / "b.csv",
        "--output-path",
        tmp_path / "abs.csv",
        "--absolute",
        "--min-duration",
        "0.3",
        "--max-duration",
        "0.7",
    )
    assert rc == 0
    rows = lines(tmp_path / "abs.csv")
    assert [Path(w).stem for w, *_ in rows] == ["b1", "a1"]
    assert all(os.path.isabs(p) for row in rows for p in row[:2])


def test_merge_drops_duplicates(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    copy = tmp_path / "elsewhere" / "same.csv"
    utils.merge_manifests([tiny_dataset], copy, relative=False)  # same rows, absolute, other folder
    rc, out, _ = cli(capsys, "merge", "--manifests", tiny_dataset, copy, "--output-path", tmp_path / "m.csv")
    assert rc == 0 and "6 utterances" in out and "6 duplicates" in out
    assert [r[:2] for r in read_manifest(tmp_path / "m.csv")] == [r[:2] for r in read_manifest(tiny_dataset)]


def test_merge_max_words_keeps_short_transcripts(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_path = tmp_path / "one_word.csv"
    rc, out, _ = cli(capsys, "merge", "--manifests", tiny_dataset, "--output-path", out_path, "--max-words", "1")
    assert rc == 0 and "5 utterances" in out and "1 with more words than --max-words" in out
    assert [Path(r[0]).stem for r in read_manifest(out_path)] == ["u0", "u1", "u2", "u3", "u4"]  # not "GO UP"
    rc, _, err = cli(capsys, "merge", "--manifests", tiny_dataset, "--output-path", out_path, "--max-words", "0")
    assert rc == 2 and "--max-words must be at least 1" in err and "Traceback" not in err
    two_words = tmp_path / "two_words.csv"
    utils.merge_manifests([tiny_dataset], two_words, relative=False, min_duration=0.85)  # only "GO UP"
    rc, _, err = cli(capsys, "merge", "--manifests", two_words, "--output-path", out_path, "--max-words", "1")
    assert rc == 2 and "no utterance with at most 1 words" in err and "Traceback" not in err


def test_merge_no_spelled_letters_keeps_spoken_words(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_path = tmp_path / "spoken.csv"
    rc, out, _ = cli(capsys, "merge", "--manifests", tiny_dataset, "--output-path", out_path, "--no-spelled-letters")
    assert rc == 0 and "5 utterances" in out and "1 only spelled letters" in out
    assert [Path(r[0]).stem for r in read_manifest(out_path)] == ["u1", "u2", "u3", "u4", "u5"]  # not "A"
    letters = tmp_path / "letters.csv"
    utils.merge_manifests([tiny_dataset], letters, relative=False, max_duration=0.45)  # only "A"
    rc, _, err = cli(capsys, "merge", "--manifests", letters, "--output-path", out_path, "--no-spelled-letters")
    assert rc == 2 and "no utterance that is not spelled letters" in err and "Traceback" not in err


@pytest.mark.parametrize("case", ["missing_manifest", "missing_wav", "bad_row", "all_pruned"])
def test_merge_errors(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    bad = tmp_path / "bad.csv"
    extra: list[str] = []
    if case == "missing_manifest":
        words = [str(bad), "not found"]
    elif case == "missing_wav":
        bad.write_text("wav/gone.wav,txt/gone.txt\n")
        words = [str(bad), "gone.wav", "does not exist"]
    elif case == "bad_row":
        bad.write_text("only_one_field\n")
        words = [f"{bad}:1", "wav_path,transcript_path"]
    else:
        bad = tiny_dataset
        extra, words = ["--max-duration", "0.1"], ["outside the duration range"]
    rc, _, err = cli(capsys, "merge", "--manifests", bad, "--output-path", tmp_path / "out.csv", *extra)
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err
    assert all(w in err for w in words), err
    assert not (tmp_path / "out.csv").exists()


def test_cli_runs_as_a_script(tmp_path: Path) -> None:
    import subprocess
    import sys

    make_corpus(tmp_path / "d", {"a": 0.2})
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            str(repo / "data" / "utils.py"),
            "create",
            "--data-dir",
            str(tmp_path / "d"),
            "--output-path",
            str(tmp_path / "m.csv"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert lines(tmp_path / "m.csv") == [["d/wav/a.wav", "d/txt/a.txt", "0.200"]]
