"""data/prep.py (what the corpus scripts share) and the manifests' optional duration column."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
from pathlib import Path

import pytest

from data import prep
from data.data_loader import SpectrogramDataset
from data.manifest import ManifestError, read_manifest, write_manifest
from tests.corpus_helpers import SYMLINK, serve, write_tar

# ---------------------------------------------------------------------------- manifests with durations


def test_manifest_duration_column_round_trip(tiny_dataset: Path, tmp_path: Path) -> None:
    pairs = read_manifest(tiny_dataset)
    rows = [(w, t, 0.4 + 0.1 * i) for i, (w, t, _) in enumerate(pairs)]
    out = tmp_path / "with_durations.csv"
    write_manifest(out, rows)
    assert out.read_text().splitlines()[0] == "wav/u0.wav,txt/u0.txt,0.400"
    assert read_manifest(out) == [(w, t, pytest.approx(d)) for w, t, d in rows]
    # two-column manifests carry no duration
    assert [d for *_, d in read_manifest(tiny_dataset)] == [None] * len(pairs)
    # mixed rows and a None duration (written as two columns) are fine
    write_manifest(out, [rows[0], pairs[1][:2], (*pairs[2][:2], None)])
    assert [d for *_, d in read_manifest(out)] == [pytest.approx(0.4), None, None]
    assert len(SpectrogramDataset(out)) == 3


@pytest.mark.parametrize("third", ["abc", "-1", "nan", "inf", ""])
def test_bad_duration_column(tiny_dataset: Path, third: str) -> None:
    lines = tiny_dataset.read_text().splitlines()
    lines[1] = lines[1] + "," + third
    tiny_dataset.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=f"{tiny_dataset}:2: expected 'wav_path,transcript_path\\[,duration"):
        read_manifest(tiny_dataset)


def test_sorted_manifest(tmp_path: Path) -> None:
    rows = [
        (tmp_path / "b.wav", tmp_path / "b.txt", 1.0),
        (tmp_path / "a.wav", tmp_path / "a.txt", 1.0),
        (tmp_path / "c.wav", tmp_path / "c.txt", 0.5),
    ]
    ordered = prep.write_sorted_manifest(tmp_path / "m.csv", rows)
    assert [r[0].stem for r in ordered] == ["c", "a", "b"]
    assert (tmp_path / "m.csv").read_text().splitlines() == ["c.wav,c.txt,0.500", "a.wav,a.txt,1.000", "b.wav,b.txt,1.000"]


# ---------------------------------------------------------------------------- archives


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a/b.wav", "a/b.wav"),
        ("./a//b.wav", "a/b.wav"),
        ("/etc/passwd", None),
        ("../x", None),
        ("a/../../x", None),
        ("C:/x", None),
        ("\\\\server\\x", None),
        ("", None),
        (".", None),
    ],
)
def test_safe_member_name(name: str, expected: str | None) -> None:
    assert prep.safe_member_name(name) == expected


def _tar_bytes(members: dict[str, object]) -> bytes:
    path_free = io.BytesIO()
    with tarfile.open(fileobj=path_free, mode="w") as tar:
        for name, value in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(value, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, value[1]
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return path_free.getvalue()


MEMBERS = {"x/a.txt": b"a", "x/sub/b.txt": b"bb", "../evil.txt": b"e", "/abs.txt": b"f", "x/link": (SYMLINK, "/etc")}


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, bz2.compress, lzma.compress])
def test_iter_archive_any_compression_refuses_unsafe_members(tmp_path: Path, compress) -> None:
    path = tmp_path / "a.tar"
    path.write_bytes(compress(_tar_bytes(MEMBERS)))
    drops = prep.Drops()
    files = {m.name: m.read() for m in prep.iter_archive(path, drops)}
    assert files == {"x/a.txt": b"a", "x/sub/b.txt": b"bb"}
    assert drops.counts == {prep.UNSAFE_MEMBER: 3}


def test_iter_archive_folder(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_bytes(b"a")
    (tmp_path / "d" / "sub" / "b.txt").write_bytes(b"bb")
    (tmp_path / "outside.txt").write_bytes(b"o")
    (tmp_path / "d" / "link.txt").symlink_to(tmp_path / "outside.txt")
    drops = prep.Drops()
    files = {m.name: m.read() for m in prep.iter_archive(tmp_path / "d", drops)}
    assert files == {"a.txt": b"a", "sub/b.txt": b"bb"}
    assert drops.counts == {prep.UNSAFE_MEMBER: 1}


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:-4], "truncated"),
        (lambda b: b"", "empty"),
        (lambda b: b"not an archive at all" * 30, "corrupt or not a tar archive"),
    ],
)
def test_iter_archive_damaged(tmp_path: Path, damage, words: str) -> None:
    good = write_tar(tmp_path / "good.tar.gz", {f"f{i}": bytes(range(256)) * 40 for i in range(5)})
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(prep.PrepError, match=words) as info:
        for member in prep.iter_archive(bad, hint="Get a fresh copy."):
            member.read()
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------- checksums and download


def test_read_checksum_file(tmp_path: Path) -> None:
    path = tmp_path / "md5sum.txt"
    path.write_text(f"# comment\n{'a' * 32}  dev-clean.tar.gz\n{'B' * 32} *sub/test-clean.tar.gz\n\n")
    assert prep.read_checksum_file(path) == {"dev-clean.tar.gz": "a" * 32, "test-clean.tar.gz": "b" * 32}
    path.write_text("not a checksum line\n")
    with pytest.raises(prep.PrepError, match="md5sum.txt:1"):
        prep.read_checksum_file(path)


def test_download_checksum_and_resume(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    sha = hashlib.sha256(payload).hexdigest()
    with serve({"/f.bin": payload}) as server:
        dest = tmp_path / "f.bin"
        dest.with_name("f.bin.part").write_bytes(payload[:1000])  # a partial earlier download
        assert prep.download(server.url + "/f.bin", dest, ("sha256", sha)) == dest
        assert server.requests[-1]["range"] == "bytes=1000-" and dest.read_bytes() == payload
        # a .part holding wrong bytes is caught by the checksum and deleted
        other = tmp_path / "g.bin"
        other.with_name("g.bin.part").write_bytes(b"X" * 1000)
        with pytest.raises(prep.PrepError, match="failed its sha256 check.*afresh"):
            prep.download(server.url + "/f.bin", other, ("sha256", sha), "the publisher")
        assert not other.exists() and not other.with_name("g.bin.part").exists()
        assert prep.download(server.url + "/f.bin", other, ("sha256", sha)).read_bytes() == payload
        with pytest.raises(prep.PrepError, match="HTTP 404"):
            prep.download(server.url + "/missing", tmp_path / "m.bin")


# ---------------------------------------------------------------------------- layout and drops


def test_layout_completion_and_clean(tmp_path: Path) -> None:
    target = tmp_path / "t"
    out = prep.Layout(target, target, ("train",), ".x_complete.json", {"train": "x_train.csv"})
    out.prepare_folders()
    wav, txt = target / "train" / "wav" / "a.wav", target / "train" / "txt" / "a.txt"
    wav.write_bytes(b"RIFF")
    txt.write_text("A\n")
    (target / "train" / "notes.md").write_text("mine")
    (target / "x_train.csv").write_text("train/wav/a.wav,train/txt/a.txt,0.100\n")
    settings = {"format": 1, "manifest_dir": "."}
    assert not out.is_complete(settings)
    out.write_marker(settings, archive={"sha256": "abc"})
    assert out.is_complete(settings) and out.is_complete(settings, {"sha256": "abc"})
    assert not out.is_complete(settings, {"sha256": "def"}) and not out.is_complete({"format": 2})
    wav.write_bytes(b"RIFF....")  # a changed file
    assert not out.is_complete(settings)
    out.clean()
    assert not wav.exists() and not txt.exists() and not (target / "x_train.csv").exists()
    assert not out.marker_path.exists() and (target / "train" / "notes.md").read_text() == "mine"


def test_drops_report_and_round_trip(capsys: pytest.CaptureFixture) -> None:
    drops = prep.Drops()
    drops.add("empty transcript", "u1")
    drops.add("empty transcript", "u2")
    drops.add("unreadable audio", "u3")
    assert drops.total == 3
    assert drops.lines("train") == [
        "  dropped in train: 2 empty transcript (e.g. u1)",
        "  dropped in train: 1 unreadable audio (e.g. u3)",
    ]
    again = prep.drops_from_dict(prep.drops_to_dict(drops))
    assert again.counts == drops.counts and again.examples == drops.examples
    prep.print_summary("done:", [("train", 5, 7200.0, Path("m.csv"))], {"train": drops})
    out = capsys.readouterr().out
    assert "train       5 utterances    2.000 h  m.csv" in out and "dropped 3 in all" in out
    assert prep.duration_drop_reason(0.5, 1.0, None) == "shorter than --min-duration 1 s"
    assert prep.duration_drop_reason(20.0, None, 15.0) == "longer than --max-duration 15 s"
    assert prep.duration_drop_reason(5.0, 1.0, 15.0) is None
