"""Prepare the CMU AN4 corpus: WAV files, transcripts and train/val/test manifests.

    python data/an4.py                                   # download from CMU, prepare data/an4_dataset
    python data/an4.py --archive an4_raw.bigendian.tar.gz --target-dir data/an4_dataset

Input: CMU's ``an4_raw.bigendian.tar.gz`` (headerless big-endian 16-bit 16 kHz mono
``.raw`` audio under ``an4/wav/`` plus ``an4/etc/an4_{train,test}.{fileids,transcription}``).
Without ``--archive`` it is downloaded (resumable ``.part`` file) into the target folder
and kept there, so a re-run with other settings does not download it again.

Output under ``--target-dir`` (deepspeech.pytorch's layout)::

    train/wav/<utt>.wav  train/txt/<utt>.txt     AN4 train minus the val speakers
    val/wav/...          val/txt/...             whole training speakers held out (seeded)
    test/wav/...         test/txt/...            AN4's own test set (never used for selection)
    an4_{train,val,test}_manifest.csv            (in --manifest-dir, default the target folder)
    .an4_complete.json                           completion marker, written last

The archive is read completely and checked (gzip integrity, layout, every transcription
line's id against its fileids line, every transcript against the labels) before anything
is written. A finished target with the same settings is left alone; an unfinished one
(killed run: no marker) or one made with other settings is cleaned and redone. Only the
files this script writes are removed: ``{train,val,test}/{wav/*.wav,txt/*.txt}``, the three
manifests and the marker.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import re
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

if __name__ == "__main__":  # run as `python data/an4.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import soundfile as sf
from tqdm import tqdm

from data.audio import AudioError, resample
from data.manifest import ManifestError
from data.text import LABELS, TranscriptError, text_to_ids
from data.utils import ManifestReport, check_duration_range, create_manifest

URL = "http://www.speech.cs.cmu.edu/databases/an4/an4_raw.bigendian.tar.gz"
SOURCE_RATE = 16000  # AN4's .raw audio: 16 kHz, mono, signed 16-bit big-endian
SPLITS = ("train", "val", "test")
MARKER = ".an4_complete.json"
MARKER_FORMAT = 1
ETC_FILES = {
    "train": ("an4/etc/an4_train.fileids", "an4/etc/an4_train.transcription"),
    "test": ("an4/etc/an4_test.fileids", "an4/etc/an4_test.transcription"),
}
_UTT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SENTENCE_MARKS = {"<s>", "</s>"}


class An4Error(Exception):
    """A problem with the user's input (archive, flags, download); the message names the file."""


@dataclass(frozen=True)
class Utterance:
    """One AN4 utterance as listed in the archive's etc files."""

    utt_id: str  # "an251-fash-b"
    speaker: str  # "fash" (the folder name in the fileids path)
    member: str  # "an4/wav/an4_clstk/fash/an251-fash-b.raw"
    text: str  # "YES" (upper case, <s>/</s> and the (utt-id) removed)
    n_samples: int  # at SOURCE_RATE

    @property
    def duration(self) -> float:
        return self.n_samples / SOURCE_RATE


# ---------------------------------------------------------------------------- archive


def _archive_error(archive: Path, err: BaseException) -> An4Error:
    if isinstance(err, gzip.BadGzipFile):
        what = "is not a gzip-compressed tar archive"
    elif isinstance(err, EOFError):
        what = "is truncated (the gzip stream ends early; the download or copy is incomplete)"
    else:
        what = f"is corrupt or not a tar archive ({type(err).__name__}: {err})"
    return An4Error(
        f"{archive} {what}. Download a fresh an4_raw.bigendian.tar.gz (run without --archive) "
        "or pass a complete copy with --archive."
    )


_READ_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, tarfile.TarError, OSError)


