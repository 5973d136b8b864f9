"""Prepare LibriSpeech (OpenSLR SLR12): the FLAC audio as published, transcripts, manifests.

    python data/librispeech.py                                         # all 7 subsets, downloaded
    python data/librispeech.py --files-to-use dev-clean,test-clean     # only these
    python data/librispeech.py --archive-dir /mnt/openslr12            # local copies of the tarballs
    python data/librispeech.py --files-to-use train-clean-100 --max-duration 15 --convert-wav

Input: OpenSLR's tarballs ``<subset>.tar.gz`` (https://www.openslr.org/12), each holding
``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` plus one
``<speaker>-<chapter>.trans.txt`` per chapter (``<utterance-id> TRANSCRIPT`` lines).
``--files-to-use`` takes a comma list of subsets (deepspeech.pytorch's flag; the default
is all seven, as there). A tarball is taken from ``--archive-dir`` when it is there, else
from the target folder (an earlier download, kept unless ``--delete-downloads``), else
downloaded into the target folder through a resumable ``.part`` file. Its md5 must match
the sums OpenSLR publishes (https://www.openslr.org/resources/12/md5sum.txt, copied in
:data:`MD5`); ``--md5sums FILE`` (md5sum format) replaces entries, e.g. for a mirror.

Output under ``--target-dir``::

    <subset>/flac/<utt>.flac       the FLAC file as published; the loader reads FLAC directly
    <subset>/wav/<utt>.wav         instead of flac/, with --convert-wav (16-bit, --sample-rate)
    <subset>/txt/<utt>.txt         the transcript (upper case, as published), one line
    libri_<subset>_manifest.csv    per subset, in --manifest-dir; rows wav_path,txt_path,seconds
    libri_{train,val,test_clean,test_other}_manifest.csv    deepspeech.pytorch's groups:
                                   train-* -> train, dev-* -> val, test-clean, test-other
    .librispeech_<subset>_complete.json, .librispeech_complete.json    completion markers

Each subset is finished on its own, its marker written last: a re-run skips a finished
subset made with the same settings (nothing is read or written when all are), redoes an
unfinished or changed one, and adding a subset later processes only that one. Utterances
left out are counted by reason and listed at the end: no transcript line, audio missing,
empty transcript, characters outside the labels, unreadable audio and, in the train-*
subsets only, outside ``--min-duration``/``--max-duration``. Archive members with an
absolute path, ``..``, or that are links or devices are refused and counted too.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run as `python data/librispeech.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.audio import AudioError
from data.manifest import read_manifest
from data.prep import (
    Drops,
    Layout,
    PrepError,
    add_common_args,
    check_checksum,
    check_common_args,
    decode_audio,
    download,
    drops_from_dict,
    drops_to_dict,
    duration_drop_reason,
    iter_archive,
    print_summary,
    progress,
    read_checksum_file,
    read_json,
    relative_dir,
    rmdir_if_empty,
    run_cli,
    to_int16,
    write_json_atomic,
    write_sorted_manifest,
    write_text,
    write_wav,
)
from data.text import LABELS, TranscriptError, text_to_ids

URL_BASE = "https://www.openslr.org/resources/12/"
SUBSETS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)
GROUPS = {
    "train": ("train-clean-100", "train-clean-360", "train-other-500"),
    "val": ("dev-clean", "dev-other"),
    "test_clean": ("test-clean",),
    "test_other": ("test-other",),
}
MD5 = {  # OpenSLR's published md5 sums (resources/12/md5sum.txt)
    "train-clean-100.tar.gz": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360.tar.gz": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500.tar.gz": "d1a0fd59409feb2c614ce4d30c387708",
    "dev-clean.tar.gz": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other.tar.gz": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean.tar.gz": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other.tar.gz": "fb5a50374b501bb3bac4815ee91d3135",
}
MARKER = ".librispeech_complete.json"
MARKER_FORMAT = 1
DEFAULT_RATE = 16000
_UTT = re.compile(r"\d+-\d+-\d+")

NO_TRANSCRIPT = "audio without a transcript line"
NO_AUDIO = "transcript line without audio in the archive"
EMPTY = "empty transcript"
BAD_CHARS = "characters outside the labels"
BAD_AUDIO = "unreadable audio"
BAD_LINE = "malformed or misplaced transcript line"
BAD_NAME = "audio file name does not match its folder"
TWICE = "utterance listed twice"


def subset_layout(target: Path, manifest_dir: Path, subset: str, audio: str) -> Layout:
    return Layout(
        target,
        manifest_dir,
        (subset,),
        f".librispeech_{subset}_complete.json",
        {subset: f"libri_{subset}_manifest.csv"},
        audio=audio,
    )


def group_manifest(manifest_dir: Path, group: str) -> Path:
    return manifest_dir / f"libri_{group}_manifest.csv"


def parse_files_to_use(value: str) -> list[str]:
    """``"dev-clean,test-clean.tar.gz"`` -> subsets in :data:`SUBSETS` order."""
    chosen = set()
    for item in value.split(","):
        name = item.strip().removesuffix(".tar.gz")
        if not name:
            continue
        if name not in SUBSETS:
            raise PrepError(f"--files-to-use: unknown LibriSpeech subset {item.strip()!r}; choose from {', '.join(SUBSETS)}")
        chosen.add(name)
    if not chosen:
        raise PrepError("--files-to-use names no subset")
    return [s for s in SUBSETS if s in chosen]


# ---------------------------------------------------------------------------- archives


def checksums(md5sums: Path | None) -> dict[str, tuple[str, str]]:
    """{tarball name: (md5, where the value comes from)}: :data:`MD5`, updated from ``md5sums``."""
    sums = {name: (value, "OpenSLR md5sum.txt") for name, value in MD5.items()}
    if md5sums is not None:
        sums.update({name: (value, str(md5sums)) for name, value in read_checksum_file(md5sums).items()})
    return sums


def locate_archive(subset: str, args: argparse.Namespace, target: Path, sums: dict[str, tuple[str, str]]) -> tuple[Path, bool]:
    """The tarball of ``subset`` with its md5 checked: from --archive-dir, an earlier
    download in the target, or a new download. Returns (path, downloaded here)."""
    name = f"{subset}.tar.gz"
    expected, source = sums.get(name, (None, ""))
    if expected is None:
        print(f"warning: no published md5 for {name}; its integrity is not checked", file=sys.stderr)
    if args.archive_dir is not None and (args.archive_dir / name).is_file():
        path = (args.archive_dir / name).resolve()
        if expected:
            check_checksum(path, "md5", expected, source)
        return path, False
    kept = target / name
    if kept.is_file():
        if expected:
            try:
                check_checksum(kept, "md5", expected, source)
            except PrepError as e:
                kept.unlink()
                raise PrepError(f"{e} (the downloaded copy was deleted; run again to download it afresh)") from None
        return kept, True
    url = args.url_base.rstrip("/") + "/" + name
    where = f" (not in --archive-dir {args.archive_dir})" if args.archive_dir is not None else ""
    print(f"downloading {url} -> {kept}{where}")
    download(
        url,
        kept,
        ("md5", expected) if expected else None,
        source,
        hint=f"check the network, or download {name} by hand into a folder passed with --archive-dir",
    )
    return kept, True


# ---------------------------------------------------------------------------- one subset


def prepare_subset(
    subset: str, archive: Path, out: Layout, args: argparse.Namespace, drops: Drops
) -> list[tuple[Path, Path, float]]:
    """Read ``archive`` once and write the subset's audio, transcripts and manifest."""
    target = out.target
    split_dir = target / subset
    out.prepare_folders()
    staging = split_dir / "flac"
    staging.mkdir(parents=True, exist_ok=True)
    prefix = f"LibriSpeech/{subset}/"
    hint = f"Download {subset}.tar.gz again or pass a complete copy with --archive-dir."
    flacs: dict[str, Path] = {}
    texts: dict[str, str] = {}
    seen = False
    for member in iter_archive(archive, drops, hint=hint, desc=f"reading {archive.name}"):
        if not member.name.startswith(prefix):
            continue
        seen = True
        parts = member.name[len(prefix) :].split("/")
        if len(parts) != 3:
            continue
        speaker, chapter, name = parts
        chapter_prefix = f"{speaker}-{chapter}-"
        if name.endswith(".flac"):
            utt = name[: -len(".flac")]
            if not _UTT.fullmatch(utt) or not utt.startswith(chapter_prefix):
                drops.add(BAD_NAME, member.name)
            elif utt in flacs:
                drops.add(TWICE, utt)
            else:
                flacs[utt] = staging / f"{utt}.flac"
                flacs[utt].write_bytes(member.read())
        elif name == f"{speaker}-{chapter}.trans.txt":
            try:
                lines = member.read().decode("utf-8").splitlines()
            except UnicodeDecodeError:
                raise PrepError(f"{archive}: {member.name} is not UTF-8 text. {hint}") from None
            for n, line in enumerate(lines, start=1):
                utt, _, text = line.strip().partition(" ")
                if not utt:
                    continue
                if not _UTT.fullmatch(utt) or not utt.startswith(chapter_prefix):
                    drops.add(BAD_LINE, f"{member.name}:{n}")
                elif utt in texts:
                    drops.add(TWICE, utt)
                else:
                    texts[utt] = text
    if not seen:
        raise PrepError(f"{archive} holds nothing under {prefix}: it is not LibriSpeech's {subset}.tar.gz. {hint}")

    convert = args.convert_wav
    rate = args.sample_rate or DEFAULT_RATE
    bounds = (args.min_duration, args.max_duration) if subset.startswith("train") else (None, None)
    rows: list[tuple[Path, Path, float]] = []
    with progress(total=len(flacs), unit="utt", desc=f"checking {subset}") as bar:
        for utt in sorted(set(flacs) | set(texts)):
            flac = flacs.get(utt)
            reason, text, audio = _check_utterance(utt, flac, texts.get(utt), archive)
            if reason is None:
                reason = duration_drop_reason(len(audio[0]) / audio[1], *bounds)
            if flac is not None:
                bar.update()
            if reason is not None:
                drops.add(reason, utt)
                if flac is not None:
                    flac.unlink()
                continue
            txt = split_dir / "txt" / f"{utt}.txt"
            write_text(txt, text)
            samples, source_rate = audio
            if convert:
                converted = to_int16(samples, source_rate, rate)
                wav = split_dir / "wav" / f"{utt}.wav"
                write_wav(wav, converted, rate)
                flac.unlink()
                rows.append((wav, txt, len(converted) / rate))
            else:
                rows.append((flac, txt, len(samples) / source_rate))
    if convert:
        rmdir_if_empty(staging)
    if not rows:
        raise PrepError(
            f"{archive}: no utterance of {subset} is left ({drops.total} dropped: "
            + ", ".join(f"{n} {r}" for r, n in drops.counts.items())
            + ")"
        )
    return write_sorted_manifest(out.manifest_paths()[subset], rows)


