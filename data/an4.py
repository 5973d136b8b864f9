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
                                                 rows: wav_path,transcript_path,seconds
    .an4_complete.json                           completion marker, written last

The sha256 of the archive used is printed (one line) and kept in the marker.

The archive is read completely and checked (gzip integrity, layout, every transcription
line's id against its fileids line, every transcript against the labels) before anything
is written. A finished target with the same settings is left alone; an unfinished one
(killed run: no marker) or one made with other settings is cleaned and redone. Only the
files this script writes are removed: ``{train,val,test}/{wav/*.wav,txt/*.txt}``, the three
manifests and the marker.
"""

from __future__ import annotations

import argparse
import io
import random
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as `python data/an4.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import soundfile as sf
from tqdm import tqdm

from data.audio import resample
from data.prep import (
    Layout,
    PrepError,
    download,
    file_digest,
    iter_archive,
    relative_dir,
    run_cli,
    write_text,
    write_wav,
)
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


class An4Error(PrepError):
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


ARCHIVE_HINT = "Download a fresh an4_raw.bigendian.tar.gz (run without --archive) or pass a complete copy with --archive."


def _members(archive: Path, desc: str):
    """The archive's regular files, streamed once and read to the end of the gzip stream
    (a truncated or corrupt file fails here, with its CRC checked)."""
    return iter_archive(archive, hint=ARCHIVE_HINT, compression="gzip", desc=desc)


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


def _parse_split(archive: Path, split: str, etc: dict[str, str], raw_sizes: dict[str, int]) -> list[Utterance]:
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
                f"{archive}: {fileids_name} line {id_line}: {fileid!r} is not a '<folder>/<speaker>/<utterance-id>' path"
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
            raise An4Error(f"{archive}: {member} has {size} bytes; 16-bit audio needs a non-zero, even size (damaged archive)")
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
        raise An4Error(f"{archive} is empty (0 bytes); download the archive again or pass a complete copy with --archive")
    wanted = {name for pair in ETC_FILES.values() for name in pair}
    etc: dict[str, str] = {}
    raw_sizes: dict[str, int] = {}
    for member in _members(archive, "checking the archive"):
        if member.name in wanted:
            try:
                etc[member.name] = member.read().decode("utf-8")
            except UnicodeDecodeError:
                raise An4Error(f"{archive}: {member.name} is not a text file") from None
        elif member.name.startswith("an4/wav/") and member.name.endswith(".raw"):
            raw_sizes[member.name] = member.size
    missing = sorted(wanted - etc.keys())
    if missing:
        raise An4Error(f"{archive} does not look like CMU's an4_raw.bigendian.tar.gz: missing {', '.join(missing)}")
    return {split: _parse_split(archive, split, etc, raw_sizes) for split in ETC_FILES}


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


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
        io.BytesIO(data),
        format="RAW",
        subtype="PCM_16",
        endian="BIG",
        samplerate=SOURCE_RATE,
        channels=1,
        dtype="int16",
    )
    if sample_rate == SOURCE_RATE:
        return audio
    resampled = resample(audio.astype(np.float32) / 32768.0, SOURCE_RATE, sample_rate)
    return np.clip(np.round(resampled * 32768.0), -32768, 32767).astype(np.int16)


def write_dataset(archive: Path, target: Path, assignment: dict[str, list[Utterance]], sample_rate: int) -> None:
    """Write ``<target>/<split>/{wav,txt}/<utt>.{wav,txt}`` for every utterance, streaming the tar once."""
    jobs: dict[str, Path] = {}
    for split, utterances in assignment.items():
        (target / split / "wav").mkdir(parents=True, exist_ok=True)
        (target / split / "txt").mkdir(parents=True, exist_ok=True)
        for u in utterances:
            write_text(target / split / "txt" / f"{u.utt_id}.txt", u.text)
            jobs[u.member] = target / split / "wav" / f"{u.utt_id}.wav"
    done = 0
    with tqdm(total=len(jobs), unit="file", desc="converting", disable=None, leave=False) as bar:
        for member in _members(archive, "reading the archive"):
            out = jobs.get(member.name)
            if out is None:
                continue
            write_wav(out, convert_audio(member.read(), sample_rate), sample_rate)
            done += 1
            bar.update()
    if done != len(jobs):
        raise An4Error(f"{archive}: changed while it was being read ({done} of {len(jobs)} audio files found)")


# ---------------------------------------------------------------------------- output layout


def layout(target: Path, manifest_dir: Path) -> Layout:
    """The files this script writes: ``{train,val,test}/{wav,txt}``, three manifests, the marker."""
    return Layout(target, manifest_dir, SPLITS, MARKER, {split: f"an4_{split}_manifest.csv" for split in SPLITS})


def download_archive(url: str, dest: Path) -> Path:
    """Download the archive (resumable; CMU publishes no checksum, so none is checked)."""
    return download(url, dest, hint=f"check the network, or download {url} by hand and pass --archive PATH")


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Download (or read) CMU AN4 and write WAV files plus an4_{train,val,test}_manifest.csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--target-dir", type=Path, default=Path("data"), help="where the wav/txt folders (and by default the manifests) go"
    )
    parser.add_argument("--archive", type=Path, default=None, help="local an4_raw.bigendian.tar.gz to use instead of downloading")
    parser.add_argument("--url", default=URL, help="where to download the archive from when --archive is not given")
    parser.add_argument(
        "--manifest-dir",
        type=Path,
        default=None,
        help="where the manifests go (None: the target dir); paths in them are relative to it",
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=SOURCE_RATE,
        help="sample rate of the written WAV files (AN4 is 16000 Hz; other rates are resampled)",
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="fraction of training utterances held out as val, by whole speakers"
    )
    parser.add_argument("--seed", type=int, default=123456, help="seed of the val speaker choice")
    parser.add_argument(
        "--min-duration",
        type=float,
        default=None,
        help="drop train utterances shorter than this many seconds (val/test are never pruned)",
    )
    parser.add_argument(
        "--max-duration",
        type=float,
        default=None,
        help="drop train utterances longer than this many seconds (val/test are never pruned)",
    )
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
        "manifest_dir": relative_dir(manifest_dir, target),
    }
    out = layout(target, manifest_dir)
    archive_sha = sha256_of(args.archive) if args.archive is not None else None
    if archive_sha is not None:
        print(f"archive sha256: {archive_sha}  {args.archive.resolve()}")
    if out.is_complete(settings, {"sha256": archive_sha} if archive_sha else None):
        print(
            f"AN4 is already prepared in {target} with these settings; nothing to do "
            f"(delete {target / MARKER} to force a rebuild)"
        )
        return 0

    downloaded = args.archive is None
    if downloaded:
        name = Path(urllib.parse.urlparse(args.url).path).name or "an4_raw.bigendian.tar.gz"
        archive = target / name
        if not archive.is_file():
            print(f"downloading {args.url} -> {archive}")
            download_archive(args.url, archive)
        archive_sha = sha256_of(archive)
        print(f"archive sha256: {archive_sha}  {archive}")
    else:
        archive = args.archive.resolve()

    try:
        corpus = read_corpus(archive)
    except PrepError as e:
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

    if out.started():
        print(f"{target} holds an unfinished preparation or one made with other settings; redoing it")
    out.clean()
    target.mkdir(parents=True, exist_ok=True)
    write_dataset(archive, target, assignment, args.sample_rate)

    reports: dict[str, ManifestReport] = {}
    for split, path in out.manifest_paths().items():
        prune = split == "train"
        reports[split] = create_manifest(target / split, path, lo if prune else None, hi if prune else None)

    out.write_marker(
        settings,
        archive={"path": str(archive), "size": archive.stat().st_size, "sha256": archive_sha},
        counts={split: len(assignment[split]) for split in SPLITS},
        manifest_rows={split: len(r.utterances) for split, r in reports.items()},
        hours={split: round(r.seconds / 3600, 6) for split, r in reports.items()},
        val_speakers=val_speakers,
    )

    print(f"AN4 prepared in {target} ({time.perf_counter() - t0:.1f} s, {args.sample_rate} Hz):")
    for split, path in out.manifest_paths().items():
        r = reports[split]
        note = f" ({r.pruned} outside the duration range left out)" if r.pruned else ""
        note += f" ({len(val_speakers)} held-out training speakers)" if split == "val" else ""
        print(f"  {split:<5} {len(r.utterances):5d} utterances {r.seconds / 3600:7.3f} h  {path}{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(prepare, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
