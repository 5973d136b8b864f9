"""Prepare a Mozilla Common Voice release: MP3 clips -> WAV, normalised transcripts, manifests.

    python data/common_voice.py --archive cv-corpus-17.0-2024-03-15-en.tar.gz
    python data/common_voice.py --archive cv-corpus-17.0-2024-03-15/ --language en --strip-accents
    python data/common_voice.py --archive cv.tar.gz --files-to-process train.tsv --max-duration 15

Input (``--archive``, required): a release archive as downloaded from
commonvoice.mozilla.org (the download needs a sign-in, so this script never fetches it),
or the folder it was extracted to, or that folder's ``<lang>/`` folder. The layout is
``cv-corpus-<version>/<lang>/clips/*.mp3`` plus ``<lang>/{train,dev,test}.tsv`` (tab
separated, a header row with at least ``path`` and ``sentence``). ``--language`` picks
the language folder (default: the only one there); ``--files-to-process`` the TSV files
(deepspeech.pytorch's flag and default: test.tsv dev.tsv train.tsv).

The MP3 clips are decoded with soundfile (libsndfile >= 1.1 reads MP3; no ffmpeg, no
sox) and written as 16-bit WAV at ``--sample-rate`` (16 kHz): decoding MP3 again in every
epoch would make data loading far slower than reading WAV. The archive is streamed; when
its TSV files come after the clips, a second pass reads the clips it needs.

Transcripts: each sentence goes through one documented rule,
:func:`data.prep.normalize_transcript`: Unicode NFC (with ``--strip-accents`` NFKD and
combining marks removed: ``café`` -> ``CAFE``), curly apostrophes -> ``'``, upper case,
punctuation and symbols -> space (apostrophes are kept), invisible format characters
removed, whitespace collapsed. A sentence
with any other character outside the labels (a digit, a letter such as ``é`` without
--strip-accents) cannot be mapped and its row is dropped; so is a sentence that ends up empty.

Output under ``--target-dir``::

    <split>/wav/<clip>.wav  <split>/txt/<clip>.txt     split = the TSV name (train, dev, test)
    commonvoice_<split>_manifest.csv                   in --manifest-dir; rows wav,txt,seconds
    .common_voice_complete.json                        completion marker, written last

A finished target with the same settings and the same archive (path, size and
modification time) is left alone; an unfinished or different one is cleaned and redone.
Rows left out are counted by split and reason and listed at the end: malformed or unsafe
TSV row, duplicate clip, empty sentence, characters that cannot be mapped, clip missing
from the archive, unreadable audio, and (train only) outside ``--min-duration``/``--max-duration``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as `python data/common_voice.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import soundfile as sf

from data.audio import AudioError
from data.prep import (
    Drops,
    Layout,
    Member,
    PrepError,
    add_common_args,
    check_common_args,
    decode_audio,
    duration_drop_reason,
    iter_archive,
    normalize_transcript,
    print_summary,
    relative_dir,
    run_cli,
    source_identity,
    to_int16,
    write_sorted_manifest,
    write_text,
    write_wav,
)
from data.text import TranscriptError, load_labels, text_to_ids

FILES_TO_PROCESS = ("test.tsv", "dev.tsv", "train.tsv")
MARKER = ".common_voice_complete.json"
MARKER_FORMAT = 1
_TSV = re.compile(r"(?P<key>(?:.+/)?(?P<lang>[^/]+)/)(?P<file>[^/]+\.tsv)")
_CLIP = re.compile(r"(?P<key>(?:.+/)?(?P<lang>[^/]+)/)clips/(?P<clip>[^/]+)")

MALFORMED = "malformed TSV row"
UNSAFE_CLIP = "unsafe clip path in the TSV"
TWICE = "clip listed twice"
EMPTY = "empty sentence"
BAD_CHARS = "characters the text rule cannot map onto the labels"
NO_AUDIO = "clip missing from the archive"
BAD_AUDIO = "unreadable audio"


def check_mp3_support() -> None:
    """Raise PrepError unless soundfile's libsndfile (>= 1.1) reads MP3."""
    version = getattr(sf, "__libsndfile_version__", "0")
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    if numbers < (1, 1) or "MP3" not in sf.available_formats():
        raise PrepError(
            f"soundfile {sf.__version__} uses libsndfile {version}, which cannot read MP3 (libsndfile >= 1.1 "
            "can): upgrade with `pip install -U soundfile` (its wheels bundle libsndfile 1.2)"
        )


@dataclass
class Row:
    split: str
    text: str


