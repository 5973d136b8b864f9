"""Build and merge CSV manifests (``wav_path,transcript_path`` rows, sorted by duration).

Library functions (used by ``data/an4.py``) and a CLI with two subcommands::

    python data/utils.py create --data-dir data/an4_dataset/train --output-path train.csv
    python data/utils.py merge --manifests a.csv b.csv --output-path all.csv --max-duration 15
    python data/utils.py merge --manifests val.csv --output-path val_one_word.csv --max-words 1
    python data/utils.py merge --manifests val_words.csv --output-path val_spoken.csv --no-spelled-letters

Pairing rule (deepspeech.pytorch's layout): ``.../wav/x.wav`` goes with ``.../txt/x.txt``
(the last ``wav`` folder in the path becomes ``txt``); a ``.wav`` with no ``wav`` folder
above it is paired with the ``.txt`` of the same name next to it. Durations come from
the audio headers (:func:`data.audio.probe_audio`); rows are sorted by
duration, ties by path, so the output is deterministic. Paths are written relative
to the manifest's folder unless ``--absolute`` is given. deepspeech.pytorch v2
manifests (absolute paths) are read as they are.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

if __name__ == "__main__":  # run as `python data/utils.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.audio import AudioError, probe_audio
from data.manifest import ManifestError, Utterance, read_manifest, write_manifest
from utils import make_parser


@dataclass
class ManifestReport:
    """What :func:`create_manifest` / :func:`merge_manifests` wrote and skipped."""

    utterances: list[Utterance]
    missing_transcripts: list[Path]
    pruned: int = 0
    duplicates: int = 0
    too_many_words: int = 0
    spelled_letters: int = 0

    @property
    def seconds(self) -> float:
        return sum(u.duration for u in self.utterances)


def transcript_path_for(wav: str | Path) -> Path:
    """The transcript of ``wav``: ``.../wav/x.wav`` -> ``.../txt/x.txt``, else ``x.txt`` beside it."""
    wav = Path(wav)
    parts = list(wav.parent.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "wav":
            parts[i] = "txt"
            return Path(*parts, wav.stem + ".txt")
    return wav.with_suffix(".txt")


def find_pairs(data_dir: str | Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """All ``*.wav`` under ``data_dir`` (recursively, sorted) paired with their transcripts.

    Returns ``(pairs, missing)``: ``pairs`` are (wav, txt) with an existing txt, ``missing``
    the wavs whose transcript does not exist.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: data folder not found")
    pairs: list[tuple[Path, Path]] = []
    missing: list[Path] = []
    for wav in sorted(data_dir.rglob("*.wav")):
        if not wav.is_file():
            continue
        txt = transcript_path_for(wav)
        if txt.is_file():
            pairs.append((wav, txt))
        else:
            missing.append(wav)
    return pairs, missing


def with_durations(pairs: Iterable[tuple[Path, Path]]) -> list[Utterance]:
    """Attach header durations; a missing or unreadable wav raises naming the file."""
    out = []
    for wav, txt in pairs:
        if not Path(wav).is_file():
            raise FileNotFoundError(f"{wav}: audio file not found")
        out.append(Utterance(Path(wav), Path(txt), probe_audio(wav).duration))
    return out


def check_duration_range(min_duration: float | None, max_duration: float | None) -> None:
    """Raise ValueError when the bounds are negative or min > max."""
    for name, value in (("min_duration", min_duration), ("max_duration", max_duration)):
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise ValueError(f"--min-duration {min_duration} is larger than --max-duration {max_duration}")


def prune_by_duration(
    utterances: Sequence[Utterance], min_duration: float | None = None, max_duration: float | None = None
) -> list[Utterance]:
    """Keep utterances with ``min_duration <= duration <= max_duration`` (None = no bound)."""
    check_duration_range(min_duration, max_duration)
    return [
        u
        for u in utterances
        if (min_duration is None or u.duration >= min_duration) and (max_duration is None or u.duration <= max_duration)
    ]


def sort_by_duration(utterances: Iterable[Utterance]) -> list[Utterance]:
    """Shortest first; equal durations ordered by wav path (deterministic)."""
    return sorted(utterances, key=lambda u: (u.duration, u.wav.as_posix()))


def _kept_or_raise(
    utterances: list[Utterance], min_duration: float | None, max_duration: float | None, source: object
) -> list[Utterance]:
    kept = sort_by_duration(prune_by_duration(utterances, min_duration, max_duration))
    if not kept:
        raise ValueError(
            f"{source}: all {len(utterances)} utterances are outside the duration range "
            f"[{min_duration}, {max_duration}] s; widen --min-duration/--max-duration"
        )
    return kept


def _write(output_path: Path, utterances: list[Utterance], relative: bool) -> None:
    write_manifest(output_path, utterances, relative=relative)


def create_manifest(
    data_dir: str | Path,
    output_path: str | Path,
    min_duration: float | None = None,
    max_duration: float | None = None,
    relative: bool = True,
) -> ManifestReport:
    """Write a duration-sorted manifest of every ``*.wav`` under ``data_dir`` that has a transcript.

    Wavs without a transcript are skipped and listed in the report. Raises
    FileNotFoundError / AudioError naming the file on a missing folder or bad audio,
    ValueError when no utterance is left to write (nothing is written then).
    """
    check_duration_range(min_duration, max_duration)
    pairs, missing = find_pairs(data_dir)
    if not pairs:
        raise ValueError(f"{data_dir}: no *.wav file with a matching transcript (.../wav/x.wav -> .../txt/x.txt) was found")
    utterances = with_durations(pairs)
    kept = _kept_or_raise(utterances, min_duration, max_duration, data_dir)
    _write(Path(output_path), kept, relative)
    return ManifestReport(kept, missing, pruned=len(utterances) - len(kept))


