"""Prepare TED-LIUM (release 2 or 3): NIST SPHERE talks cut into utterances by their STM segments.

    python data/ted.py                                     # download TED-LIUM release 2 from OpenSLR
    python data/ted.py --release 3                         # or release 3
    python data/ted.py --archive TEDLIUM_release2.tar.gz   # a local copy, or the folder it extracts to
    python data/ted.py --archive TEDLIUM_release-3/ --max-duration 15

Input layout: ``<root>/{train,dev,test}/sph/<talk>.sph`` and ``<root>/{train,dev,test}/stm/<talk>.stm``
(release 2: ``TEDLIUM_release2/``; release 3: ``TEDLIUM_release-3/legacy/``, whose
``speaker-adaptation/`` copy of the same layout is ignored). Without ``--archive`` the
release is downloaded into the target folder (resumable ``.part``) and its sha256 checked
against :data:`RELEASES`: no checksum published by OpenSLR was found for these archives, so
the values are the ones torchaudio's TEDLIUM dataset checks (``--sha256`` replaces them).

Audio: soundfile reads NIST SPHERE files holding uncompressed PCM (libsndfile's NIST
format), so no sox or sph2pipe is needed. A shorten-compressed file (``sample_coding``
``...embedded-shorten...``) cannot be decoded by libsndfile: the script stops and says so;
decompress such files first (``sph2pipe -f sph -p in.sph out.sph``) and pass the folder.
Each talk is read once and cut at the STM times into 16-bit WAV files at ``--sample-rate``.

Segments and text (the documented rule):

* comment lines (``;;``) are skipped; ``talk channel speaker start end [<label>] words``;
* a segment whose words are ``ignore_time_segment_in_scoring`` is dropped;
* tokens in angle, curly or square brackets (``<unk>``, ``<sil>``, ``{NOISE}``, ``[laughter]``)
  are removed from the transcript; the segment is kept (and counted) unless nothing is left;
* TED-LIUM's split contractions are joined (``it 's`` -> ``IT'S``);
* then :func:`data.prep.normalize_transcript` (upper case, punctuation -> space, ...); a
  segment with characters it cannot map (digits) is dropped;
* a segment whose end is not after its start, or that starts after the end of the audio,
  is dropped; an end past the audio is cut at the audio's end.

Output under ``--target-dir`` (deepspeech.pytorch's names; TED-LIUM's dev set is ``val``)::

    {train,val,test}/wav/<talk>-<start cs>-<end cs>.wav   {train,val,test}/txt/....txt
    ted_{train,val,test}_manifest.csv                     in --manifest-dir; rows wav,txt,seconds
    .ted_complete.json                                    completion marker, written last

Every segment left out is counted by split and reason and listed at the end; training
segments outside ``--min-duration``/``--max-duration`` too (val/test are never pruned).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as `python data/ted.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from data.audio import AudioError
from data.prep import (
    Drops,
    Layout,
    Member,
    PrepError,
    add_common_args,
    check_common_args,
    decode_audio,
    download,
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

RELEASES = {  # sha256 as checked by torchaudio's TEDLIUM dataset (pytorch/audio, datasets/tedlium.py)
    "2": (
        "https://www.openslr.org/resources/19/TEDLIUM_release2.tar.gz",
        "93281b5fcaaae5c88671c9d000b443cb3c7ea3499ad12010b3934ca41a7b9c58",
    ),
    "3": (
        "https://www.openslr.org/resources/51/TEDLIUM_release-3.tgz",
        "ad1e454d14d1ad550bc2564c462d87c7a7ec83d4dc2b9210f22ab4973b9eccdb",
    ),
}
SPLITS = {"train": "train", "dev": "val", "test": "test"}  # TED-LIUM folder -> our split
MARKER = ".ted_complete.json"
MARKER_FORMAT = 1
_MEMBER = re.compile(r"(?P<root>(?:.+/)?)(?P<split>train|dev|test)/(?P<kind>sph|stm)/(?P<talk>[^/]+)\.(?P=kind)")
_LABEL = re.compile(r"<[^<>]*,[^<>]*>")  # the STM label field, e.g. <o,f0,male>
_NOISE = re.compile(r"<[^<>]*>|\{[^{}]*\}|\[[^\[\]]*\]")  # <unk>, {NOISE}, [laughter]

IGNORED = "ignore_time_segment_in_scoring"
MALFORMED = "malformed STM line"
BAD_TIMES = "end time not after start time"
EMPTY = "empty transcript (after removing <unk>/noise tokens)"
BAD_CHARS = "characters the text rule cannot map onto the labels"
TWICE = "segment listed twice"
NO_AUDIO = "talk without .sph audio"
BAD_AUDIO = "unreadable audio"
OUTSIDE = "segment starts after the end of the audio"
MARKERS_REMOVED = "<unk>/noise tokens removed (segment kept)"


@dataclass(frozen=True)
class Segment:
    utt_id: str
    start: float
    end: float
    text: str


def sphere_coding(data: bytes) -> str | None:
    """The ``sample_coding`` field of a NIST SPHERE header, or None when absent."""
    if not data.startswith(b"NIST_1A"):
        return None
    header = data[:4096].split(b"end_head", 1)[0].decode("ascii", "replace")
    m = re.search(r"^sample_coding\s+-s\d+\s+(\S+)", header, flags=re.MULTILINE)
    return m.group(1) if m else None


def clean_words(words: list[str]) -> tuple[str, bool]:
    """Remove bracketed tokens and join split contractions; returns (text, tokens removed)."""
    kept = [w for w in words if not _NOISE.fullmatch(w)]
    joined: list[str] = []
    for word in kept:
        if word.startswith("'") and joined:
            joined[-1] += word
        else:
            joined.append(word)
    return " ".join(joined), len(kept) != len(words)


def parse_stm(text: str, talk: str, where: str, drops: Drops, notes: Drops) -> list[Segment]:
    """The usable segments of one STM file; the others are counted in ``drops``."""
    segments: list[Segment] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";;"):
            continue
        tokens = line.split()
        try:
            start, end = float(tokens[3]), float(tokens[4])
        except (IndexError, ValueError):
            drops.add(MALFORMED, f"{where}:{n}")
            continue
        words = tokens[5:]
        if words and _LABEL.fullmatch(words[0]):
            words = words[1:]
        utt_id = f"{talk}-{round(start * 100):07d}-{round(end * 100):07d}"
        if IGNORED in words:
            drops.add(IGNORED, utt_id)
            continue
        if not end > start >= 0:
            drops.add(BAD_TIMES, f"{where}:{n}")
            continue
        raw, removed = clean_words(words)
        try:
            transcript = normalize_transcript(raw)
        except ValueError:
            drops.add(BAD_CHARS, utt_id)
            continue
        if not transcript:
            drops.add(EMPTY, utt_id)
            continue
        if utt_id in seen:
            drops.add(TWICE, utt_id)
            continue
        if removed:
            notes.add(MARKERS_REMOVED, utt_id)
        seen.add(utt_id)
        segments.append(Segment(utt_id, start, end, transcript))
    return segments


class Cutter:
    """Reads the STM files, picks the layout root, then cuts every talk's SPH audio."""

    def __init__(self, source: Path, out: Layout, args: argparse.Namespace) -> None:
        self.source, self.out, self.args = source, out, args
        self.hint = "Download the release again or pass a complete copy with --archive."
        self.drops = {split: Drops() for split in SPLITS.values()}
        self.notes = {split: Drops() for split in SPLITS.values()}
        self.refused = Drops()
        self.stm: dict[str, dict[tuple[str, str], bytes]] = {}  # root -> (split, talk) -> STM bytes
        self.sph: dict[str, set[tuple[str, str]]] = {}  # root -> {(split, talk)}
        self.rows: dict[str, list[tuple[Path, Path, float]]] = {split: [] for split in SPLITS.values()}
        self.root = ""

    def members(self, drops: Drops | None) -> Iterator[tuple[Member, re.Match]]:
        for member in iter_archive(self.source, drops, hint=self.hint):
            m = _MEMBER.fullmatch(member.name)
            if m is not None:
                yield member, m

    def run(self) -> None:
        for member, m in self.members(self.refused):
            key = (m["split"], m["talk"])
            if m["kind"] == "stm":
                self.stm.setdefault(m["root"], {})[key] = member.read()
            else:
                self.sph.setdefault(m["root"], set()).add(key)
        self.root = self.choose_root()
        segments = self.read_segments()
        wanted = {key for key in self.sph.get(self.root, set()) if key in segments}
        for key, segs in segments.items():
            if key not in self.sph.get(self.root, set()):
                self.drops[SPLITS[key[0]]].add(NO_AUDIO, key[1], len(segs))
        if wanted:
            for member, m in self.members(None):
                key = (m["split"], m["talk"])
                if m["root"] == self.root and m["kind"] == "sph" and key in wanted:
                    wanted.discard(key)
                    self.cut(member, SPLITS[key[0]], segments[key])

    def choose_root(self) -> str:
        roots = sorted(set(self.stm) | set(self.sph))
        if not roots:
            raise PrepError(f"{self.source} does not look like TED-LIUM: no <root>/{{train,dev,test}}/{{sph,stm}}/ files found")
        if len(roots) == 1:
            return roots[0]
        legacy = [r for r in roots if r.rstrip("/").endswith("legacy")]
        if len(legacy) == 1:
            return legacy[0]
        raise PrepError(
            f"{self.source} holds the TED-LIUM layout under several folders ({', '.join(r or './' for r in roots)}); "
            "pass the one to use with --archive"
        )

    def read_segments(self) -> dict[tuple[str, str], list[Segment]]:
        segments = {}
        for (split, talk), data in sorted(self.stm.get(self.root, {}).items()):
            where = f"{self.source}: {self.root}{split}/stm/{talk}.stm"
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self.drops[SPLITS[split]].add("STM file that is not UTF-8 text", where)
                continue
            segments[(split, talk)] = parse_stm(text, talk, where, self.drops[SPLITS[split]], self.notes[SPLITS[split]])
        return segments

    def cut(self, member: Member, split: str, segments: list[Segment]) -> None:
        drops = self.drops[split]
        data = member.read()
        where = f"{self.source}: {member.name}"
        coding = sphere_coding(data) or ""
        if "shorten" in coding:
            raise PrepError(
                f"{where} is shorten-compressed NIST SPHERE (sample_coding {coding}), which libsndfile cannot "
                "decode; decompress the .sph files first (sph2pipe -f sph -p in.sph out.sph) and pass the folder "
                "with --archive"
            )
        try:
            audio, rate = decode_audio(data, where)
        except AudioError:
            for seg in segments:
                drops.add(BAD_AUDIO, seg.utt_id)
            return
        out_rate = self.args.sample_rate
        bounds = (self.args.min_duration, self.args.max_duration) if split == "train" else (None, None)
        folder = self.out.target / split
        for seg in segments:
            first = round(seg.start * rate)
            last = min(round(seg.end * rate), len(audio))
            if first >= len(audio):
                drops.add(OUTSIDE, seg.utt_id)
                continue
            samples = to_int16(np.ascontiguousarray(audio[first:last]), rate, out_rate)
            seconds = len(samples) / out_rate
            reason = duration_drop_reason(seconds, *bounds)
            if reason is not None:
                drops.add(reason, seg.utt_id)
                continue
            wav, txt = folder / "wav" / f"{seg.utt_id}.wav", folder / "txt" / f"{seg.utt_id}.txt"
            write_wav(wav, samples, out_rate)
            write_text(txt, seg.text)
            self.rows[split].append((wav, txt, seconds))


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Download (or read) TED-LIUM and write WAV utterances plus ted_{train,val,test}_manifest.csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--archive", type=Path, default=None, help="local TED-LIUM archive or extracted folder to use instead of downloading"
    )
    add_common_args(parser, "data/ted")
    parser.add_argument(
        "--release", choices=sorted(RELEASES), default="2", help="release to download when --archive is not given"
    )
    parser.add_argument("--url", default=None, help="download from here instead of OpenSLR")
    parser.add_argument("--sha256", default=None, help="expected sha256 of the download instead of the built-in one")
    parser.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the written WAV files")
    return parser


