"""data/ted.py on a miniature TED-LIUM generated here in the real layout: NIST SPHERE talks
(a hand-written NIST_1A header, and soundfile's own NIST writer) and STM segment files."""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data import ted
from data.audio import probe_audio
from data.data_loader import SpectrogramDataset
from data.manifest import read_manifest
from data.text import read_transcript
from tests.corpus_helpers import drop_lines, mtimes, serve, write_tar

RATE = 16000
LABEL = "<o,f0,male>"


def talk_audio(name: str, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * (200 + 400 * rng.random()) * t) + 0.02 * rng.standard_normal(t.size)
    return np.round(x * 32767).astype(np.int16)


def sphere(samples: np.ndarray, coding: str = "pcm", byte_order: str = "01") -> bytes:
    """A NIST SPHERE file with the 1024-byte NIST_1A header written here."""
    fields = [
        "NIST_1A",
        "   1024",
        "database_id -s8 TEDLIUM2",
        f"sample_count -i {len(samples)}",
        "sample_n_bytes -i 2",
        "channel_count -i 1",
        f"sample_byte_format -s2 {byte_order}",
        f"sample_rate -i {RATE}",
        f"sample_coding -s{len(coding)} {coding}",
        "end_head",
    ]
    header = ("\n".join(fields) + "\n").encode("ascii")
    header += b" " * (1024 - len(header))
    return header + samples.astype("<i2" if byte_order == "01" else ">i2").tobytes()


def sphere_by_soundfile(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="NIST", subtype="PCM_16")
    return buffer.getvalue()


TALKS = {  # (TED-LIUM split, talk) -> seconds of audio (None: no .sph in the archive)
    ("train", "AlGore_2009"): 6.0,
    ("train", "BarackObama_2008"): None,
    ("train", "Broken_2010"): 2.0,
    ("dev", "JaneDoe_2012"): 6.0,
    ("test", "JohnSmith_2013"): 3.0,
}
AUDIO = {talk: talk_audio(talk, sec) for (_, talk), sec in TALKS.items() if sec is not None}

STM = {
    ("train", "AlGore_2009"): [
        ";; comment line",
        f"AlGore_2009 1 AlGore_2009 0.00 0.50 {LABEL} ignore_time_segment_in_scoring",
        f"AlGore_2009 1 AlGore_2009 0.50 1.50 {LABEL} so it 's time to <unk> act",
        f"AlGore_2009 1 AlGore_2009 0.50 1.50 {LABEL} the same segment again",
        f"AlGore_2009 1 AlGore_2009 1.50 1.60 {LABEL} ok",  # shorter than --min-duration 0.25
        f"AlGore_2009 1 AlGore_2009 1.60 2.90 {LABEL} {{NOISE}} <sil>",  # nothing left
        f"AlGore_2009 1 AlGore_2009 2.90 3.40 {LABEL} we spent 100 dollars",  # digits
        f"AlGore_2009 1 AlGore_2009 3.00 2.00 {LABEL} backwards",  # end before start
        "AlGore_2009 1 AlGore_2009 oops",  # malformed
        f"AlGore_2009 1 AlGore_2009 3.40 4.20 {LABEL} the climate crisis , really",
        f"AlGore_2009 1 AlGore_2009 0.80 5.90 {LABEL} a very long segment",  # longer than --max-duration 4
        f"AlGore_2009 1 AlGore_2009 6.50 7.00 {LABEL} after the end",  # starts after the audio
    ],
    ("train", "BarackObama_2008"): [f"BarackObama_2008 1 BarackObama_2008 0.0 1.0 {LABEL} yes we can"],
    ("train", "Broken_2010"): [f"Broken_2010 1 Broken_2010 0.0 1.0 {LABEL} broken audio"],
    ("dev", "JaneDoe_2012"): [
        f"JaneDoe_2012 1 JaneDoe_2012 0.30 1.10 {LABEL} hello there",
        f"JaneDoe_2012 1 JaneDoe_2012 1.10 5.80 {LABEL} a long dev segment stays",  # dev is never pruned
    ],
    ("test", "JohnSmith_2013"): [
        f"JohnSmith_2013 1 JohnSmith_2013 0.25 2.75 {LABEL} thank you",
        f"JohnSmith_2013 1 JohnSmith_2013 2.75 3.40 {LABEL} and goodbye",  # end cut at 3.0 s
    ],
}
KEPT = {  # our split -> {utterance id: transcript}
    "train": {"AlGore_2009-0000050-0000150": "SO IT'S TIME TO ACT", "AlGore_2009-0000340-0000420": "THE CLIMATE CRISIS REALLY"},
    "val": {"JaneDoe_2012-0000030-0000110": "HELLO THERE", "JaneDoe_2012-0000110-0000580": "A LONG DEV SEGMENT STAYS"},
    "test": {"JohnSmith_2013-0000025-0000275": "THANK YOU", "JohnSmith_2013-0000275-0000340": "AND GOODBYE"},
}
EXPECTED_DROPS = {
    ("train", ted.IGNORED): 1,
    ("train", ted.TWICE): 1,
    ("train", "shorter than --min-duration 0.25 s"): 1,
    ("train", ted.EMPTY): 1,
    ("train", ted.BAD_CHARS): 1,
    ("train", ted.BAD_TIMES): 1,
    ("train", ted.MALFORMED): 1,
    ("train", "longer than --max-duration 4 s"): 1,
    ("train", ted.OUTSIDE): 1,
    ("train", ted.NO_AUDIO): 1,
    ("train", ted.BAD_AUDIO): 1,
    ("archive", "unsafe archive member (absolute path, '..', link or device), refused"): 2,
}


