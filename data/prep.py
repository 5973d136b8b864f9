"""What the corpus preparation scripts share (``data/an4.py``, ``data/librispeech.py``,
``data/common_voice.py``, ``data/ted.py``).

* :func:`download`: resumable download through a ``.part`` file (HTTP Range), with the
  published checksum checked before the file gets its final name.
* :func:`file_digest` / :func:`check_checksum` / :func:`read_checksum_file`.
* :func:`iter_archive`: the regular files of a tar archive (gzip, bzip2, xz or none) or of
  an extracted folder, streamed once. Member names are checked: absolute paths, ``..``
  components, links and devices are refused (counted, never read or written).
  Nothing is ever extracted under a member's own name; the scripts choose every output path.
* :class:`Drops`: every utterance left out, counted by reason, printed in the summary.
* :class:`Layout`: the ``<split>/{wav,txt}/`` output folders, manifests and completion
  marker of one preparation; a finished one with the same settings is left alone, an
  unfinished one is cleaned (only the files the scripts write) and redone.
* :func:`normalize_transcript`: the text rule that maps free text onto the labels.
* audio helpers (:func:`decode_audio`, :func:`to_int16`, :func:`write_wav`) and
  :func:`write_sorted_manifest` (duration-sorted rows with the duration column).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import http.client
import io
import json
import lzma
import os
import re
import sys
import tarfile
import unicodedata
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf
from tqdm import tqdm

from data.audio import AudioError, resample
from data.manifest import ManifestError, write_manifest
from data.text import LABELS, TranscriptError


class PrepError(Exception):
    """A problem with the user's input (archive, flags, download); the message names the file."""


def progress(**kwargs) -> tqdm:
    """A tqdm bar on stderr, shown only when stderr is a terminal, gone when done."""
    kwargs.setdefault("leave", False)
    return tqdm(disable=None, **kwargs)