def _check_utterance(utt: str, flac: Path | None, text: str | None, archive: Path):
    """(drop reason or None, transcript, (samples, rate)) for one utterance. The
    transcript is LibriSpeech's, upper-cased with whitespace collapsed; nothing else is
    changed, so characters outside the labels drop the utterance."""
    if flac is None:
        return NO_AUDIO, "", None
    if text is None:
        return NO_TRANSCRIPT, "", None
    text = " ".join(text.split()).upper()
    if not text:
        return EMPTY, "", None
    try:
        text_to_ids(text, LABELS)
    except TranscriptError:
        return BAD_CHARS, "", None
    try:
        audio = decode_audio(flac, f"{archive}: {utt}.flac")
    except AudioError:
        return BAD_AUDIO, "", None
    return None, text, audio


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Download (or read) LibriSpeech tarballs and write transcripts plus libri_*_manifest.csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_args(parser, "data/librispeech")
    parser.add_argument("--files-to-use", default=",".join(SUBSETS), help="comma list of subsets (with or without .tar.gz)")
    parser.add_argument(
        "--archive-dir",
        type=Path,
        default=None,
        help="folder holding local copies of <subset>.tar.gz (missing ones are downloaded)",
    )
    parser.add_argument("--url-base", default=URL_BASE, help="where <subset>.tar.gz is downloaded from")
    parser.add_argument(
        "--md5sums", type=Path, default=None, help="md5sum-format file whose entries replace the built-in OpenSLR md5 sums"
    )
    parser.add_argument(
        "--convert-wav", action="store_true", help="write 16-bit WAV files at --sample-rate instead of keeping the FLAC files"
    )
    parser.add_argument(
        "--sample-rate", type=int, default=None, help=f"sample rate of the WAV files with --convert-wav (None: {DEFAULT_RATE})"
    )
    parser.add_argument(
        "--delete-downloads",
        action="store_true",
        help="delete each downloaded tarball once its subset is prepared (never --archive-dir copies)",
    )
    return parser