def corpus_files(root: str = "TEDLIUM_release2/") -> dict[str, bytes]:
    files = {}
    for (split, talk), seconds in TALKS.items():
        if seconds is not None:
            if talk == "Broken_2010":
                data = b"NIST_1A\n   1024\nthis is not a sphere header\n"
            elif split == "test":
                data = sphere_by_soundfile(AUDIO[talk])
            else:
                data = sphere(AUDIO[talk], byte_order="10" if split == "dev" else "01")
            files[f"{root}{split}/sph/{talk}.sph"] = data
        files[f"{root}{split}/stm/{talk}.stm"] = ("\n".join(STM[(split, talk)]) + "\n").encode()
    return files


def corpus_archive(path: Path, root: str = "TEDLIUM_release2/", extra: dict | None = None) -> Path:
    members: dict[str, object] = dict(sorted(corpus_files(root).items()))  # sorted: .sph before .stm
    members.update(extra or {})
    members["../outside.stm"] = b"x"
    members["/abs/train/sph/evil.sph"] = b"x"
    return write_tar(path, members)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus_archive(tmp_path_factory.mktemp("ted") / "TEDLIUM_release2.tar.gz")


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    rc = ted.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def args_for(archive: Path, target: Path, *extra: object) -> list[object]:
    return ["--archive", archive, "--target-dir", target, "--min-duration", "0.25", "--max-duration", "4", *extra]


def check_target(target: Path) -> None:
    for split, expected in KEPT.items():
        manifest = target / f"ted_{split}_manifest.csv"
        rows = read_manifest(manifest)
        assert {w.stem: read_transcript(t) for w, t, _ in rows} == expected, split
        assert len(SpectrogramDataset(manifest)) == len(expected)  # the loader's own checks
        assert [d for *_, d in rows] == sorted(d for *_, d in rows)
        for wav, _, seconds in rows:
            assert seconds == pytest.approx(probe_audio(wav).duration, abs=5e-4)
            talk, start, end = wav.stem.rsplit("-", 2)
            first = round(int(start) / 100 * RATE)
            last = min(round(int(end) / 100 * RATE), len(AUDIO[talk]))
            samples, rate = sf.read(str(wav), dtype="int16")
            assert rate == RATE
            np.testing.assert_array_equal(samples, AUDIO[talk][first:last])  # cut exactly, lossless


def test_soundfile_reads_nist_sphere() -> None:
    """The precondition of data/ted.py: libsndfile decodes uncompressed NIST SPHERE."""
    x = talk_audio("probe", 0.5)
    for data in (sphere(x), sphere(x, byte_order="10"), sphere_by_soundfile(x)):
        assert data[:7] == b"NIST_1A"
        info = sf.info(io.BytesIO(data))
        assert (info.format, info.samplerate, info.frames) == ("NIST", RATE, len(x))
        y, _ = sf.read(io.BytesIO(data), dtype="int16")
        np.testing.assert_array_equal(y, x)
    assert ted.sphere_coding(sphere(x)) == "pcm"
    assert ted.sphere_coding(sphere_by_soundfile(x)) == "pcm"
    with pytest.raises(sf.LibsndfileError):  # what a shorten-compressed file does
        sf.read(io.BytesIO(sphere(x, coding="pcm,embedded-shorten-v2.00")))


