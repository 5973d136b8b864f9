"""data/common_voice.py on a miniature Common Voice release generated here in the real
layout (48 kHz MP3 clips written by soundfile, TSV files), with odd rows and members."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data import common_voice
from data.audio import probe_audio
from data.data_loader import SpectrogramDataset
from data.manifest import read_manifest
from data.prep import normalize_transcript
from data.text import read_transcript
from tests.corpus_helpers import drop_lines, encode, mtimes, tone, write_tar


def _mp3_writer() -> str | None:
    """None when soundfile can write MP3 here, else why not."""
    if "MP3" not in sf.available_formats():
        return f"libsndfile {sf.__libsndfile_version__} has no MP3 support"
    try:
        encode(np.zeros(4800, dtype=np.float32), 48000, "MP3")
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        return f"libsndfile {sf.__libsndfile_version__} cannot write MP3 ({e})"
    return None


_NO_MP3 = _mp3_writer()
needs_mp3 = pytest.mark.skipif(_NO_MP3 is not None, reason=f"cannot generate MP3 test clips: {_NO_MP3}")

ROOT = "cv-corpus-9.9-2099-01-01/en"
HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"
# split -> [(clip stem, sentence, seconds or None for "no clip in the archive")]
ROWS = {
    "train": [
        ("common_voice_en_1", "Hello, world!", 1.0),
        ("common_voice_en_2", "It\u2019s a \u201cquoted\u201d well-known fact.", 1.2),
        ("common_voice_en_3", "", 0.8),  # empty sentence
        ("common_voice_en_4", "I have 3 cats.", 0.9),  # a digit: cannot be mapped
        ("common_voice_en_5", "Na\u00efve caf\u00e9", 0.9),  # accents: mapped only with --strip-accents
        ("common_voice_en_6", "A broken clip", 0.7),  # corrupt MP3 below
        ("common_voice_en_7", "Nobody uploaded this", None),  # missing from the archive
        ("common_voice_en_8", "Far too long for training", 2.6),  # > --max-duration 2
        ("common_voice_en_9", "Hi", 0.2),  # < --min-duration 0.3
        ("common_voice_en_10", "Stra\u00dfe", 0.6),  # ß -> SS when upper-cased
    ],
    "dev": [("common_voice_en_20", "Good morning.", 0.8), ("common_voice_en_21", "A long dev clip.", 2.6)],
    "test": [("common_voice_en_30", "Thank you", 0.7)],
}
CORRUPT = "common_voice_en_6"
EXPECTED_TEXT = {
    "common_voice_en_1": "HELLO WORLD",
    "common_voice_en_2": "IT'S A QUOTED WELL KNOWN FACT",
    "common_voice_en_10": "STRASSE",
    "common_voice_en_20": "GOOD MORNING",
    "common_voice_en_21": "A LONG DEV CLIP",
    "common_voice_en_30": "THANK YOU",
}
EXPECTED_DROPS = {
    ("train", common_voice.EMPTY): 1,
    ("train", common_voice.BAD_CHARS): 2,
    ("train", common_voice.BAD_AUDIO): 1,
    ("train", common_voice.NO_AUDIO): 1,
    ("train", "longer than --max-duration 2 s"): 1,
    ("train", "shorter than --min-duration 0.3 s"): 1,
    ("train", common_voice.TWICE): 1,
    ("train", common_voice.UNSAFE_CLIP): 1,
    ("train", common_voice.MALFORMED): 1,
    ("archive", "unsafe archive member (absolute path, '..', link or device), refused"): 2,
}
AUDIO = {stem: tone(sec, 48000, seed=stem) for rows in ROWS.values() for stem, _, sec in rows if sec is not None}


def tsv(split: str) -> bytes:
    lines = [HEADER]
    for i, (stem, sentence, _) in enumerate(ROWS[split]):
        lines.append(f"client{i}\t{stem}.mp3\t{sentence}\t2\t0\t\t\t\ten\t")
    if split == "train":
        lines.append(f"client9\t{ROWS['train'][0][0]}.mp3\tHello again\t2\t0\t\t\t\ten\t")  # listed twice
        lines.append("client10\t../evil.mp3\tEvil\t2\t0\t\t\t\ten\t")  # unsafe path
        lines.append("client11")  # malformed row
    return ("\n".join(lines) + "\n").encode()


def release_files(root: str = ROOT) -> dict[str, bytes]:
    """{name inside the release: bytes}: clips, the three TSVs and validated.tsv."""
    files = {}
    for stem, data in AUDIO.items():
        files[f"{root}/clips/{stem}.mp3"] = (
            b"\xff\xfb\x90\x00" + b"garbage" * 50 if stem == CORRUPT else (encode(data, 48000, "MP3"))
        )
    for split in ROWS:
        files[f"{root}/{split}.tsv"] = tsv(split)
    files[f"{root}/validated.tsv"] = tsv("train")
    return files


def release_archive(path: Path, tsv_first: bool, files: dict[str, bytes] | None = None) -> Path:
    files = files or release_files()
    names = sorted(files, key=lambda n: (n.endswith(".tsv") != tsv_first, n))
    members: dict[str, object] = {name: files[name] for name in names}
    members["../../evil.mp3"] = b"outside"
    members[f"{ROOT}/clips/../../../escape.tsv"] = b"x"
    return write_tar(path, members)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if _NO_MP3:
        pytest.skip(f"cannot generate MP3 test clips: {_NO_MP3}")
    folder = tmp_path_factory.mktemp("cv")
    return {
        "tsv_first": release_archive(folder / "cv-tsv-first.tar.gz", tsv_first=True),
        "clips_first": release_archive(folder / "cv-clips-first.tar.gz", tsv_first=False),
    }


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    rc = common_voice.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def args_for(archive: Path, target: Path, *extra: object) -> list[object]:
    return ["--archive", archive, "--target-dir", target, "--min-duration", "0.3", "--max-duration", "2", *extra]


def check_target(target: Path, kept: dict[str, set[str]]) -> None:
    for split, stems in kept.items():
        manifest = target / f"commonvoice_{split}_manifest.csv"
        rows = read_manifest(manifest)
        assert {w.stem for w, _, _ in rows} == stems, split
        assert len(SpectrogramDataset(manifest)) == len(stems)  # the loader's own checks
        assert [d for *_, d in rows] == sorted(d for *_, d in rows)
        for wav, txt, seconds in rows:
            assert wav == target / split / "wav" / f"{wav.stem}.wav"
            info = sf.info(str(wav))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert seconds == pytest.approx(probe_audio(wav).duration, abs=5e-4)
            # the MP3 round trip keeps the length: within 50 ms of the generated clip
            assert seconds == pytest.approx(len(AUDIO[wav.stem]) / 48000, abs=0.05)
            if wav.stem in EXPECTED_TEXT:
                assert read_transcript(txt) == EXPECTED_TEXT[wav.stem]


KEPT = {
    "train": {"common_voice_en_1", "common_voice_en_2", "common_voice_en_10"},
    "dev": {"common_voice_en_20", "common_voice_en_21"},  # dev is never pruned by duration
    "test": {"common_voice_en_30"},
}


@needs_mp3
@pytest.mark.parametrize("order, passes", [("tsv_first", 1), ("clips_first", 2)])
def test_prepares_miniature_release(
    archives: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, order: str, passes: int
) -> None:
    target = tmp_path / "cv"
    rc, out, err = run(capsys, *args_for(archives[order], target))
    assert rc == 0, err
    check_target(target, KEPT)
    assert drop_lines(out) == EXPECTED_DROPS
    assert f"dropped {sum(EXPECTED_DROPS.values())} in all" in out
    marker = json.loads((target / common_voice.MARKER).read_text())
    assert marker["archive"]["passes"] == passes and marker["archive"]["language_folder"] == ROOT + "/"
    assert marker["drops"]["train"][common_voice.BAD_CHARS] == 2
    assert not (tmp_path / "evil.mp3").exists() and not (tmp_path.parent / "escape.tsv").exists()
    # a re-run does nothing
    before = mtimes(target)
    rc, out, _ = run(capsys, *args_for(archives[order], target))
    assert rc == 0 and "nothing to do" in out
    assert mtimes(target) == before


@needs_mp3
def test_strip_accents_is_a_new_setting(archives: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "cv"
    assert run(capsys, *args_for(archives["tsv_first"], target))[0] == 0
    rc, out, err = run(capsys, *args_for(archives["tsv_first"], target, "--strip-accents"))
    assert rc == 0 and "redoing" in out, err
    check_target(target, {**KEPT, "train": KEPT["train"] | {"common_voice_en_5"}})
    assert read_transcript(target / "train" / "txt" / "common_voice_en_5.txt") == "NAIVE CAFE"
    assert drop_lines(out)[("train", common_voice.BAD_CHARS)] == 1


@needs_mp3
def test_extracted_folder_and_language_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = tmp_path / "release"
    for name, data in release_files().items():
        (release / name).parent.mkdir(parents=True, exist_ok=True)
        (release / name).write_bytes(data)
    for source in (release, release / ROOT):
        target = tmp_path / f"cv_{source.name}"
        rc, out, err = run(capsys, *args_for(source, target, "--files-to-process", "dev.tsv", "test.tsv"))
        assert rc == 0, err
        check_target(target, {"dev": KEPT["dev"], "test": KEPT["test"]})
        assert not (target / "train").exists()
        assert run(capsys, *args_for(source, target, "--files-to-process", "dev.tsv", "test.tsv"))[1].count("nothing to do") == 1
    # a changed TSV in the folder is a different source: redone
    (release / ROOT / "test.tsv").write_bytes(tsv("test") + b"client5\tcommon_voice_en_20.mp3\tGood morning\t2\t0\n")
    rc, out, _ = run(capsys, *args_for(release, tmp_path / "cv_release", "--files-to-process", "dev.tsv", "test.tsv"))
    assert rc == 0 and "redoing" in out
    assert len(read_manifest(tmp_path / "cv_release" / "commonvoice_test_manifest.csv")) == 2


@needs_mp3
def test_two_languages_need_language(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = release_files()
    files.update(release_files("cv-corpus-9.9-2099-01-01/fr"))
    archive = write_tar(tmp_path / "two.tar.gz", files)
    rc, _, err = run(capsys, *args_for(archive, tmp_path / "a"))
    assert rc == 2 and "more than one language folder" in err and "--language" in err
    rc, out, err = run(capsys, *args_for(archive, tmp_path / "b", "--language", "fr"))
    assert rc == 0, err
    assert "cv-corpus-9.9-2099-01-01/fr/" in out
    rc, _, err = run(capsys, *args_for(archive, tmp_path / "c", "--language", "de"))
    assert rc == 2 and "no 'de/' language folder found" in err


@needs_mp3
def test_bad_input(archives: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = run(capsys, *args_for(archives["tsv_first"], tmp_path / "a", "--files-to-process", "other.tsv"))
    assert rc == 2 and "other.tsv not found" in err
    rc, _, err = run(capsys, *args_for(archives["tsv_first"], tmp_path / "b", "--files-to-process", "train.csv"))
    assert rc == 2 and "train.csv" in err
    rc, _, err = run(capsys, *args_for(tmp_path / "missing.tar.gz", tmp_path / "c"))
    assert rc == 2 and "not found" in err
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archives["tsv_first"].read_bytes()[:-100])
    rc, _, err = run(capsys, *args_for(truncated, tmp_path / "d"))
    assert rc == 2 and "truncated" in err and str(truncated) in err and err.count("\n") == 1
    not_cv = write_tar(tmp_path / "not_cv.tar.gz", {"README": b"hello"})
    rc, _, err = run(capsys, *args_for(not_cv, tmp_path / "e"))
    assert rc == 2 and "does not look like a Common Voice release" in err


def test_mp3_support_is_checked_first(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common_voice.sf, "__libsndfile_version__", "1.0.31")
    rc, _, err = run(capsys, "--archive", tmp_path, "--target-dir", tmp_path / "t")
    assert rc == 2 and err.count("\n") == 1
    assert "libsndfile 1.0.31" in err and "cannot read MP3" in err and "pip install -U soundfile" in err


def test_text_rule() -> None:
    rule = normalize_transcript
    assert rule("Hello,   world!") == "HELLO WORLD"
    assert rule("It\u2019s \u2018fine\u2019 \u2014 isn\u02bct it?") == "IT'S 'FINE' ISN'T IT"
    assert rule("well-known") == "WELL KNOWN"
    assert rule("co\u00adoperate\u200b now") == "COOPERATE NOW"  # soft hyphen, zero-width space
    assert rule("' ''  quoted '") == "QUOTED"
    assert rule("  ...  ") == ""
    assert rule("Caf\u00e9", strip_accents=True) == "CAFE"
    assert rule("Cafe\u0301", strip_accents=True) == "CAFE"  # decomposed input
    with pytest.raises(ValueError, match="'3'"):
        rule("3 cats")
    with pytest.raises(ValueError, match="'\u00c9'"):
        rule("Caf\u00e9")  # upper-cased first, so the unmappable character is reported as É
    assert rule("under_score") == "UNDER SCORE"  # the blank label is punctuation here, never text
    assert rule("abc", labels=list("_abc ")) == "abc"  # lower-case labels: no upper-casing


def test_decode_mp3_bytes_roundtrip() -> None:
    if _NO_MP3:
        pytest.skip(f"cannot generate MP3 test clips: {_NO_MP3}")
    data = encode(tone(0.5, 48000, seed="x"), 48000, "MP3")
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 48000 and abs(len(audio) - 24000) < 2400