def parse_tsv(data: bytes, where: str, labels: list[str], strip_accents: bool, drops: Drops) -> dict[str, str]:
    """One Common Voice TSV file as {clip file name: normalised transcript}; rows that
    cannot be used are counted in ``drops``."""
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise PrepError(f"{where} is not UTF-8 text") from None
    header = lines[0].split("\t") if lines else []
    if "path" not in header or "sentence" not in header:
        raise PrepError(f"{where}: the header row must name the 'path' and 'sentence' columns, got {header}")
    i_path, i_sentence = header.index("path"), header.index("sentence")
    rows: dict[str, str] = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) <= max(i_path, i_sentence) or not fields[i_path].strip():
            drops.add(MALFORMED, f"{where}:{n}")
            continue
        clip = fields[i_path].strip()
        if "/" in clip or "\\" in clip or clip in (".", ".."):
            drops.add(UNSAFE_CLIP, f"{where}:{n}")
            continue
        if clip in rows:
            drops.add(TWICE, clip)
            continue
        try:
            text = normalize_transcript(fields[i_sentence], labels, strip_accents)
            if text:
                text_to_ids(text, labels)
        except (ValueError, TranscriptError):
            drops.add(BAD_CHARS, clip)
            continue
        if not text:
            drops.add(EMPTY, clip)
            continue
        rows[clip] = text
    return rows


class Converter:
    """Streams the archive, reads the TSV files, writes WAV + transcript per wanted clip."""

    def __init__(self, args: argparse.Namespace, out: Layout, labels: list[str], drops: dict[str, Drops]) -> None:
        self.args, self.out, self.labels, self.drops = args, out, labels, drops
        self.files = {Path(f).stem: f for f in args.files_to_process}
        self.key: str | None = None  # "<root>/<lang>/" of the language folder in use
        self.tables: dict[str, dict[str, str]] = {}
        self.wanted: dict[str, list[Row]] = {}
        self.done: set[str] = set()
        self.seen: set[str] = set()
        self.rows: dict[str, list[tuple[Path, Path, float]]] = {split: [] for split in self.files}
        self.passes = 0
        self.refused = Drops()  # unsafe archive members

    def members(self, drops: Drops | None):
        source = self.args.archive
        self.passes += 1
        hint = "Pass a complete copy of the Common Voice release with --archive."
        if source.is_dir() and (source / "clips").is_dir():  # the language folder itself
            for m in iter_archive(source, drops, hint=hint):
                yield Member(f"{source.name}/{m.name}", m.size, m.read)
        else:
            yield from iter_archive(source, drops, hint=hint)

    def _use_key(self, key: str, lang: str) -> bool:
        if self.args.language is not None and lang != self.args.language:
            return False
        if self.key is None:
            self.key = key
        elif key != self.key:
            raise PrepError(
                f"{self.args.archive} holds more than one language folder ({self.key}, {key}); pick one with --language"
            )
        return True

    @property
    def ready(self) -> bool:
        return len(self.tables) == len(self.files)

    def run(self) -> None:
        for member in self.members(self.refused):
            self.visit(member, first_pass=True)
        if self.key is None:
            which = f"'{self.args.language}/' language folder" if self.args.language else "<lang>/clips/ folder"
            raise PrepError(f"{self.args.archive} does not look like a Common Voice release: no {which} found")
        missing = [f for split, f in self.files.items() if split not in self.tables]
        if missing:
            raise PrepError(f"{self.args.archive}: {self.key}{', '.join(missing)} not found (--files-to-process)")
        if any(clip in self.wanted and clip not in self.done for clip in self.seen):
            for member in self.members(None):
                self.visit(member, first_pass=False)
        for clip, rows in self.wanted.items():
            if clip not in self.seen:
                for row in rows:
                    self.drops[row.split].add(NO_AUDIO, clip)

    def visit(self, member: Member, first_pass: bool) -> None:
        m = _CLIP.fullmatch(member.name)
        if m is not None:
            if not self._use_key(m["key"], m["lang"]):
                return
            clip = m["clip"]
            self.seen.add(clip)
            if self.ready and clip in self.wanted and clip not in self.done:
                self.convert(clip, member)
            return
        m = _TSV.fullmatch(member.name)
        if m is None or not first_pass or m["file"] not in self.files.values():
            return
        if not self._use_key(m["key"], m["lang"]):
            return
        split = Path(m["file"]).stem
        table = parse_tsv(
            member.read(), f"{self.args.archive}: {member.name}", self.labels, self.args.strip_accents, self.drops[split]
        )
        self.tables[split] = table
        for clip, text in table.items():
            self.wanted.setdefault(clip, []).append(Row(split, text))

    def convert(self, clip: str, member: Member) -> None:
        self.done.add(clip)
        rows = self.wanted[clip]
        try:
            audio, rate = decode_audio(member.read(), f"{self.args.archive}: {member.name}")
        except AudioError:
            for row in rows:
                self.drops[row.split].add(BAD_AUDIO, clip)
            return
        out_rate = self.args.sample_rate
        samples = to_int16(audio, rate, out_rate)
        seconds = len(samples) / out_rate
        stem = Path(clip).stem
        for row in rows:
            bounds = (self.args.min_duration, self.args.max_duration) if row.split == "train" else (None, None)
            reason = duration_drop_reason(seconds, *bounds)
            if reason is not None:
                self.drops[row.split].add(reason, clip)
                continue
            folder = self.out.target / row.split
            wav, txt = folder / "wav" / f"{stem}.wav", folder / "txt" / f"{stem}.txt"
            write_wav(wav, samples, out_rate)
            write_text(txt, row.text)
            self.rows[row.split].append((wav, txt, seconds))


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert a Common Voice release to WAV files, transcripts and commonvoice_*_manifest.csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--archive", type=Path, required=True, help="the release archive (cv-corpus-*.tar.gz) or the folder it was extracted to"
    )
    add_common_args(parser, "data/common_voice")
    parser.add_argument("--language", default=None, help="language folder inside the release (None: the only one there)")
    parser.add_argument(
        "--files-to-process",
        nargs="+",
        default=list(FILES_TO_PROCESS),
        help="TSV files to convert; each becomes a split named after it",
    )
    parser.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the written WAV files")
    parser.add_argument(
        "--strip-accents",
        action="store_true",
        help="map accented letters to their base letter (NFKD) instead of dropping the row",
    )
    parser.add_argument(
        "--labels-path",
        type=Path,
        default=None,
        help="JSON list of labels the transcripts must fit (None: the default English set)",
    )
    return parser