def test_prepares_miniature(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "ted"
    rc, out, err = run(capsys, *args_for(archive, target))
    assert rc == 0, err
    check_target(target)
    assert drop_lines(out) == EXPECTED_DROPS
    assert f"dropped {sum(EXPECTED_DROPS.values())} in all" in out
    assert f"note for train: 1 {ted.MARKERS_REMOVED}" in out
    marker = json.loads((target / ted.MARKER).read_text())
    assert marker["archive"]["root"] == "TEDLIUM_release2/"
    assert marker["drops"]["train"][ted.NO_AUDIO] == 1
    assert not (tmp_path / "outside.stm").exists()
    before = mtimes(target)
    rc, out, _ = run(capsys, *args_for(archive, target))
    assert rc == 0 and "nothing to do" in out
    assert mtimes(target) == before
    # another sample rate is another setting: redone
    rc, out, err = run(capsys, *args_for(archive, target, "--sample-rate", "8000"))
    assert rc == 0 and "redoing" in out, err
    wav = read_manifest(target / "ted_test_manifest.csv")[0][0]
    assert sf.info(str(wav)).samplerate == 8000


def test_release3_layout_and_folder_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = corpus_files("TEDLIUM_release-3/legacy/")
    files.update(corpus_files("TEDLIUM_release-3/speaker-adaptation/"))
    files["TEDLIUM_release-3/data/sph/AlGore_2009.sph"] = sphere(AUDIO["AlGore_2009"])
    folder = tmp_path / "extracted"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    target = tmp_path / "ted"
    rc, out, err = run(capsys, *args_for(folder, target))
    assert rc == 0, err
    assert "TEDLIUM_release-3/legacy/" in out
    check_target(target)
    # two candidate layouts and neither is legacy/: ambiguous
    two = {**corpus_files("a/"), **corpus_files("b/")}
    archive = write_tar(tmp_path / "two.tar.gz", two)
    rc, _, err = run(capsys, *args_for(archive, tmp_path / "t2"))
    assert rc == 2 and "several folders" in err and "a/" in err and "b/" in err


def test_shorten_compressed_sphere_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = corpus_files()
    files["TEDLIUM_release2/test/sph/JohnSmith_2013.sph"] = sphere(AUDIO["JohnSmith_2013"], coding="pcm,embedded-shorten-v2.00")
    archive = write_tar(tmp_path / "shorten.tar.gz", files)
    rc, _, err = run(capsys, *args_for(archive, tmp_path / "t"))
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "JohnSmith_2013.sph" in err and "shorten" in err and "sph2pipe" in err


def test_not_ted_and_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = write_tar(tmp_path / "other.tar.gz", {"README": b"hello"})
    rc, _, err = run(capsys, *args_for(other, tmp_path / "t"))
    assert rc == 2 and "does not look like TED-LIUM" in err
    rc, _, err = run(capsys, "--archive", tmp_path / "nope.tgz", "--target-dir", tmp_path / "t2")
    assert rc == 2 and "not found" in err
    rc, _, err = run(capsys, "--sha256", "abc", "--target-dir", tmp_path / "t3")
    assert rc == 2 and "--sha256" in err
    assert not (tmp_path / "t2").exists() and not (tmp_path / "t3").exists()


def test_download_resumes_and_checks_sha256(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = archive.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    target = tmp_path / "ted"
    with serve({"/19/TEDLIUM_release2.tar.gz": data}) as server:
        url = server.url + "/19/TEDLIUM_release2.tar.gz"
        args = ["--url", url, "--sha256", sha, "--target-dir", target, "--min-duration", "0.25", "--max-duration", "4"]
        server.mode = "drop_half"
        rc, _, err = run(capsys, *args)
        assert rc == 2 and "run again to resume" in err
        assert (target / "TEDLIUM_release2.tar.gz.part").stat().st_size == len(data) // 2
        rc, out, err = run(capsys, *args)
        assert rc == 0, err
        assert server.requests[-1]["range"] == f"bytes={len(data) // 2}-"
        check_target(target)
        n = len(server.requests)
        rc, out, _ = run(capsys, *args)
        assert rc == 0 and "nothing to do" in out and len(server.requests) == n
        # the built-in checksum (torchaudio's, for the real release) does not match the miniature
        rc, _, err = run(capsys, "--url", url, "--target-dir", tmp_path / "other")
        assert rc == 2 and "failed its sha256 check" in err and ted.RELEASES["2"][1] in err
        assert not list((tmp_path / "other").glob("TEDLIUM_release2.tar.gz*"))
