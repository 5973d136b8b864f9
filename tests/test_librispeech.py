"""data/librispeech.py on miniature OpenSLR tarballs generated here in the real layout
(FLAC audio, per-chapter .trans.txt), with odd members, and through a local HTTP server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data import librispeech
from data.audio import probe_audio
from data.data_loader import SpectrogramDataset
from data.manifest import read_manifest
from data.text import read_transcript
from tests.corpus_helpers import (
    SYMLINK,
    drop_lines,
    encode,
    mtimes,
    serve,
    tone,
    write_tar,
)

# subset -> speaker -> chapter -> [(utterance number, transcript line body or None, seconds)]
# None: the utterance has audio but no transcript line.
CORPUS = {
    "dev-clean": {
        "84": {"121123": [(0, "GO DO YOU HEAR", 0.6), (1, "BUT IN LESS THAN FIVE MINUTES", 1.1)]},
        "174": {"50561": [(0, "FORGOTTEN TOO THE NAME OF GILLIAN", 0.9), (1, "A LONG TIME", 3.0)]},
    },
    "test-clean": {
        "1089": {"134686": [(0, "HE HOPED THERE WOULD BE STEW", 0.7)]},
    },
    "train-clean-100": {
        "19": {
            "198": [
                (0, "NORTHANGER ABBEY", 0.8),
                (1, "THIS LITTLE WORK WAS FINISHED", 1.2),
                (2, "", 0.5),  # empty transcript
                (3, "CHAPTER 42 BEGINS", 0.6),  # characters outside the labels
                (4, "A CORRUPT FLAC", 0.6),  # audio replaced by garbage below
                (5, "MUCH TOO LONG", 2.5),  # longer than --max-duration 2
                (6, "SHORT", 0.15),  # shorter than --min-duration 0.25
                (7, None, 0.5),  # no transcript line
            ]
        },
        "26": {"495": [(0, "I DON'T KNOW", 0.9), (1, "O'CLOCK", 0.4)]},
    },
}
CORRUPT = "19-198-0004"
TEXT_WITHOUT_AUDIO = ("19-198-0008", "NOBODY RECORDED THIS")
EXPECTED_DROPS = {
    "train-clean-100": {
        librispeech.EMPTY: 1,
        librispeech.BAD_CHARS: 1,
        librispeech.BAD_AUDIO: 1,
        "longer than --max-duration 2 s": 1,
        "shorter than --min-duration 0.25 s": 1,
        librispeech.NO_TRANSCRIPT: 1,
        librispeech.NO_AUDIO: 1,
        "unsafe archive member (absolute path, '..', link or device), refused": 3,
    },
}
KEPT = {"dev-clean": 4, "test-clean": 1, "train-clean-100": 4}


def utt_id(speaker: str, chapter: str, number: int) -> str:
    return f"{speaker}-{chapter}-{number:04d}"


AUDIO = {
    utt_id(spk, ch, n): tone(sec, seed=utt_id(spk, ch, n))
    for speakers in CORPUS.values()
    for spk, chapters in speakers.items()
    for ch, utts in chapters.items()
    for n, _, sec in utts
}


def subset_members(subset: str) -> dict[str, object]:
    """Archive members of ``subset`` in LibriSpeech's layout (flac files before each
    chapter's .trans.txt, as a sorted tar has them), with unsafe members for train."""
    members: dict[str, object] = {"LibriSpeech/README.TXT": b"LibriSpeech miniature\n"}
    for speaker, chapters in CORPUS[subset].items():
        for chapter, utts in chapters.items():
            folder = f"LibriSpeech/{subset}/{speaker}/{chapter}"
            lines = []
            for n, text, _ in utts:
                utt = utt_id(speaker, chapter, n)
                data = encode(AUDIO[utt], 16000, "FLAC", "PCM_16")
                members[f"{folder}/{utt}.flac"] = b"fLaC\x00garbage" * 20 if utt == CORRUPT else data
                if text is not None:
                    lines.append(f"{utt} {text}".rstrip())
            if subset == "train-clean-100" and chapter == "198":
                lines.append(" ".join(TEXT_WITHOUT_AUDIO))
            members[f"{folder}/{speaker}-{chapter}.trans.txt"] = ("\n".join(lines) + "\n").encode()
    if subset == "train-clean-100":
        members["../../evil.flac"] = b"outside the target"
        members["/tmp/absolute.trans.txt"] = b"19-198-0099 EVIL\n"
        members[f"LibriSpeech/{subset}/19/198/19-198-0098.flac"] = (SYMLINK, "/etc/passwd")
    return members


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the three miniature tarballs and an md5sum.txt for them."""
    folder = tmp_path_factory.mktemp("openslr12")
    sums = []
    for subset in CORPUS:
        path = write_tar(folder / f"{subset}.tar.gz", subset_members(subset))
        sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.name}")
    (folder / "md5sum.txt").write_text("\n".join(sums) + "\n")
    return folder


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    rc = librispeech.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def base_args(archives: Path, target: Path, *extra: object) -> list[object]:
    return [
        "--archive-dir",
        archives,
        "--md5sums",
        archives / "md5sum.txt",
        "--target-dir",
        target,
        "--files-to-use",
        ",".join(CORPUS),
        "--min-duration",
        "0.25",
        "--max-duration",
        "2",
        *extra,
    ]


def check_manifests(target: Path, audio: str = "flac") -> dict[str, list]:
    rows = {}
    for subset, n in KEPT.items():
        manifest = target / f"libri_{subset}_manifest.csv"
        rows[subset] = read_manifest(manifest)
        assert len(rows[subset]) == n, subset
        dataset = SpectrogramDataset(manifest)  # the loader's own checks: audio headers, transcripts
        assert len(dataset) == n
        durations = [d for *_, d in rows[subset]]
        assert durations == sorted(durations)
        for wav, txt, seconds in rows[subset]:
            assert wav.suffix == f".{audio}" and wav.parent == target / subset / audio
            assert txt == target / subset / "txt" / f"{wav.stem}.txt"
            assert seconds == pytest.approx(probe_audio(wav).duration, abs=5e-4)
            assert read_transcript(txt) == " ".join(read_transcript(txt).split())
        for line in manifest.read_text().splitlines():  # relative paths, three columns
            wav, txt, seconds = line.split(",")
            assert not wav.startswith("/") and not txt.startswith("/") and float(seconds) > 0
    groups = {"val": ["dev-clean"], "test_clean": ["test-clean"], "train": ["train-clean-100"]}
    for group, subsets in groups.items():
        merged = read_manifest(target / f"libri_{group}_manifest.csv")
        assert sorted(merged) == sorted(r for s in subsets for r in rows[s])
    assert not (target / "libri_test_other_manifest.csv").exists()
    return rows


def test_prepares_miniature_with_drops_counted(archives: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "libri"
    rc, out, err = run(capsys, *base_args(archives, target))
    assert rc == 0, err
    rows = check_manifests(target)
    # FLAC files are the archive's bytes, unchanged
    for wav, _txt, _ in rows["dev-clean"]:
        audio, rate = sf.read(str(wav), dtype="float32")
        assert rate == 16000 and np.abs(audio - AUDIO[wav.stem]).max() < 1e-4
    assert read_transcript(target / "train-clean-100" / "txt" / "26-495-0000.txt") == "I DON'T KNOW"
    # every drop counted once, by reason, in the printed summary and in the marker
    found = drop_lines(out)
    assert found == {("train-clean-100", r): n for r, n in EXPECTED_DROPS["train-clean-100"].items()}
    total = sum(EXPECTED_DROPS["train-clean-100"].values())
    assert f"dropped {total} in all" in out
    marker = json.loads((target / ".librispeech_train-clean-100_complete.json").read_text())
    assert marker["drops"]["counts"] == dict(sorted(EXPECTED_DROPS["train-clean-100"].items()))
    # dev is never pruned by duration: the 3 s utterance stays
    assert any(d == pytest.approx(3.0, abs=1e-3) for *_, d in rows["dev-clean"])
    # dropped audio is not left behind; nothing escaped the target
    stems = {p.stem for p in (target / "train-clean-100" / "flac").iterdir()}
    assert stems == {w.stem for w, *_ in rows["train-clean-100"]}
    assert not (tmp_path / "evil.flac").exists() and not (target.parent.parent / "evil.flac").exists()
    assert not any(p.is_symlink() for p in target.rglob("*"))


def test_rerun_does_nothing_and_changes_redo_only_what_they_touch(
    archives: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "libri"
    assert run(capsys, *base_args(archives, target))[0] == 0
    before = mtimes(target)
    rc, out, _ = run(capsys, *base_args(archives, target))
    assert rc == 0 and "nothing to do" in out
    assert mtimes(target) == before
    # another --max-duration redoes the train subset only
    args = base_args(archives, target)
    args[args.index("--max-duration") + 1] = "3"
    rc, out, err = run(capsys, *args)
    assert rc == 0, err
    assert "train-clean-100: unfinished or made with other settings; redoing it" in out
    assert "dev-clean: already prepared" in out
    after = mtimes(target)
    dev = [p for p in before if "dev-clean" in p.parts]
    assert dev and all(after[p] == before[p] for p in dev)
    assert len(read_manifest(target / "libri_train-clean-100_manifest.csv")) == KEPT["train-clean-100"] + 1


def test_subset_added_later_and_killed_run(
    archives: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "libri"
    args = base_args(archives, target)
    args[args.index("--files-to-use") + 1] = "dev-clean.tar.gz"
    assert run(capsys, *args)[0] == 0
    assert not (target / "libri_test_clean_manifest.csv").exists()
    before = mtimes(target / "dev-clean")
    # a run killed while writing test-clean's transcripts
    calls = []

    def dying(path: Path, text: str) -> None:
        calls.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(librispeech, "write_text", dying)
    rc, _, err = run(capsys, *base_args(archives, target))
    monkeypatch.undo()
    assert rc == 130 and "will be redone" in err and calls
    rc, out, err = run(capsys, *base_args(archives, target))
    assert rc == 0, err
    assert "dev-clean: already prepared" in out
    assert mtimes(target / "dev-clean") == before
    check_manifests(target)


def test_manifest_dir_moves_every_manifest(archives: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target, first, second = tmp_path / "libri", tmp_path / "m1", tmp_path / "m2"
    assert run(capsys, *base_args(archives, target, "--manifest-dir", first))[0] == 0
    assert len(list(first.glob("*.csv"))) == 6 and not list(target.glob("*.csv"))
    assert (first / "libri_val_manifest.csv").read_text().startswith("../libri/dev-clean/flac/")
    rc, _, err = run(capsys, *base_args(archives, target, "--manifest-dir", second))
    assert rc == 0, err
    assert not list(first.glob("*.csv")) and len(list(second.glob("*.csv"))) == 6
    assert len(SpectrogramDataset(second / "libri_train_manifest.csv")) == KEPT["train-clean-100"]


def test_convert_wav(archives: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "libri"
    rc, _, err = run(capsys, *base_args(archives, target, "--convert-wav"))
    assert rc == 0, err
    rows = check_manifests(target, audio="wav")
    assert not list(target.rglob("*.flac"))
    for wav, _, _ in rows["test-clean"]:
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        audio, _ = sf.read(str(wav), dtype="float32")
        assert np.abs(audio - AUDIO[wav.stem]).max() < 1e-3
    # 8 kHz WAV; FLAC again afterwards is a change of settings: redone, the WAV files removed
    rc, _, err = run(capsys, *base_args(archives, target, "--convert-wav", "--sample-rate", "8000"))
    assert rc == 0, err
    wav = read_manifest(target / "libri_test-clean_manifest.csv")[0][0]
    assert sf.info(str(wav)).samplerate == 8000
    assert run(capsys, *base_args(archives, target))[0] == 0
    assert not list(target.rglob("*.wav"))
    check_manifests(target)


def test_checksum_mismatch_of_a_local_copy(archives: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "libri"
    wrong = tmp_path / "md5sum.txt"
    wrong.write_text("0" * 32 + "  dev-clean.tar.gz\n")
    args = base_args(archives, target)
    args[args.index("--md5sums") + 1] = wrong
    args[args.index("--files-to-use") + 1] = "dev-clean"
    rc, _, err = run(capsys, *args)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "dev-clean.tar.gz" in err and "md5 checksum mismatch" in err and "0" * 32 in err
    assert not (target / "dev-clean").exists()
    # the built-in table holds OpenSLR's sums, which the miniatures do not match
    rc, _, err = run(capsys, "--archive-dir", archives, "--target-dir", target, "--files-to-use", "test-clean")
    assert rc == 2 and librispeech.MD5["test-clean.tar.gz"] in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--files-to-use", "dev-cleaner"], ["dev-cleaner", "dev-clean"]),
        (["--files-to-use", ","], ["no subset"]),
        (["--sample-rate", "8000"], ["--convert-wav"]),
        (["--min-duration", "3", "--max-duration", "1"], ["--min-duration"]),
    ],
)
def test_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], words: list[str]) -> None:
    rc, _, err = run(capsys, "--target-dir", tmp_path / "t", *argv)
    assert rc == 2 and err.startswith("error: ") and all(w in err for w in words)
    assert not (tmp_path / "t").exists()


def test_wrong_archive_for_the_subset(archives: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "copies"
    folder.mkdir()
    (folder / "dev-clean.tar.gz").write_bytes((archives / "test-clean.tar.gz").read_bytes())
    md5 = hashlib.md5((folder / "dev-clean.tar.gz").read_bytes()).hexdigest()
    (folder / "sums").write_text(f"{md5}  dev-clean.tar.gz\n")
    rc, _, err = run(
        capsys,
        "--archive-dir",
        folder,
        "--md5sums",
        folder / "sums",
        "--target-dir",
        tmp_path / "t",
        "--files-to-use",
        "dev-clean",
    )
    assert rc == 2 and "LibriSpeech/dev-clean/" in err and "not LibriSpeech's dev-clean.tar.gz" in err


# ---------------------------------------------------------------------------- download


def test_download_resumes_and_checks_md5(archives: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = {f"/12/{s}.tar.gz": (archives / f"{s}.tar.gz").read_bytes() for s in CORPUS}
    target = tmp_path / "libri"
    with serve(files) as server:
        args = [
            "--url-base",
            server.url + "/12/",
            "--md5sums",
            archives / "md5sum.txt",
            "--target-dir",
            target,
            "--files-to-use",
            "dev-clean",
            "--delete-downloads",
        ]
        server.mode = "drop_half"
        rc, _, err = run(capsys, *args)
        assert rc == 2 and "run again to resume" in err
        part = target / "dev-clean.tar.gz.part"
        half = len(files["/12/dev-clean.tar.gz"]) // 2
        assert part.stat().st_size == half
        rc, out, err = run(capsys, *args)
        assert rc == 0, err
        assert server.requests[-1]["range"] == f"bytes={half}-"
        assert not part.exists() and not (target / "dev-clean.tar.gz").exists()  # --delete-downloads
        assert len(read_manifest(target / "libri_dev-clean_manifest.csv")) == KEPT["dev-clean"]
        n = len(server.requests)
        assert "nothing to do" in run(capsys, *args)[1] and len(server.requests) == n

        # a download that does not match the published md5 is deleted and reported
        wrong = tmp_path / "wrong.txt"
        wrong.write_text("f" * 32 + "  test-clean.tar.gz\n")
        rc, _, err = run(
            capsys, "--url-base", server.url + "/12/", "--md5sums", wrong, "--target-dir", target, "--files-to-use", "test-clean"
        )
        assert rc == 2 and "failed its md5 check" in err and "f" * 32 in err and "afresh" in err
        assert not (target / "test-clean.tar.gz").exists() and not (target / "test-clean.tar.gz.part").exists()
        # a missing tarball in --archive-dir is downloaded, the local ones are used as they are
        rc, out, err = run(
            capsys,
            "--url-base",
            server.url + "/12/",
            "--md5sums",
            archives / "md5sum.txt",
            "--archive-dir",
            tmp_path,
            "--target-dir",
            target,
            "--files-to-use",
            "test-clean",
        )
        assert rc == 0, err
        assert "not in --archive-dir" in out
        assert (target / "test-clean.tar.gz").is_file()


def test_runs_as_a_script(archives: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(repo / "data" / "librispeech.py"), *map(str, base_args(archives, tmp_path / "t"))]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LibriSpeech prepared in" in result.stdout