# ---------------------------------------------------------------------------- checksums


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``algorithm``: any hashlib name, e.g. "md5", "sha256")."""
    path = Path(path)
    digest = hashlib.new(algorithm)
    with (
        open(path, "rb") as f,
        progress(total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{algorithm} {path.name}") as bar,
    ):
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def check_checksum(path: Path, algorithm: str, expected: str, source: str) -> None:
    """Raise PrepError when ``path``'s digest is not ``expected`` (``source`` says where
    the expected value comes from, for the message)."""
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise PrepError(
            f"{path}: {algorithm} checksum mismatch: expected {expected.lower()} ({source}), got {actual}; "
            "the file is damaged or not the published one"
        )


def read_checksum_file(path: str | Path) -> dict[str, str]:
    """``md5sum``/``sha256sum`` output (``<hex>  <name>`` per line) as {name: hex}."""
    path = Path(path)
    sums: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PrepError(f"{path}: checksum file not found") from None
    except UnicodeDecodeError:
        raise PrepError(f"{path}: not a text checksum file") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"\s*([0-9a-fA-F]{32,128})\s+\*?(\S.*?)\s*", line)
        if not m:
            raise PrepError(f"{path}:{n}: expected '<hex digest>  <file name>', got {line.strip()!r}")
        sums[PurePosixPath(m.group(2)).name] = m.group(1).lower()
    return sums


# ---------------------------------------------------------------------------- download


def download(
    url: str,
    dest: Path,
    checksum: tuple[str, str] | None = None,
    checksum_source: str = "published checksum",
    hint: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part`` with
    an HTTP Range request (a server that ignores Range restarts it).

    ``dest`` appears only once the download is complete and, when ``checksum``
    (``(algorithm, hex)``) is given, has that digest; a complete download with another
    digest is deleted (a resumed ``.part`` may hold stale bytes) and reported. Raises
    PrepError naming the URL on failure.
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "deepspeech-ctc data preparation"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    hint = hint or f"check the network, or download {url} by hand"
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the .part may already hold everything
            total = _content_range_total(e.headers.get("Content-Range"))
            if total == start:
                return _finish(part, dest, url, checksum, checksum_source)
            part.unlink()
            return download(url, dest, checksum, checksum_source, hint, timeout)
        raise PrepError(f"cannot download {url}: HTTP {e.code} {e.reason}; {hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise PrepError(f"cannot download {url} ({reason}); {hint}") from None
    with response:
        if start and response.status == 206:
            first = _content_range_start(response.headers.get("Content-Range"))
            if first != start:
                raise PrepError(f"cannot resume {url}: the server sent bytes from {first}, not {start}; delete {part}")
            total = _content_range_total(response.headers.get("Content-Range"))
            mode = "ab"
        else:
            start, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        received = start
        try:
            with (
                open(part, mode) as f,
                progress(
                    total=total,
                    initial=start,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=f"downloading {dest.name}",
                ) as bar,
            ):
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise PrepError(
                f"download of {url} interrupted after {received} bytes ({e}); run again to resume from {part}"
            ) from None
    if total is not None and received != total:
        raise PrepError(f"download of {url} incomplete ({received} of {total} bytes); run again to resume from {part}")
    return _finish(part, dest, url, checksum, checksum_source)


def _finish(part: Path, dest: Path, url: str, checksum: tuple[str, str] | None, source: str) -> Path:
    if checksum is not None:
        algorithm, expected = checksum
        actual = file_digest(part, algorithm)
        if actual != expected.lower():
            part.unlink()
            raise PrepError(
                f"download of {url} failed its {algorithm} check: expected {expected.lower()} ({source}), "
                f"got {actual}; the download was deleted, run again to download it afresh"
            )
    os.replace(part, dest)
    return dest


def _content_range_start(value: str | None) -> int | None:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    return int(m.group(1)) if m else None


def _content_range_total(value: str | None) -> int | None:
    m = re.fullmatch(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*", value or "")
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------- archives


UNSAFE_MEMBER = "unsafe archive member (absolute path, '..', link or device), refused"

_READ_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError, tarfile.TarError, OSError)


@dataclass
class Member:
    """One regular file of an archive or folder. ``read()`` works only while the
    iteration that produced it is at this member (tar archives are streamed)."""

    name: str  # posix path inside the archive, no leading "./"
    size: int
    read: Callable[[], bytes]


def safe_member_name(name: str) -> str | None:
    """``name`` without a leading ``./``, or None when it is absolute or has a ``..`` part."""
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def archive_error(archive: Path, err: BaseException, hint: str) -> PrepError:
    """A one-line PrepError for an archive that cannot be read."""
    if isinstance(err, gzip.BadGzipFile):
        what = "is not a gzip-compressed tar archive"
    elif isinstance(err, EOFError):
        what = "is truncated (the compressed stream ends early; the download or copy is incomplete)"
    else:
        what = f"is corrupt or not a tar archive ({type(err).__name__}: {err})"
    return PrepError(f"{archive} {what}. {hint}")


class _CountingReader(io.RawIOBase):
    """A read-only file that moves a progress bar by the bytes read through it."""

    def __init__(self, raw: io.BufferedReader, bar: tqdm) -> None:
        self._raw, self._bar = raw, bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        self._bar.update(n or 0)
        return n


def _decompressor(raw: io.RawIOBase, magic: bytes, compression: str | None):
    if compression == "gzip" or (compression is None and magic.startswith(b"\x1f\x8b")):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression is None and magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb")
    if compression is None and magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb")
    return io.BufferedReader(raw)


def iter_archive(
    source: str | Path,
    drops: Drops | None = None,
    hint: str = "",
    compression: str | None = None,
    desc: str | None = None,
) -> Iterator[Member]:
    """The regular files of a tar archive or of a folder, in archive (or sorted) order.

    A tar archive is streamed once, then its compressed stream is read to the end, so a
    truncated or corrupt file fails here (gzip CRC and length checked). ``compression``
    None detects gzip/bzip2/xz/none from the first bytes; "gzip" insists on gzip.
    Unsafe members are skipped and counted in ``drops`` under :data:`UNSAFE_MEMBER`;
    folders and links inside an extracted folder are not followed. Read errors raise
    PrepError naming the archive, with ``hint`` appended.
    """
    source = Path(source)
    if source.is_dir():
        yield from _iter_folder(source, drops)
        return
    size = source.stat().st_size
    if size == 0:
        raise PrepError(f"{source} is empty (0 bytes). {hint}".strip())
    try:
        with (
            open(source, "rb", buffering=0) as raw_file,
            progress(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or f"reading {source.name}") as bar,
        ):
            magic = raw_file.read(6)
            raw_file.seek(0)
            raw = _CountingReader(raw_file, bar)
            with _decompressor(raw, magic, compression) as stream:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for info in tar:
                        if info.isdir():
                            continue
                        name = safe_member_name(info.name)
                        if name is None or not info.isfile():
                            if drops is not None:
                                drops.add(UNSAFE_MEMBER, info.name)
                            continue

                        def read(info: tarfile.TarInfo = info, tar: tarfile.TarFile = tar) -> bytes:
                            try:
                                return tar.extractfile(info).read()
                            except _READ_ERRORS as e:
                                raise archive_error(source, e, hint) from None

                        yield Member(name, info.size, read)
                while stream.read(1 << 20):
                    pass
    except _READ_ERRORS as e:
        raise archive_error(source, e, hint) from None


def _iter_folder(root: Path, drops: Drops | None) -> Iterator[Member]:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(folder)
        for name in sorted(files):
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not path.is_file():
                if drops is not None:
                    drops.add(UNSAFE_MEMBER, rel)
                continue
            yield Member(rel, path.stat().st_size, path.read_bytes)


# ---------------------------------------------------------------------------- drops


@dataclass
class Drops:
    """Utterances (and refused archive members) left out, counted by reason."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, item: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        self.examples.setdefault(reason, item)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self, where: str) -> list[str]:
        """One line per reason: ``  dropped in train: 2 empty transcript (e.g. x-1)``."""
        return [
            f"  dropped in {where}: {n} {reason} (e.g. {self.examples[reason]})"
            for reason, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    def to_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def duration_drop_reason(seconds: float, min_duration: float | None, max_duration: float | None) -> str | None:
    """The drop reason for an utterance outside ``[min_duration, max_duration]``, else None."""
    if min_duration is not None and seconds < min_duration:
        return f"shorter than --min-duration {min_duration:g} s"
    if max_duration is not None and seconds > max_duration:
        return f"longer than --max-duration {max_duration:g} s"
    return None


def print_summary(title: str, rows: Sequence[tuple[str, int, float, Path]], drops: dict[str, Drops]) -> None:
    """The closing report: one line per manifest, then every drop by split and reason."""
    print(title)
    width = max(len(r[0]) for r in rows) if rows else 5
    for name, n, seconds, path in rows:
        print(f"  {name:<{width}} {n:7d} utterances {seconds / 3600:8.3f} h  {path}")
    total = sum(d.total for d in drops.values())
    print(f"dropped {total} in all" + (", by split and reason:" if total else ""))
    for where, d in drops.items():
        for line in d.lines(where):
            print(line)


def drops_from_dict(data: object) -> Drops:
    """A :class:`Drops` back from the ``{"counts": ..., "examples": ...}`` a marker stores."""
    drops = Drops()
    if isinstance(data, dict):
        counts, examples = data.get("counts", {}), data.get("examples", {})
        if isinstance(counts, dict) and isinstance(examples, dict):
            drops.counts = {str(k): int(v) for k, v in counts.items()}
            drops.examples = {str(k): str(examples.get(k, "")) for k in counts}
    return drops


def drops_to_dict(drops: Drops) -> dict:
    return {"counts": drops.to_dict(), "examples": dict(sorted(drops.examples.items()))}


# ---------------------------------------------------------------------------- command line


def add_common_args(parser: argparse.ArgumentParser, target_default: str) -> None:
    """--target-dir, --manifest-dir, --min-duration, --max-duration."""
    parser.add_argument(
        "--target-dir",
        type=Path,
        default=Path(target_default),
        help="where the audio/txt folders (and by default the manifests) go",
    )
    parser.add_argument(
        "--manifest-dir",
        type=Path,
        default=None,
        help="where the manifests go (None: the target dir); paths in them are relative to it",
    )
    parser.add_argument(
        "--min-duration",
        type=float,
        default=None,
        help="drop training utterances shorter than this many seconds (dev/test are never pruned)",
    )
    parser.add_argument(
        "--max-duration",
        type=float,
        default=None,
        help="drop training utterances longer than this many seconds (dev/test are never pruned)",
    )


def check_common_args(args: argparse.Namespace) -> tuple[Path, Path]:
    """Validate the common flags; returns the resolved (target, manifest_dir)."""
    for name in ("min_duration", "max_duration"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise PrepError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.min_duration is not None and args.max_duration is not None and args.min_duration > args.max_duration:
        raise PrepError(f"--min-duration {args.min_duration} is larger than --max-duration {args.max_duration}")
    if getattr(args, "sample_rate", None) is not None and args.sample_rate <= 0:
        raise PrepError(f"--sample-rate must be a positive number of Hz, got {args.sample_rate}")
    if args.target_dir.exists() and not args.target_dir.is_dir():
        raise PrepError(f"{args.target_dir}: --target-dir exists and is not a folder")
    target = args.target_dir.resolve()
    return target, (args.manifest_dir or args.target_dir).resolve()


def run_cli(prepare: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``prepare(args)``: a user error is one ``error: ...`` line on stderr and exit
    status 2; Ctrl-C says the target will be redone and exits with 130."""
    try:
        return prepare(args)
    except (PrepError, TranscriptError, AudioError, ManifestError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {args.target_dir} is unfinished and will be redone by the next run", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------- text


CURLY_APOSTROPHES = "\u2019\u2018\u02bc\u02b9\u0060\u00b4\u2032"  # ’ ‘ ʼ ʹ ` ´ ′


def normalize_transcript(text: str, labels: Sequence[str] = LABELS, strip_accents: bool = False) -> str:
    """Map free text (a Common Voice sentence, a TED-LIUM segment) onto ``labels``.

    The rule, in order:

    1. Unicode NFC; with ``strip_accents`` NFKD instead, and combining marks are removed
       (``é`` -> ``e``, ``ﬁ`` -> ``fi``).
    2. Curly apostrophes and look-alikes (``’ ‘ ʼ ʹ ` ´ ′``) become ``'``.
    3. Upper case, when the labels hold no lower-case letter.
    4. Characters in the labels are kept (the blank, index 0, never is); whitespace,
       punctuation (Unicode P*) and symbols (S*) become a space, so ``well-known``
       becomes ``WELL KNOWN``; format and control characters (C*: a soft hyphen, a
       zero-width space) are removed; a word made only of apostrophes is removed.
    5. Runs of whitespace collapse to one space, ends are stripped.

    Anything else (a digit, a letter outside the labels) cannot be mapped: ValueError
    naming the characters. An empty result is returned as "" (the caller drops it).
    """
    text = unicodedata.normalize("NFKD" if strip_accents else "NFC", text)
    if strip_accents:
        text = "".join(c for c in text if not unicodedata.combining(c))
    for c in CURLY_APOSTROPHES:
        text = text.replace(c, "'")
    if not any(c.islower() for c in labels):
        text = text.upper()
    keep = set(labels[1:])
    out = []
    bad = set()
    for c in text:
        if c in keep:
            out.append(c)
        elif c.isspace() or unicodedata.category(c)[0] in "PS":
            out.append(" ")
        elif unicodedata.category(c)[0] == "C":
            continue
        else:
            bad.add(c)
    if bad:
        raise ValueError("characters outside the labels: " + ", ".join(repr(c) for c in sorted(bad)))
    words = [w for w in "".join(out).split() if w.strip("'")]
    return " ".join(words)


# ---------------------------------------------------------------------------- audio


def decode_audio(data: bytes | Path, what: str | Path) -> tuple[np.ndarray, int]:
    """Any soundfile format (bytes or a path) -> (mono float32 samples, sample rate).

    Raises AudioError naming ``what`` when it cannot be decoded or holds no samples.
    """
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{what}: cannot decode audio ({e})") from None
    if audio.shape[0] == 0:
        raise AudioError(f"{what}: audio holds no samples")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioError(f"{what}: audio holds NaN or infinite samples")
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def to_int16(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Float samples in [-1, 1] at ``rate`` -> int16 samples at ``target_rate``."""
    audio = resample(audio, rate, target_rate)
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV; PrepError naming the file when it cannot be written."""
    try:
        sf.write(str(path), samples, rate, subtype="PCM_16", format="WAV")
    except (sf.LibsndfileError, OSError) as e:
        raise PrepError(f"{path}: cannot write the WAV file ({e})") from None


def write_text(path: Path, text: str) -> None:
    path.write_text(text + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- output layout


def write_sorted_manifest(path: Path, rows: Iterable[tuple[Path, Path, float]]) -> list[tuple[Path, Path, float]]:
    """Write ``wav,txt,seconds`` rows, shortest first (ties by wav path), paths relative
    to the manifest's folder; returns the rows in that order."""
    ordered = sorted(rows, key=lambda r: (r[2], Path(r[0]).as_posix()))
    write_manifest(path, ordered)
    return ordered


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


AUDIO_FOLDERS = (("wav", "*.wav"), ("flac", "*.flac"))


@dataclass
class Layout:
    """The files one preparation writes under ``target``::

        <split>/wav/*.wav (or <split>/flac/*.flac)   <split>/txt/*.txt
        <manifest_dir>/<manifest_names[split]>        <target>/<marker>

    The marker is written last and records the settings, the archive and a summary of
    the files (counts and bytes), so a later run can tell a finished preparation from a
    killed or tampered one. :meth:`clean` removes only these files.
    """

    target: Path
    manifest_dir: Path
    splits: tuple[str, ...]
    marker: str
    manifest_names: dict[str, str]
    audio: str = "wav"

    @property
    def marker_path(self) -> Path:
        return self.target / self.marker

    def manifest_paths(self, manifest_dir: Path | None = None) -> dict[str, Path]:
        folder = manifest_dir or self.manifest_dir
        return {split: folder / self.manifest_names[split] for split in self.splits}

    def files_summary(self) -> dict[str, dict[str, int]]:
        summary = {}
        for split in self.splits:
            audio = list((self.target / split / self.audio).glob(f"*.{self.audio}"))
            summary[split] = {
                self.audio: len(audio),
                f"{self.audio}_bytes": sum(p.stat().st_size for p in audio),
                "txt": len(list((self.target / split / "txt").glob("*.txt"))),
            }
        return summary

    def read_marker(self) -> dict | None:
        return read_json(self.marker_path)

    def is_complete(self, settings: dict, archive: dict | None = None) -> bool:
        """True when the marker holds ``settings`` (and each ``archive`` key's value) and
        every manifest and output file it recorded is still there, unchanged in size."""
        marker = self.read_marker()
        if marker is None or marker.get("settings") != settings:
            return False
        recorded = marker.get("archive")
        if archive and (not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in archive.items())):
            return False
        if not all(p.is_file() for p in self.manifest_paths().values()):
            return False
        return marker.get("files") == self.files_summary()

    def started(self) -> bool:
        """Whether any file of an earlier run is here (finished or not)."""
        return self.marker_path.exists() or any((self.target / s).exists() for s in self.splits)

    def clean(self) -> None:
        """Remove everything an earlier (possibly killed) run wrote; nothing else."""
        manifest_dirs = {self.manifest_dir}
        old = self.read_marker()
        old_dir = old.get("settings", {}).get("manifest_dir") if old else None
        if isinstance(old_dir, str):
            manifest_dirs.add(self.target / old_dir)
        self.marker_path.unlink(missing_ok=True)
        self.marker_path.with_name(self.marker + ".tmp").unlink(missing_ok=True)
        for folder in manifest_dirs:
            for path in self.manifest_paths(folder).values():
                path.unlink(missing_ok=True)
                path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        for split in self.splits:
            for sub, pattern in (*AUDIO_FOLDERS, ("txt", "*.txt")):
                folder = self.target / split / sub
                if folder.is_dir():
                    for path in folder.glob(pattern):
                        path.unlink()
                    rmdir_if_empty(folder)
            rmdir_if_empty(self.target / split)

    def prepare_folders(self) -> None:
        for split in self.splits:
            (self.target / split / self.audio).mkdir(parents=True, exist_ok=True)
            (self.target / split / "txt").mkdir(parents=True, exist_ok=True)

    def write_marker(self, settings: dict, **extra: object) -> None:
        write_json_atomic(self.marker_path, {"settings": settings, "files": self.files_summary(), **extra})


def relative_dir(folder: Path, start: Path) -> str:
    """``folder`` relative to ``start`` as a posix string (recorded in markers)."""
    return Path(os.path.relpath(folder, start)).as_posix()


def source_identity(source: Path) -> dict:
    """What identifies a user-supplied archive (or folder) without reading it all:
    resolved path, size and modification time (for a folder: of its ``*.tsv``/``*.stm``
    index files)."""
    source = source.resolve()
    if source.is_dir():
        index = sorted(p for pattern in ("*.tsv", "*.stm") for p in source.rglob(pattern) if p.is_file())
        return {
            "path": str(source),
            "index": {p.relative_to(source).as_posix(): [p.stat().st_size, p.stat().st_mtime_ns] for p in index},
        }
    st = source.stat()
    return {"path": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