def _iter_members(archive: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Stream the tar members of ``archive`` once, then read the gzip stream to its end
    (so a truncated or corrupt file fails here, with its CRC checked)."""
    with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
        with tarfile.open(fileobj=gz, mode="r|") as tar:
            for member in tar:
                yield member, tar
        while gz.read(1 << 20):
            pass


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """Non-blank lines of an etc file as (1-based line number, stripped line)."""
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_transcription_line(line: str) -> tuple[str, str]:
    """``"<s> YES </s> (an251-fash-b)"`` -> ``("YES", "an251-fash-b")``.

    Parsed by whitespace tokens: the last token must be ``(utt-id)``; ``<s>``/``</s>``
    tokens are dropped wherever they are; the words are upper-cased.
    Raises ValueError when the line does not end with ``(utt-id)``.
    """
    tokens = line.split()
    if not tokens or not (tokens[-1].startswith("(") and tokens[-1].endswith(")") and len(tokens[-1]) > 2):
        raise ValueError("line does not end with '(utterance-id)'")
    utt_id = tokens[-1][1:-1]
    words = [t.upper() for t in tokens[:-1] if t not in _SENTENCE_MARKS]
    return " ".join(words), utt_id


def _parse_split(
    archive: Path, split: str, etc: dict[str, str], raw_sizes: dict[str, int]
) -> list[Utterance]:
    fileids_name, trans_name = ETC_FILES[split]
    fileids = numbered_lines(etc[fileids_name])
    transcription = numbered_lines(etc[trans_name])
    where = f"{archive}: {trans_name}"
    if len(fileids) != len(transcription):
        raise An4Error(
            f"{archive}: {fileids_name} lists {len(fileids)} utterances but {trans_name} has "
            f"{len(transcription)} lines; the archive is damaged, use a fresh copy"
        )
    utterances: list[Utterance] = []
    seen: set[str] = set()
    for (id_line, fileid), (tr_line, line) in zip(fileids, transcription):
        parts = fileid.split("/")
        utt_id = parts[-1]
        if len(parts) < 2 or not _UTT_ID.fullmatch(utt_id) or any(p in ("", ".", "..") for p in parts):
            raise An4Error(
                f"{archive}: {fileids_name} line {id_line}: {fileid!r} is not a "
                "'<folder>/<speaker>/<utterance-id>' path"
            )
        if utt_id in seen:
            raise An4Error(f"{archive}: {fileids_name} line {id_line}: utterance {utt_id!r} is listed twice")
        seen.add(utt_id)
        try:
            text, trans_id = parse_transcription_line(line)
        except ValueError as e:
            raise An4Error(f"{where} line {tr_line}: {e}: {line.strip()!r}") from None
        if trans_id != utt_id:
            raise An4Error(
                f"{where} line {tr_line}: utterance id {trans_id!r} does not match {fileids_name} "
                f"line {id_line} ({utt_id!r}); the two files are out of step, use a fresh archive"
            )
        if not text:
            raise An4Error(f"{where} line {tr_line}: empty transcript for {utt_id!r}")
        try:
            text_to_ids(text, LABELS)
        except TranscriptError:
            shown = ", ".join(repr(c) for c in sorted({c for c in text if c not in LABELS[1:]}))
            raise An4Error(
                f"{where} line {tr_line}: transcript {text!r} has characters outside the labels ({shown}); "
                "this is not CMU's AN4 text, use an unmodified archive"
            ) from None
        member = f"an4/wav/{fileid}.raw"
        if member not in raw_sizes:
            raise An4Error(
                f"{archive}: audio file {member} (listed in {fileids_name} line {id_line}) is missing from the archive"
            )
        size = raw_sizes[member]
        if size == 0 or size % 2:
            raise An4Error(
                f"{archive}: {member} has {size} bytes; 16-bit audio needs a non-zero, even size (damaged archive)"
            )
        utterances.append(Utterance(utt_id, parts[-2], member, text, size // 2))
    if not utterances:
        raise An4Error(f"{archive}: {fileids_name} lists no utterance")
    return utterances


def read_corpus(archive: str | Path) -> dict[str, list[Utterance]]:
    """Read and check the whole archive; returns ``{"train": [...], "test": [...]}`` in fileids order.

    Raises An4Error naming the archive (and member / line) for an unreadable, truncated,
    foreign or inconsistent archive, including a transcript that does not encode with
    LABELS. Writes nothing.
    """
    archive = Path(archive)
    if archive.stat().st_size == 0:
        raise An4Error(
            f"{archive} is empty (0 bytes); download the archive again or pass a complete copy with --archive"
        )
    wanted = {name for pair in ETC_FILES.values() for name in pair}
    etc: dict[str, str] = {}
    raw_sizes: dict[str, int] = {}
    try:
        for member, tar in _iter_members(archive):
            if not member.isfile():
                continue
            if member.name in wanted:
                data = tar.extractfile(member).read()
                try:
                    etc[member.name] = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise An4Error(f"{archive}: {member.name} is not a text file") from None
            elif member.name.startswith("an4/wav/") and member.name.endswith(".raw"):
                raw_sizes[member.name] = member.size
    except _READ_ERRORS as e:
        raise _archive_error(archive, e) from None
    missing = sorted(wanted - etc.keys())
    if missing:
        raise An4Error(
            f"{archive} does not look like CMU's an4_raw.bigendian.tar.gz: missing {', '.join(missing)}"
        )
    return {split: _parse_split(archive, split, etc, raw_sizes) for split in ETC_FILES}


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---------------------------------------------------------------------------- split


def choose_val_speakers(utterances: list[Utterance], val_fraction: float, seed: int) -> list[str]:
    """Whole training speakers for validation: about ``val_fraction`` of the utterances.

    The sorted speaker list is shuffled with ``random.Random(seed)`` and speakers are
    taken in that order while that brings their utterance count closer to
    ``val_fraction`` of the total; at least one speaker is always taken and at least one
    always stays in train. Returns the chosen speakers, sorted.
    """
    counts: dict[str, int] = {}
    for u in utterances:
        counts[u.speaker] = counts.get(u.speaker, 0) + 1
    speakers = sorted(counts)
    if len(speakers) < 2:
        raise An4Error(f"need at least 2 training speakers to hold some out for validation, found {len(speakers)}")
    random.Random(seed).shuffle(speakers)
    target = val_fraction * len(utterances)
    chosen: list[str] = []
    taken = 0
    for speaker in speakers[:-1]:
        overshoot = taken + counts[speaker] - target
        if taken >= target or (chosen and overshoot > target - taken):
            break  # adding this speaker would move further from the target than stopping here
        chosen.append(speaker)
        taken += counts[speaker]
    return sorted(chosen)


# ---------------------------------------------------------------------------- conversion


def convert_audio(data: bytes, sample_rate: int) -> np.ndarray:
    """AN4 ``.raw`` bytes -> int16 samples at ``sample_rate``, shape (n_samples,)."""
    audio, _ = sf.read(
        io.BytesIO(data), format="RAW", subtype="PCM_16", endian="BIG",
        samplerate=SOURCE_RATE, channels=1, dtype="int16",
    )
    if sample_rate == SOURCE_RATE:
        return audio
    resampled = resample(audio.astype(np.float32) / 32768.0, SOURCE_RATE, sample_rate)
    return np.clip(np.round(resampled * 32768.0), -32768, 32767).astype(np.int16)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text + "\n", encoding="utf-8")


def write_dataset(
    archive: Path, target: Path, assignment: dict[str, list[Utterance]], sample_rate: int
) -> None:
    """Write ``<target>/<split>/{wav,txt}/<utt>.{wav,txt}`` for every utterance, streaming the tar once."""
    jobs: dict[str, Path] = {}
    for split, utterances in assignment.items():
        (target / split / "wav").mkdir(parents=True, exist_ok=True)
        (target / split / "txt").mkdir(parents=True, exist_ok=True)
        for u in utterances:
            _write_text(target / split / "txt" / f"{u.utt_id}.txt", u.text)
            jobs[u.member] = target / split / "wav" / f"{u.utt_id}.wav"
    done = 0
    with tqdm(total=len(jobs), unit="file", desc="converting", disable=None, leave=False) as bar:
        try:
            for member, tar in _iter_members(archive):
                out = jobs.get(member.name)
                if out is None or not member.isfile():
                    continue
                audio = convert_audio(tar.extractfile(member).read(), sample_rate)
                try:
                    sf.write(str(out), audio, sample_rate, subtype="PCM_16", format="WAV")
                except (sf.LibsndfileError, OSError) as e:
                    raise An4Error(f"{out}: cannot write the WAV file ({e})") from None
                done += 1
                bar.update()
        except _READ_ERRORS as e:
            raise _archive_error(archive, e) from None
    if done != len(jobs):
        raise An4Error(f"{archive}: changed while it was being read ({done} of {len(jobs)} audio files found)")


# ---------------------------------------------------------------------------- marker and cleaning


def _manifest_paths(manifest_dir: Path) -> dict[str, Path]:
    return {split: manifest_dir / f"an4_{split}_manifest.csv" for split in SPLITS}


def _read_marker(target: Path) -> dict | None:
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _files_summary(target: Path) -> dict[str, dict[str, int]]:
    summary = {}
    for split in SPLITS:
        wavs = list((target / split / "wav").glob("*.wav"))
        summary[split] = {
            "wav": len(wavs),
            "wav_bytes": sum(p.stat().st_size for p in wavs),
            "txt": len(list((target / split / "txt").glob("*.txt"))),
        }
    return summary


def is_complete(target: Path, manifest_dir: Path, settings: dict, archive_sha: str | None) -> bool:
    """True when ``target`` holds a finished preparation made with ``settings`` (and, when
    given, from the archive with ``archive_sha``), and its files are still all there."""
    marker = _read_marker(target)
    if marker is None or marker.get("settings") != settings:
        return False
    if archive_sha is not None and marker.get("archive", {}).get("sha256") != archive_sha:
        return False
    if not all(p.is_file() for p in _manifest_paths(manifest_dir).values()):
        return False
    return marker.get("files") == _files_summary(target)


def clean_target(target: Path, manifest_dir: Path) -> None:
    """Remove everything an earlier (possibly killed) run of this script wrote; nothing else."""
    manifest_dirs = {manifest_dir}
    old = _read_marker(target)
    if old is not None and isinstance(old.get("settings", {}).get("manifest_dir"), str):
        manifest_dirs.add(target / old["settings"]["manifest_dir"])
    (target / MARKER).unlink(missing_ok=True)
    (target / (MARKER + ".tmp")).unlink(missing_ok=True)
    for d in manifest_dirs:
        for path in _manifest_paths(d).values():
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    for split in SPLITS:
        for sub, pattern in (("wav", "*.wav"), ("txt", "*.txt")):
            folder = target / split / sub
            if folder.is_dir():
                for path in folder.glob(pattern):
                    path.unlink()
                _rmdir_if_empty(folder)
        _rmdir_if_empty(target / split)


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- download


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part`` with
    an HTTP Range request (a server that ignores Range restarts it). ``dest`` appears only
    once the download is complete. Raises An4Error naming the URL on failure."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "deepspeech-ctc data/an4.py"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    hint = f"check the network, or download {url} by hand and pass --archive PATH"
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the .part may already hold everything
            total = _content_range_total(e.headers.get("Content-Range"))
            if total == start:
                os.replace(part, dest)
                return dest
            part.unlink()
            return download(url, dest, timeout)
        raise An4Error(f"cannot download {url}: HTTP {e.code} {e.reason}; {hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise An4Error(f"cannot download {url} ({reason}); {hint}") from None
    with response:
        if start and response.status == 206:
            first = _content_range_start(response.headers.get("Content-Range"))
            if first != start:
                raise An4Error(f"cannot resume {url}: the server sent bytes from {first}, not {start}; delete {part}")
            total = _content_range_total(response.headers.get("Content-Range"))
            mode = "ab"
        else:
            start, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        received = start
        try:
            with open(part, mode) as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"downloading {dest.name}", disable=None, leave=False,
            ) as bar:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise An4Error(
                f"download of {url} interrupted after {received} bytes ({e}); run again to resume from {part}"
            ) from None
    if total is not None and received != total:
        raise An4Error(
            f"download of {url} incomplete ({received} of {total} bytes); run again to resume from {part}"
        )
    os.replace(part, dest)
    return dest


def _content_range_start(value: str | None) -> int | None:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    return int(m.group(1)) if m else None


def _content_range_total(value: str | None) -> int | None:
    m = re.fullmatch(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*", value or "")
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Download (or read) CMU AN4 and write WAV files plus an4_{train,val,test}_manifest.csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--target-dir", type=Path, default=Path("data"),
                        help="where the wav/txt folders (and by default the manifests) go")
    parser.add_argument("--archive", type=Path, default=None,
                        help="local an4_raw.bigendian.tar.gz to use instead of downloading")
    parser.add_argument("--url", default=URL, help="where to download the archive from when --archive is not given")
    parser.add_argument("--manifest-dir", type=Path, default=None,
                        help="where the manifests go (None: the target dir); paths in them are relative to it")
    parser.add_argument("--sample-rate", type=int, default=SOURCE_RATE,
                        help="sample rate of the written WAV files (AN4 is 16000 Hz; other rates are resampled)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of training utterances held out as val, by whole speakers")
    parser.add_argument("--seed", type=int, default=123456, help="seed of the val speaker choice")
    parser.add_argument("--min-duration", type=float, default=None,
                        help="drop train utterances shorter than this many seconds (val/test are never pruned)")
    parser.add_argument("--max-duration", type=float, default=None,
                        help="drop train utterances longer than this many seconds (val/test are never pruned)")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.sample_rate <= 0:
        raise An4Error(f"--sample-rate must be a positive number of Hz, got {args.sample_rate}")
    if not 0.0 < args.val_fraction < 1.0:
        raise An4Error(f"--val-fraction must be between 0 and 1 (exclusive), got {args.val_fraction}")
    try:
        check_duration_range(args.min_duration, args.max_duration)
    except ValueError as e:
        raise An4Error(str(e)) from None
    if args.archive is not None and not args.archive.is_file():
        raise An4Error(f"{args.archive}: archive not found (--archive must be the path of an4_raw.bigendian.tar.gz)")
    if args.target_dir.exists() and not args.target_dir.is_dir():
        raise An4Error(f"{args.target_dir}: --target-dir exists and is not a folder")


def prepare(args: argparse.Namespace) -> int:
    """The whole job; raises An4Error (and the data_loader errors) on bad input."""
    _check_args(args)
    t0 = time.perf_counter()
    target: Path = args.target_dir.resolve()
    manifest_dir: Path = (args.manifest_dir or args.target_dir).resolve()
    settings = {
        "format": MARKER_FORMAT,
        "sample_rate": args.sample_rate,
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "min_duration": args.min_duration,
        "max_duration": args.max_duration,
        "manifest_dir": Path(os.path.relpath(manifest_dir, target)).as_posix(),
    }
    archive_sha = sha256_of(args.archive) if args.archive is not None else None
    if is_complete(target, manifest_dir, settings, archive_sha):
        print(f"AN4 is already prepared in {target} with these settings; nothing to do "
              f"(delete {target / MARKER} to force a rebuild)")
        return 0

    downloaded = args.archive is None
    if downloaded:
        name = Path(urllib.parse.urlparse(args.url).path).name or "an4_raw.bigendian.tar.gz"
        archive = target / name
        if not archive.is_file():
            print(f"downloading {args.url} -> {archive}")
            download(args.url, archive)
        archive_sha = sha256_of(archive)
    else:
        archive = args.archive.resolve()

    try:
        corpus = read_corpus(archive)
    except An4Error as e:
        if downloaded:
            archive.unlink(missing_ok=True)
            raise An4Error(f"{e} (the downloaded copy was deleted; run again to download it afresh)") from None
        raise

    val_speakers = choose_val_speakers(corpus["train"], args.val_fraction, args.seed)
    held_out = set(val_speakers)
    assignment = {
        "train": [u for u in corpus["train"] if u.speaker not in held_out],
        "val": [u for u in corpus["train"] if u.speaker in held_out],
        "test": corpus["test"],
    }
    lo, hi = args.min_duration, args.max_duration
    if not any((lo is None or u.duration >= lo) and (hi is None or u.duration <= hi) for u in assignment["train"]):
        raise An4Error(f"no training utterance lasts between {lo} and {hi} s; widen --min-duration/--max-duration")

    if (target / MARKER).exists() or any((target / s).exists() for s in SPLITS):
        print(f"{target} holds an unfinished preparation or one made with other settings; redoing it")
    clean_target(target, manifest_dir)
    target.mkdir(parents=True, exist_ok=True)
    write_dataset(archive, target, assignment, args.sample_rate)

    reports: dict[str, ManifestReport] = {}
    for split, path in _manifest_paths(manifest_dir).items():
        prune = split == "train"
        reports[split] = create_manifest(target / split, path, lo if prune else None, hi if prune else None)

    marker = {
        "settings": settings,
        "archive": {"path": str(archive), "size": archive.stat().st_size, "sha256": archive_sha},
        "counts": {split: len(assignment[split]) for split in SPLITS},
        "manifest_rows": {split: len(r.utterances) for split, r in reports.items()},
        "hours": {split: round(r.seconds / 3600, 6) for split, r in reports.items()},
        "val_speakers": val_speakers,
        "files": _files_summary(target),
    }
    _write_json_atomic(target / MARKER, marker)

    print(f"AN4 prepared in {target} ({time.perf_counter() - t0:.1f} s, {args.sample_rate} Hz):")
    for split, path in _manifest_paths(manifest_dir).items():
        r = reports[split]
        note = f" ({r.pruned} outside the duration range left out)" if r.pruned else ""
        note += f" ({len(val_speakers)} held-out training speakers)" if split == "val" else ""
        print(f"  {split:<5} {len(r.utterances):5d} utterances {r.seconds / 3600:7.3f} h  {path}{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return prepare(args)
    except (An4Error, TranscriptError, AudioError, ManifestError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {args.target_dir} is unfinished and will be redone by the next run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