def fetch_release(args: argparse.Namespace, target: Path) -> Path:
    """The downloaded release archive in ``target`` (downloaded now if not there yet)."""
    url, sha256 = RELEASES[args.release]
    url = args.url or url
    sha256 = args.sha256 or sha256
    archive = target / (Path(urllib.parse.urlparse(url).path).name or f"TEDLIUM_release{args.release}.tar.gz")
    if not archive.is_file():
        print(f"downloading {url} -> {archive}")
        download(
            url,
            archive,
            ("sha256", sha256),
            "--sha256" if args.sha256 else "torchaudio's TEDLIUM checksum",
            hint=f"check the network, or download {url} by hand and pass --archive PATH",
        )
    return archive


def prepare(args: argparse.Namespace) -> int:
    """The whole job; raises PrepError (and the data_loader errors) on bad input."""
    t0 = time.perf_counter()
    target, manifest_dir = check_common_args(args)
    if args.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
        raise PrepError(f"--sha256 must be 64 hex digits, got {args.sha256!r}")
    if args.archive is not None and not args.archive.exists():
        raise PrepError(f"{args.archive}: --archive not found (a TED-LIUM archive or its extracted folder)")
    splits = tuple(SPLITS.values())
    settings = {
        "format": MARKER_FORMAT,
        "release": None if args.archive is not None else args.release,
        "sample_rate": args.sample_rate,
        "min_duration": args.min_duration,
        "max_duration": args.max_duration,
        "manifest_dir": relative_dir(manifest_dir, target),
    }
    out = Layout(target, manifest_dir, splits, MARKER, {s: f"ted_{s}_manifest.csv" for s in splits})
    source = args.archive
    if source is None:
        if out.is_complete(settings):
            print(
                f"TED-LIUM is already prepared in {target} with these settings; nothing to do "
                f"(delete {out.marker_path} to force a rebuild)"
            )
            return 0
        target.mkdir(parents=True, exist_ok=True)
        source = fetch_release(args, target)
    identity = source_identity(source)
    if out.is_complete(settings, {"source": identity}):
        print(
            f"TED-LIUM is already prepared in {target} with these settings from this archive; nothing to do "
            f"(delete {out.marker_path} to force a rebuild)"
        )
        return 0
    if out.started():
        print(f"{target} holds an unfinished preparation or one made with other settings; redoing it")
    out.clean()
    target.mkdir(parents=True, exist_ok=True)
    out.prepare_folders()
    cutter = Cutter(source, out, args)
    cutter.run()
    empty = [s for s in splits if not cutter.rows[s]]
    if empty:
        raise PrepError(
            f"{source}: no usable utterance for {', '.join(empty)} ({sum(cutter.drops[s].total for s in empty)} segments dropped)"
        )
    summary = []
    for split, path in out.manifest_paths().items():
        rows = write_sorted_manifest(path, cutter.rows[split])
        summary.append((split, len(rows), sum(r[2] for r in rows), path))
    out.write_marker(
        settings,
        archive={"source": identity, "root": cutter.root},
        utterances={s: len(cutter.rows[s]) for s in splits},
        drops={s: cutter.drops[s].to_dict() for s in splits},
        refused_members=cutter.refused.to_dict(),
    )
    drops = dict(cutter.drops)
    if cutter.refused.total:
        drops["archive"] = cutter.refused
    print_summary(
        f"TED-LIUM ({cutter.root or './'}) prepared in {target} ({time.perf_counter() - t0:.1f} s, {args.sample_rate} Hz WAV):",
        summary,
        drops,
    )
    for split, notes in cutter.notes.items():
        for reason, n in notes.counts.items():
            print(f"  note for {split}: {n} {reason} (e.g. {notes.examples[reason]})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(prepare, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