def prepare(args: argparse.Namespace) -> int:
    """The whole job; raises PrepError (and the data_loader errors) on bad input."""
    t0 = time.perf_counter()
    target, manifest_dir = check_common_args(args)
    check_mp3_support()
    if not args.archive.exists():
        raise PrepError(f"{args.archive}: --archive not found (a Common Voice release .tar.gz or its folder)")
    files = list(dict.fromkeys(args.files_to_process))
    bad = [f for f in files if not re.fullmatch(r"[A-Za-z0-9_.-]+\.tsv", f)]
    if bad:
        raise PrepError(f"--files-to-process takes TSV file names such as train.tsv, got {', '.join(bad)}")
    args.files_to_process = files
    labels = load_labels(args.labels_path)
    splits = tuple(Path(f).stem for f in files)
    settings = {
        "format": MARKER_FORMAT,
        "language": args.language,
        "files": files,
        "sample_rate": args.sample_rate,
        "min_duration": args.min_duration,
        "max_duration": args.max_duration,
        "strip_accents": args.strip_accents,
        "labels": labels,
        "manifest_dir": relative_dir(manifest_dir, target),
    }
    out = Layout(target, manifest_dir, splits, MARKER, {s: f"commonvoice_{s}_manifest.csv" for s in splits})
    identity = source_identity(args.archive)
    if out.is_complete(settings, {"source": identity}):
        print(
            f"Common Voice is already prepared in {target} with these settings from this archive; nothing to do "
            f"(delete {out.marker_path} to force a rebuild)"
        )
        return 0
    if out.started():
        print(f"{target} holds an unfinished preparation or one made with other settings; redoing it")
    out.clean()
    target.mkdir(parents=True, exist_ok=True)
    out.prepare_folders()
    drops = {split: Drops() for split in splits}
    converter = Converter(args, out, labels, drops)
    converter.run()
    empty = [s for s in splits if not converter.rows[s]]
    if empty:
        raise PrepError(
            f"{args.archive}: no usable utterance in {', '.join(f'{s}.tsv' for s in empty)} "
            f"({sum(drops[s].total for s in empty)} rows dropped)"
        )
    summary = []
    for split, path in out.manifest_paths().items():
        rows = write_sorted_manifest(path, converter.rows[split])
        summary.append((split, len(rows), sum(r[2] for r in rows), path))
    out.write_marker(
        settings,
        archive={"source": identity, "language_folder": converter.key, "passes": converter.passes},
        utterances={s: len(converter.rows[s]) for s in splits},
        drops={s: drops[s].to_dict() for s in splits},
        refused_members=converter.refused.to_dict(),
    )
    if converter.refused.total:
        drops["archive"] = converter.refused
    print_summary(
        f"Common Voice ({converter.key}) prepared in {target} ({time.perf_counter() - t0:.1f} s, {args.sample_rate} Hz WAV):",
        summary,
        drops,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(prepare, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
