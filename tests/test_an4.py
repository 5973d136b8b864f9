"""data/an4.py on a synthetic archive in AN4's exact layout, a local HTTP server for the
download path, and (with AN4_ARCHIVE set) the real corpus."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import tarfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data import an4
from data.audio import probe_audio
from data.manifest import read_manifest
from data.text import LABELS, read_transcript, text_to_ids

# speaker -> [(utterance id, transcription line body, seconds)], as in CMU's files:
# train lines are wrapped in <s> ... </s>, test lines are not.
TRAIN = {
    "fash": [
        ("an251-fash-b", "<s> YES </s>", 0.5),
        ("an253-fash-b", "<s> GO </s>", 0.3),
        ("cen1-fash-b", "<s> F A S H </s>", 1.1),
    ],
    "fbbh": [("an76-fbbh-b", "<s> NO </s>", 0.4), ("cen2-fbbh-b", "<s> TWENTY ONE </s>", 0.9)],
    "mgah": [
        ("an1-mgah-b", "<s> ENTER </s>", 0.6),
        ("an2-mgah-b", "<s> ERASE C Q </s>", 0.8),
        ("cen3-mgah-b", "<s> P I T T </s>", 1.0),
    ],
    "mjgm": [("an3-mjgm-b", "<s> stop </s>", 0.45), ("an4-mjgm-b", "<s> RUBOUT </s>", 0.7)],
    "mdcs2": [("an5-mdcs2-b", "<s> APOSTROPHE </s>", 0.75), ("an6-mdcs2-b", "<s> HELP </s>", 0.35)],
}
TEST = {
    "fcaw": [("an406-fcaw-b", "RUBOUT G M", 0.65), ("an407-fcaw-b", "ERASE C Q Q F SEVEN", 1.2)],
    "mmxg": [("an441-mmxg-b", "YES", 0.55), ("an442-mmxg-b", "NO", 0.55)],  # equal durations: tie by path
}
N_TRAIN = sum(len(v) for v in TRAIN.values())
N_TEST = sum(len(v) for v in TEST.values())


def clean_text(body: str) -> str:
    return " ".join(t for t in body.upper().split() if t not in ("<S>", "</S>"))


def samples_for(utt_id: str, seconds: float) -> np.ndarray:
    """Deterministic int16 audio (a sine plus noise) for one utterance."""
    rng = np.random.default_rng(zlib.crc32(utt_id.encode()))
    n = int(round(seconds * 16000))
    t = np.arange(n) / 16000
    x = 0.4 * np.sin(2 * np.pi * rng.uniform(150, 600) * t) + 0.05 * rng.standard_normal(n)
    return (x * 32767).astype(np.int16)


AUDIO = {utt: samples_for(utt, s) for spk in (TRAIN, TEST) for v in spk.values() for utt, _, s in v}


def an4_members(train: dict = TRAIN, test: dict = TEST) -> dict[str, bytes]:
    """Archive member name -> content, in CMU's layout."""
    members: dict[str, bytes] = {"an4/README": b"synthetic AN4\n", "an4/etc/an4.dic": b"YES Y EH S\n"}
    for split, folder, speakers in (("train", "an4_clstk", train), ("test", "an4test_clstk", test)):
        fileids, lines = [], []
        for speaker, utts in speakers.items():
            for utt, body, _ in utts:
                fileids.append(f"{folder}/{speaker}/{utt}")
                lines.append(f"{body} ({utt})")
                members[f"an4/wav/{folder}/{speaker}/{utt}.raw"] = AUDIO[utt].astype(">i2").tobytes()
        members[f"an4/etc/an4_{split}.fileids"] = ("\n".join(fileids) + "\n").encode()
        members[f"an4/etc/an4_{split}.transcription"] = ("\n".join(lines) + "\n").encode()
    return members


def write_archive(path: Path, members: dict[str, bytes], etc_last: bool = False) -> Path:
    """A .tar.gz of ``members`` (etc files first like the real archive, or last)."""
    names = sorted(members, key=lambda n: ((n.startswith("an4/etc/") == etc_last), n))
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_archive(tmp_path_factory.mktemp("archive") / "an4_raw.bigendian.tar.gz", an4_members())