def merge_manifests(
    manifests: Sequence[str | Path],
    output_path: str | Path,
    min_duration: float | None = None,
    max_duration: float | None = None,
    relative: bool = True,
    max_words: int | None = None,
    no_spelled_letters: bool = False,
) -> ManifestReport:
    """Merge manifests into one, re-sorted by duration, paths rewritten for the new location.

    Inputs may hold relative (to their own folder) or absolute paths. A wav listed
    twice (same resolved path) is kept once and counted in ``duplicates``. ``max_words``
    keeps only utterances whose transcript has at most that many words (e.g. 1: recorded
    single words), counting the others in ``too_many_words``. ``no_spelled_letters`` drops
    utterances whose words are all spelled letters (one character each), counted in
    ``spelled_letters``: what is left are spoken words (digits, commands, ...).
    """
    check_duration_range(min_duration, max_duration)
    if max_words is not None and max_words < 1:
        raise ValueError(f"--max-words must be at least 1, got {max_words}")
    too_many_words = spelled_letters = 0
    seen: set[Path] = set()
    pairs: list[tuple[Path, Path]] = []
    duplicates = 0
    for manifest in manifests:
        for row in read_manifest(manifest):
            wav, txt = row.wav, row.txt
            key = wav.resolve()
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            for p, kind in ((wav, "audio"), (txt, "transcript")):
                if not p.is_file():
                    raise FileNotFoundError(f"{manifest}: {kind} file {p} listed in the manifest does not exist")
            words = txt.read_text(encoding="utf-8", errors="replace").split() if max_words or no_spelled_letters else []
            if max_words is not None and len(words) > max_words:
                too_many_words += 1
                continue
            if no_spelled_letters and all(len(w) == 1 for w in words):
                spelled_letters += 1
                continue
            pairs.append((wav, txt))
    if not pairs:
        fewer = f" with at most {max_words} words" if too_many_words else ""
        fewer += " that is not spelled letters" if spelled_letters else ""
        raise ValueError(f"{', '.join(str(m) for m in manifests)}: the manifests list no utterance{fewer}")
    utterances = with_durations(pairs)
    kept = _kept_or_raise(utterances, min_duration, max_duration, ", ".join(str(m) for m in manifests))
    _write(Path(output_path), kept, relative)
    return ManifestReport(
        kept,
        [],
        pruned=len(utterances) - len(kept),
        duplicates=duplicates,
        too_many_words=too_many_words,
        spelled_letters=spelled_letters,
    )


def describe(report: ManifestReport, output_path: str | Path) -> str:
    """One summary line for a written manifest."""
    extra = []
    if report.pruned:
        extra.append(f"{report.pruned} outside the duration range")
    if report.duplicates:
        extra.append(f"{report.duplicates} duplicates")
    if report.too_many_words:
        extra.append(f"{report.too_many_words} with more words than --max-words")
    if report.spelled_letters:
        extra.append(f"{report.spelled_letters} only spelled letters")
    if report.missing_transcripts:
        extra.append(f"{len(report.missing_transcripts)} without transcript")
    skipped = f" (skipped: {', '.join(extra)})" if extra else ""
    return f"{output_path}: {len(report.utterances)} utterances, {report.seconds / 3600:.3f} h{skipped}"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--output-path", type=Path, required=True, help="manifest CSV to write")
        p.add_argument("--min-duration", type=float, default=None, help="drop utterances shorter than this (s)")
        p.add_argument("--max-duration", type=float, default=None, help="drop utterances longer than this (s)")
        p.add_argument("--absolute", action="store_true", help="write absolute paths instead of relative ones")

    create = sub.add_parser("create", help="manifest of every *.wav under a folder with its .../txt/x.txt transcript")
    create.add_argument("--data-dir", type=Path, required=True, help="folder searched recursively for *.wav")
    common(create)
    merge = sub.add_parser("merge", help="merge manifests, re-sorted by duration")
    merge.add_argument("--manifests", type=Path, nargs="+", required=True, help="manifest CSVs to merge")
    merge.add_argument(
        "--max-words", type=int, default=None, help="keep only utterances whose transcript has at most this many words"
    )
    merge.add_argument(
        "--no-spelled-letters",
        action="store_true",
        help="drop utterances made only of spelled letters (one-character words)",
    )
    common(merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    relative = not args.absolute
    try:
        if args.command == "create":
            report = create_manifest(args.data_dir, args.output_path, args.min_duration, args.max_duration, relative)
            if report.missing_transcripts:
                shown = ", ".join(str(p) for p in report.missing_transcripts[:5])
                more = len(report.missing_transcripts) - 5
                print(
                    f"warning: skipped {len(report.missing_transcripts)} wav files without a transcript: "
                    f"{shown}{f' and {more} more' if more > 0 else ''}",
                    file=sys.stderr,
                )
        else:
            report = merge_manifests(
                args.manifests,
                args.output_path,
                args.min_duration,
                args.max_duration,
                relative,
                max_words=args.max_words,
                no_spelled_letters=args.no_spelled_letters,
            )
    except (FileNotFoundError, ManifestError, AudioError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe(report, args.output_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