def prepare(args: argparse.Namespace) -> int:
    """The whole job; raises PrepError (and the data_loader errors) on bad input."""
    t0 = time.perf_counter()
    target, manifest_dir = check_common_args(args)
    subsets = parse_files_to_use(args.files_to_use)
    if args.sample_rate is not None and not args.convert_wav:
        raise PrepError("--sample-rate applies only with --convert-wav (the FLAC files are kept as published)")
    if args.archive_dir is not None and not args.archive_dir.is_dir():
        raise PrepError(f"{args.archive_dir}: --archive-dir is not a folder")
    sums = checksums(args.md5sums)
    audio = "wav" if args.convert_wav else "flac"
    manifest_rel = relative_dir(manifest_dir, target)

    def settings_for(subset: str) -> dict:
        settings = {"format": MARKER_FORMAT, "audio": audio, "manifest_dir": manifest_rel}
        if args.convert_wav:
            settings["sample_rate"] = args.sample_rate or DEFAULT_RATE
        if subset.startswith("train"):
            settings.update(min_duration=args.min_duration, max_duration=args.max_duration)
        return settings

    layouts = {s: subset_layout(target, manifest_dir, s, audio) for s in subsets}
    groups = [g for g, members in GROUPS.items() if any(s in subsets for s in members)]
    done = {s for s in subsets if layouts[s].is_complete(settings_for(s))}
    top_settings = {"format": MARKER_FORMAT, "subsets": subsets, "manifest_dir": manifest_rel}
    top = read_json(target / MARKER)
    if (
        done == set(subsets)
        and top is not None
        and top.get("settings") == top_settings
        and top.get("subset_files") == {s: layouts[s].files_summary() for s in subsets}
        and all(group_manifest(manifest_dir, g).is_file() for g in groups)
    ):
        print(
            f"LibriSpeech ({', '.join(subsets)}) is already prepared in {target} with these settings; "
            f"nothing to do (delete {target / MARKER} to rebuild the group manifests)"
        )
        return 0

    target.mkdir(parents=True, exist_ok=True)
    drops: dict[str, Drops] = {}
    for subset in subsets:
        out = layouts[subset]
        if subset in done:
            print(f"{subset}: already prepared with these settings")
            drops[subset] = drops_from_dict(out.read_marker().get("drops"))
            continue
        archive, downloaded = locate_archive(subset, args, target, sums)
        if out.started():
            print(f"{subset}: unfinished or made with other settings; redoing it")
        out.clean()
        drops[subset] = Drops()
        rows = prepare_subset(subset, archive, out, args, drops[subset])
        out.write_marker(
            settings_for(subset),
            archive={"name": archive.name, "size": archive.stat().st_size, "md5": sums.get(archive.name, (None,))[0]},
            utterances=len(rows),
            hours=round(sum(r[2] for r in rows) / 3600, 6),
            drops=drops_to_dict(drops[subset]),
        )
        if downloaded and args.delete_downloads:
            archive.unlink()

    summary = []
    for subset in subsets:
        path = layouts[subset].manifest_paths()[subset]
        rows = read_manifest(path)
        summary.append((subset, len(rows), sum(d or 0.0 for *_, d in rows), path))
    old_groups = (top or {}).get("groups", [])
    old_dir = (top or {}).get("settings", {}).get("manifest_dir")
    old_manifest_dir = (target / old_dir).resolve() if isinstance(old_dir, str) else manifest_dir
    for group in old_groups if isinstance(old_groups, list) else []:
        if group in GROUPS and (group not in groups or old_manifest_dir != manifest_dir):
            group_manifest(old_manifest_dir, group).unlink(missing_ok=True)
    for group in groups:
        rows = []
        for subset in GROUPS[group]:
            if subset in subsets:
                rows += read_manifest(layouts[subset].manifest_paths()[subset])
        path = group_manifest(manifest_dir, group)
        write_sorted_manifest(path, rows)
        summary.append((group, len(rows), sum(d for *_, d in rows), path))
    write_json_atomic(
        target / MARKER,
        {
            "settings": top_settings,
            "groups": groups,
            "subset_files": {s: layouts[s].files_summary() for s in subsets},
        },
    )
    print_summary(f"LibriSpeech prepared in {target} ({time.perf_counter() - t0:.1f} s):", summary, drops)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(prepare, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