def run(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    rc = an4.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def manifest_rows(path: Path) -> list[tuple[Path, Path]]:
    return read_manifest(path)


def speaker_of(wav: Path) -> str:
    return wav.stem.split("-")[1]


def check_target(target: Path, manifest_dir: Path | None = None, sample_rate: int = 16000) -> dict:
    """Assert everything a finished preparation must satisfy; returns {split: rows}."""
    manifest_dir = manifest_dir or target
    rows = {s: manifest_rows(manifest_dir / f"an4_{s}_manifest.csv") for s in an4.SPLITS}
    assert len(rows["train"]) + len(rows["val"]) == N_TRAIN
    assert len(rows["test"]) == N_TEST
    assert rows["val"], "val must not be empty"
    train_spk = {speaker_of(w) for w, *_ in rows["train"]}
    val_spk = {speaker_of(w) for w, *_ in rows["val"]}
    assert train_spk.isdisjoint(val_spk)
    assert train_spk | val_spk == set(TRAIN)
    assert {speaker_of(w) for w, *_ in rows["test"]} == set(TEST)
    expected_text = {u: clean_text(b) for spk in (TRAIN, TEST) for v in spk.values() for u, b, _ in v}
    for split, split_rows in rows.items():
        lines = (manifest_dir / f"an4_{split}_manifest.csv").read_text().splitlines()
        for line in lines:  # relative to the manifest's folder, posix separators
            assert not os.path.isabs(line.split(",")[0]) and not os.path.isabs(line.split(",")[1])
        durations = [probe_audio(w).duration for w, *_ in split_rows]
        keys = [(d, w.as_posix()) for d, (w, *_) in zip(durations, split_rows)]
        assert keys == sorted(keys), f"{split} manifest not sorted by duration"
        for wav, txt, _ in split_rows:
            assert wav.resolve().parent == target.resolve() / split / "wav"
            assert txt.resolve() == target.resolve() / split / "txt" / (wav.stem + ".txt")
            info = sf.info(str(wav))
            assert (info.samplerate, info.channels, info.subtype) == (sample_rate, 1, "PCM_16")
            text = read_transcript(txt)
            assert text == expected_text[wav.stem]
            assert "<" not in text and "(" not in text
            text_to_ids(text, LABELS, txt)
            if sample_rate == 16000:  # lossless conversion of the big-endian samples
                audio, _ = sf.read(str(wav), dtype="int16")
                np.testing.assert_array_equal(audio, AUDIO[wav.stem])
    assert (target / an4.MARKER).is_file()
    return rows


# ---------------------------------------------------------------------------- happy path


def test_prepares_synthetic_archive(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "an4"
    rc, out, err = run(capsys, "--archive", archive, "--target-dir", target)
    assert rc == 0, err
    rows = check_target(target)
    # summary: utterances and hours per split
    for split in an4.SPLITS:
        assert f"{split:<5} {len(rows[split]):5d} utterances" in out
    assert "h " in out
    # ties broken by path: the two 0.55 s test utterances
    test_names = [w.stem for w, *_ in rows["test"]]
    assert test_names.index("an441-mmxg-b") + 1 == test_names.index("an442-mmxg-b")
    marker = json.loads((target / an4.MARKER).read_text())
    assert marker["counts"] == {s: len(rows[s]) for s in an4.SPLITS}
    assert marker["archive"]["size"] == archive.stat().st_size


def test_prints_archive_sha256_and_writes_durations(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import hashlib

    target = tmp_path / "an4"
    rc, out, err = run(capsys, "--archive", archive, "--target-dir", target)
    assert rc == 0, err
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    lines = [line for line in out.splitlines() if line.startswith("archive sha256:")]
    assert lines == [f"archive sha256: {sha}  {archive.resolve()}"]
    assert json.loads((target / an4.MARKER).read_text())["archive"]["sha256"] == sha
    for split in an4.SPLITS:
        rows = read_manifest(target / f"an4_{split}_manifest.csv")
        assert rows and all(d == pytest.approx(probe_audio(w).duration, abs=5e-4) for w, _, d in rows)
    # the no-op re-run names the archive it checked too
    rc, out, _ = run(capsys, "--archive", archive, "--target-dir", target)
    assert rc == 0 and f"archive sha256: {sha}" in out and "already prepared" in out


def test_etc_files_after_audio_in_the_tar(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    archive = write_archive(tmp_path / "a.tar.gz", an4_members(), etc_last=True)
    rc, _, err = run(capsys, "--archive", archive, "--target-dir", tmp_path / "an4")
    assert rc == 0, err
    check_target(tmp_path / "an4")


def test_parse_transcription_line_both_styles() -> None:
    assert an4.parse_transcription_line("<s> YES </s> (an251-fash-b)") == ("YES", "an251-fash-b")
    assert an4.parse_transcription_line("RUBOUT G M E F (an406-fcaw-b)\n") == ("RUBOUT G M E F", "an406-fcaw-b")
    assert an4.parse_transcription_line("<s>  go   up </s> (x1)") == ("GO UP", "x1")
    with pytest.raises(ValueError):
        an4.parse_transcription_line("<s> YES </s>")
    with pytest.raises(ValueError):
        an4.parse_transcription_line("YES ()")


def test_val_speakers_seeded_fraction_and_flags(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    utts = [an4.Utterance(f"u{s}{i}", f"s{s}", "", "A", 16000) for s in range(20) for i in range(10)]
    chosen = an4.choose_val_speakers(utts, 0.1, seed=1)
    assert chosen == an4.choose_val_speakers(utts, 0.1, seed=1) and len(chosen) == 2
    assert any(an4.choose_val_speakers(utts, 0.1, seed=s) != chosen for s in range(2, 6))
    assert len(an4.choose_val_speakers(utts, 0.33, seed=1)) == 7  # 70 utterances is closer to 66 than 60
    assert len(an4.choose_val_speakers(utts, 0.31, seed=1)) == 6  # 60 is closer to 62 than 70
    assert len(an4.choose_val_speakers(utts, 0.99, seed=1)) == 19  # one speaker always stays in train
    assert len(an4.choose_val_speakers(utts, 0.001, seed=1)) == 1  # at least one speaker held out

    corpus = an4.read_corpus(archive)["train"]
    for seed, fraction in ((7, 0.3), (8, 0.3), (7, 0.6)):
        target = tmp_path / f"an4_{seed}_{fraction}"
        rc, out, err = run(capsys, "--archive", archive, "--target-dir", target, "--seed", seed, "--val-fraction", fraction)
        assert rc == 0, err
        rows = check_target(target)
        expected = an4.choose_val_speakers(corpus, fraction, seed)
        assert sorted({speaker_of(w) for w, *_ in rows["val"]}) == expected
        assert json.loads((target / an4.MARKER).read_text())["val_speakers"] == expected
    sizes = {f: len(manifest_rows(tmp_path / f"an4_7_{f}" / "an4_val_manifest.csv")) for f in (0.3, 0.6)}
    assert sizes[0.6] > sizes[0.3]


def test_sample_rate_8000(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "an4"
    rc, _, err = run(capsys, "--archive", archive, "--target-dir", target, "--sample-rate", "8000")
    assert rc == 0, err
    rows = check_target(target, sample_rate=8000)
    for wav, *_ in rows["train"] + rows["test"]:
        audio, sr = sf.read(str(wav), dtype="float32")
        original = AUDIO[wav.stem].astype(np.float32) / 32768
        assert sr == 8000 and len(audio) == len(original) // 2
        # resampled, not just decimated garbage: same energy within a few percent
        assert np.sqrt(np.mean(audio**2)) == pytest.approx(np.sqrt(np.mean(original**2)), rel=0.1)


def test_manifest_dir(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target, manifests = tmp_path / "an4", tmp_path / "manifests" / "here"
    rc, _, err = run(capsys, "--archive", archive, "--target-dir", target, "--manifest-dir", manifests)
    assert rc == 0, err
    check_target(target, manifest_dir=manifests)
    assert not list(target.glob("*.csv"))
    first = (manifests / "an4_train_manifest.csv").read_text().splitlines()[0]
    assert first.startswith("../../an4/train/wav/")
    # a different manifest dir is a different setting: redone, the old manifests removed
    other = tmp_path / "other"
    rc, out, err = run(capsys, "--archive", archive, "--target-dir", target, "--manifest-dir", other)
    assert rc == 0, err
    check_target(target, manifest_dir=other)
    assert not list(manifests.glob("*.csv"))


def test_min_max_duration_prunes_train_only(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "an4"
    rc, out, err = run(
        capsys,
        "--archive",
        archive,
        "--target-dir",
        target,
        "--seed",
        "3",
        "--val-fraction",
        "0.3",
        "--min-duration",
        "0.4",
        "--max-duration",
        "0.9",
    )
    assert rc == 0, err
    rows = {s: manifest_rows(target / f"an4_{s}_manifest.csv") for s in an4.SPLITS}
    train_d = [probe_audio(w).duration for w, *_ in rows["train"]]
    assert train_d and all(0.4 <= d <= 0.9 for d in train_d)
    val_spk = {speaker_of(w) for w, *_ in rows["val"]}
    all_train_durations = [s for spk, v in TRAIN.items() if spk not in val_spk for _, _, s in v]
    assert len(train_d) == sum(0.4 <= s <= 0.9 for s in all_train_durations) < len(all_train_durations)
    val_expected = [s for spk in val_spk for _, _, s in TRAIN[spk]]
    assert len(rows["val"]) == len(val_expected)  # val and test are never pruned
    assert len(rows["test"]) == N_TEST
    assert "outside the duration range" in out
    # a range no training utterance falls in is an error, before anything is written
    rc, _, err = run(capsys, "--archive", archive, "--target-dir", tmp_path / "none", "--min-duration", "5")
    assert rc == 2 and err.startswith("error:") and "--min-duration" in err
    assert not (tmp_path / "none").exists()


# ---------------------------------------------------------------------------- idempotence


def _mtimes(target: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()}


def test_rerun_does_nothing(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "an4"
    assert run(capsys, "--archive", archive, "--target-dir", target)[0] == 0
    before = _mtimes(target)
    rc, out, _ = run(capsys, "--archive", archive, "--target-dir", target)
    assert rc == 0 and "already prepared" in out
    assert _mtimes(target) == before


def test_killed_half_way_is_redone(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "an4"
    real_write = sf.write
    calls = []

    def dying_write(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt  # the user pressed Ctrl-C half way through the conversion
        calls.append(args[0])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(an4.sf, "write", dying_write)
    rc, _, err = run(capsys, "--archive", archive, "--target-dir", target)
    monkeypatch.setattr(an4.sf, "write", real_write)
    assert rc == 130 and "will be redone" in err
    assert not (target / an4.MARKER).exists()
    assert len(list(target.rglob("*.wav"))) == 5
    # a half-written file from the killed run and a file that is not ours
    Path(calls[0]).write_bytes(b"RIFF")
    (target / "train" / "notes.md").write_text("mine")
    rc, out, err = run(capsys, "--archive", archive, "--target-dir", target)
    assert rc == 0, err
    assert "redoing" in out and "already prepared" not in out
    check_target(target)
    assert (target / "train" / "notes.md").read_text() == "mine"


@pytest.mark.parametrize("damage", ["delete_marker", "truncate_wav", "delete_wav", "delete_manifest", "bad_marker"])
def test_damaged_target_is_redone(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture, damage: str) -> None:
    target = tmp_path / "an4"
    assert run(capsys, "--archive", archive, "--target-dir", target)[0] == 0
    wav = sorted((target / "train" / "wav").glob("*.wav"))[0]
    if damage == "delete_marker":
        (target / an4.MARKER).unlink()
    elif damage == "truncate_wav":
        wav.write_bytes(wav.read_bytes()[:100])
    elif damage == "delete_wav":
        wav.unlink()
    elif damage == "delete_manifest":
        (target / "an4_val_manifest.csv").unlink()
    else:
        (target / an4.MARKER).write_text("{not json")
    rc, out, err = run(capsys, "--archive", archive, "--target-dir", target)
    assert rc == 0, err
    assert "already prepared" not in out and "redoing" in out
    check_target(target)


def test_other_settings_or_archive_are_redone(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "an4"
    assert run(capsys, "--archive", archive, "--target-dir", target)[0] == 0
    rc, out, err = run(capsys, "--archive", archive, "--target-dir", target, "--sample-rate", "8000")
    assert rc == 0 and "redoing" in out, err
    check_target(target, sample_rate=8000)
    # same settings, different archive contents: redone as well
    members = an4_members()
    members["an4/README"] = b"another copy\n"
    other = write_archive(tmp_path / "other.tar.gz", members)
    rc, out, err = run(capsys, "--archive", other, "--target-dir", target, "--sample-rate", "8000")
    assert rc == 0 and "redoing" in out, err
    rc, out, _ = run(capsys, "--archive", other, "--target-dir", target, "--sample-rate", "8000")
    assert rc == 0 and "already prepared" in out


# ---------------------------------------------------------------------------- bad input


def _swap_lines(text: bytes, i: int, j: int) -> bytes:
    lines = text.decode().splitlines()
    lines[i], lines[j] = lines[j], lines[i]
    return ("\n".join(lines) + "\n").encode()


BASE = an4_members()
TRAIN_TR = "an4/etc/an4_train.transcription"
TEST_TR = "an4/etc/an4_test.transcription"
FIRST_RAW = "an4/wav/an4_clstk/fash/an251-fash-b.raw"


def _bad_archive(kind: str, path: Path) -> tuple[Path, list[str]]:
    """Write a bad archive of ``kind``; returns it and the words the error must contain."""
    if kind == "not_gzip":
        path.write_text("this is not an archive\n")
        return path, ["not a gzip"]
    if kind == "gzip_not_tar":
        path.write_bytes(gzip.compress(b"plain text, not a tar file\n" * 50))
        return path, ["corrupt or not a tar"]
    if kind == "empty":
        path.write_bytes(b"")
        return path, ["empty (0 bytes)"]
    good = write_archive(path.with_name("good.tar.gz"), BASE).read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
        return path, ["truncated"]
    if kind == "truncated_tail":
        path.write_bytes(good[:-4])
        return path, ["truncated"]
    members = dict(BASE)
    words: list[str]
    if kind == "missing_etc":
        del members["an4/etc/an4_test.fileids"]
        words = ["an4/etc/an4_test.fileids", "missing"]
    elif kind == "foreign":
        members = {"something/else.txt": b"hello"}
        words = ["does not look like", "an4_train.fileids"]
    elif kind == "id_mismatch":
        members[TRAIN_TR] = _swap_lines(members[TRAIN_TR], 1, 2)
        words = [TRAIN_TR, "line 2", "an4/etc/an4_train.fileids", "an253-fash-b"]
    elif kind == "test_id_mismatch":
        members[TEST_TR] = members[TEST_TR].replace(b"(an441-mmxg-b)", b"(an999-mmxg-b)")
        words = [TEST_TR, "line 3", "an999-mmxg-b"]
    elif kind == "line_count":
        members[TEST_TR] = b"\n".join(members[TEST_TR].splitlines()[:-1]) + b"\n"
        words = [TEST_TR, "4 utterances", "3 lines"]
    elif kind == "no_utt_id":
        members[TRAIN_TR] = members[TRAIN_TR].replace(b"<s> GO </s> (an253-fash-b)", b"<s> GO </s>")
        words = [TRAIN_TR, "line 2", "(utterance-id)"]
    elif kind == "missing_raw":
        del members[FIRST_RAW]
        words = [FIRST_RAW, "missing", "line 1"]
    elif kind == "odd_raw":
        members[FIRST_RAW] = members[FIRST_RAW] + b"\x00"
        words = [FIRST_RAW, "even"]
    elif kind == "bad_fileid":
        fid = "an4/etc/an4_train.fileids"
        members[fid] = members[fid].replace(b"an4_clstk/fash/an253-fash-b", b"an4_clstk/../an253-fash-b")
        words = [fid, "line 2", "<speaker>"]
    elif kind == "duplicate_id":
        fid = "an4/etc/an4_test.fileids"
        members[fid] += b"an4test_clstk/fcaw/an406-fcaw-b\n"
        members[TEST_TR] += b"RUBOUT (an406-fcaw-b)\n"
        words = [fid, "line 5", "listed twice"]
    elif kind == "bad_chars":
        members[TEST_TR] = members[TEST_TR].replace(b"RUBOUT G M", b"RUBOUT G M 3!")
        words = [TEST_TR, "line 1", "'3'", "'!'", "outside the labels"]
    else:
        raise AssertionError(kind)
    write_archive(path, members)
    return path, words


BAD_KINDS = [
    "not_gzip",
    "gzip_not_tar",
    "empty",
    "truncated",
    "truncated_tail",
    "missing_etc",
    "foreign",
    "id_mismatch",
    "test_id_mismatch",
    "line_count",
    "no_utt_id",
    "missing_raw",
    "odd_raw",
    "bad_fileid",
    "duplicate_id",
    "bad_chars",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_archive_is_one_clear_error_and_writes_nothing(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad, words = _bad_archive(kind, tmp_path / f"{kind}.tar.gz")
    target = tmp_path / "an4"
    rc, out, err = run(capsys, "--archive", bad, "--target-dir", target)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(bad.resolve()) in err
    for word in words:
        assert word in err, (word, err)
    assert not target.exists()


def test_bad_archive_leaves_a_finished_target_alone(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "an4"
    assert run(capsys, "--archive", archive, "--target-dir", target)[0] == 0
    before = _mtimes(target)
    bad, _ = _bad_archive("truncated", tmp_path / "bad.tar.gz")
    assert run(capsys, "--archive", bad, "--target-dir", target)[0] == 2
    assert _mtimes(target) == before


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--val-fraction", "0"], ["--val-fraction"]),
        (["--val-fraction", "1"], ["--val-fraction"]),
        (["--sample-rate", "0"], ["--sample-rate"]),
        (["--min-duration", "2", "--max-duration", "1"], ["--min-duration", "--max-duration"]),
        (["--max-duration", "-1"], ["--max-duration"]),
    ],
)
def test_bad_flags(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], words: list[str]) -> None:
    rc, _, err = run(capsys, "--archive", archive, "--target-dir", tmp_path / "an4", *argv)
    assert rc == 2 and err.startswith("error: ")
    assert all(w in err for w in words)
    assert not (tmp_path / "an4").exists()


def test_missing_archive_and_file_as_target(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = run(capsys, "--archive", tmp_path / "nope.tar.gz", "--target-dir", tmp_path / "an4")
    assert rc == 2 and "nope.tar.gz" in err and "not found" in err
    (tmp_path / "file").write_text("x")
    rc, _, err = run(capsys, "--archive", archive, "--target-dir", tmp_path / "file")
    assert rc == 2 and "--target-dir" in err


# ---------------------------------------------------------------------------- download


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at any path, with Range support and some failure modes."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.path != "/an4/an4_raw.bigendian.tar.gz":
            self.send_error(404, "Not Found")
            return
        data = srv.payload
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.mode != "ignore_range":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.mode == "drop_half":
            srv.mode = "normal"  # only the first transfer breaks
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(archive: Path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.payload = archive.read_bytes()
    srv.mode = "normal"
    srv.requests = []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/an4/an4_raw.bigendian.tar.gz"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def test_download_resumes_after_interruption(server, archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "an4"
    server.mode = "drop_half"
    rc, _, err = run(capsys, "--url", server.url, "--target-dir", target)
    assert rc == 2 and server.url in err and "run again to resume" in err
    part = target / "an4_raw.bigendian.tar.gz.part"
    half = len(server.payload) // 2
    assert part.stat().st_size == half
    assert not (target / "an4_raw.bigendian.tar.gz").exists()
    assert not (target / an4.MARKER).exists()

    rc, _, err = run(capsys, "--url", server.url, "--target-dir", target)
    assert rc == 0, err
    assert server.requests[-1]["range"] == f"bytes={half}-"
    assert (target / "an4_raw.bigendian.tar.gz").read_bytes() == archive.read_bytes()
    assert not part.exists()
    check_target(target)

    n = len(server.requests)
    rc, out, _ = run(capsys, "--url", server.url, "--target-dir", target)
    assert rc == 0 and "already prepared" in out
    assert len(server.requests) == n  # nothing downloaded again


def test_download_server_without_range_support(server, archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "an4"
    target.mkdir()
    (target / "an4_raw.bigendian.tar.gz.part").write_bytes(b"stale bytes from an older attempt")
    server.mode = "ignore_range"
    rc, _, err = run(capsys, "--url", server.url, "--target-dir", target)
    assert rc == 0, err
    assert server.requests[0]["range"] == "bytes=33-"
    assert (target / "an4_raw.bigendian.tar.gz").read_bytes() == archive.read_bytes()
    check_target(target)


def test_download_part_already_complete(server, archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "an4_raw.bigendian.tar.gz"
    dest.with_name(dest.name + ".part").write_bytes(archive.read_bytes())
    assert an4.download(server.url, dest) == dest
    assert server.requests[0]["range"] == f"bytes={len(server.payload)}-"
    assert dest.read_bytes() == archive.read_bytes()


def test_download_errors(server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = server.url.replace("an4_raw", "nothing")
    rc, _, err = run(capsys, "--url", missing, "--target-dir", tmp_path / "a")
    assert rc == 2 and missing in err and "404" in err and "--archive" in err
    # a download that is not an AN4 archive is reported and deleted, so the next run fetches it afresh
    server.payload = b"<html>captive portal</html>"
    rc, _, err = run(capsys, "--url", server.url, "--target-dir", tmp_path / "b")
    assert rc == 2 and "not a gzip" in err and "deleted" in err
    assert not (tmp_path / "b" / "an4_raw.bigendian.tar.gz").exists()
    # nothing listens on this port
    rc, _, err = run(capsys, "--url", "http://127.0.0.1:9/an4_raw.bigendian.tar.gz", "--target-dir", tmp_path / "c")
    assert rc == 2 and err.startswith("error: cannot download")


# ---------------------------------------------------------------------------- the real corpus


@pytest.mark.an4
def test_real_an4(an4_dir: Path) -> None:
    rows = {s: read_manifest(an4_dir / f"an4_{s}_manifest.csv") for s in an4.SPLITS}
    assert len(rows["train"]) + len(rows["val"]) == 948
    assert len(rows["test"]) == 130
    assert 0.08 <= len(rows["val"]) / 948 <= 0.12
    speakers = {s: {w.stem.split("-")[1] for w, *_ in r} for s, r in rows.items()}
    assert speakers["train"].isdisjoint(speakers["val"])
    assert len(speakers["train"] | speakers["val"]) == 74 and len(speakers["test"]) == 10
    seconds = {}
    for split, split_rows in rows.items():
        durations = []
        for wav, txt, _ in split_rows:
            info = sf.info(str(wav))
            assert (info.samplerate, info.channels) == (16000, 1)
            durations.append(info.frames / info.samplerate)
            text = read_transcript(txt)
            assert text and set(text) <= set(LABELS[1:]), (txt, text)
            text_to_ids(text, LABELS, txt)
        assert durations == sorted(durations)
        seconds[split] = sum(durations)
    # the data card's totals: 2546.3 s of training audio, 357.0 s of test audio
    assert seconds["train"] + seconds["val"] == pytest.approx(2546.3, abs=0.1)
    assert seconds["test"] == pytest.approx(357.0, abs=0.1)


def test_runs_as_a_script(archive: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(repo / "data" / "an4.py"), "--archive", str(archive), "--target-dir", "out"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    check_target(tmp_path / "out")
    bad = subprocess.run(cmd[:3] + [str(tmp_path / "missing.tar.gz")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
