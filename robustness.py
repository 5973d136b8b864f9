"""Corruption suite: a model's WER/CER on corrupted copies of a manifest.

    python robustness.py --model-path models/an4.pth --manifest data/an4_val_manifest.csv \\
        --babble-manifest data/an4_train_manifest.csv --lm-path models/an4_3gram.arpa --output docs/robustness.md
    python robustness.py ... --frontends all      # also: feature front ends, without retraining
    python robustness.py --model-path old.pth new.pth ...   # several models side by side, same audio

Each condition (noise, babble, telephone, 8 kHz, reverberation, level, clipping, tight
segmentation, padding with silence, a DC offset, microphone EQ; see CONDITIONS) is a seeded corruption from
``data/corrupt.py`` applied to every utterance of ``--manifest``. The corrupted audio is
written as float WAVs with a manifest per condition under ``--work-dir``, with a marker
file recording what made it; a later run with the same inputs reuses it. The model is
evaluated on every condition with greedy decoding and, with ``--lm-path``, beam search
with the LM; the table (WER/CER per condition, the average over the corrupted ones, the
model and this command) is written to ``--output`` between marker comments, so text
around it is kept, and the file is replaced atomically. With several ``--model-path`` values
every model is evaluated on the same corrupted audio in the same run, and a comparison table
(WER per condition and model, the average and the worst corrupted condition) comes first.

Babble is made of ``--babble-manifest`` utterances, which must be other speakers than
``--manifest``'s: for AN4, the training set (its validation speakers are held out of it).
Evaluate on validation data: the test set is for the model chosen at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from data import corrupt
from data.audio import AudioConfig, frame_levels_db, normalize_level
from data.manifest import spread_evenly

SUITE_VERSION = 1
"""Bump when a condition's definition here changes: it invalidates every cached work dir (as
does any change to data/corrupt.py, whose digest is part of the fingerprint)."""

BEGIN = "<!-- robustness.py: begin (generated; edits inside are overwritten) -->"
END = "<!-- robustness.py: end -->"

log = logging.getLogger("deepspeech.robustness")


# ---------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """One corruption: ``apply(audio, sample_rate, rng, babble_talkers)`` -> audio."""

    name: str
    description: str
    apply: Callable[[np.ndarray, int, np.random.Generator, Callable[[int], list[np.ndarray]]], np.ndarray]
    needs_babble: bool = False


BABBLE_TALKERS = 4
TIGHT_MARGIN_S = 0.03
PADDED_S = 1.0
DC_OFFSET = 0.05
CLIP_FRACTION = 0.05


def _noise(kind: str, snr: float) -> Condition:
    add = corrupt.add_white_noise if kind == "white" else corrupt.add_pink_noise
    return Condition(f"{kind}_snr{snr:g}", f"{kind} noise, SNR {snr:g} dB", lambda x, sr, rng, babble: add(x, snr, rng))


def _tight(x: np.ndarray, sr: int, rng: np.random.Generator, babble) -> np.ndarray:
    lead, trail = rng.uniform(0.0, TIGHT_MARGIN_S, size=2)
    return corrupt.trim_silence(x, sr, float(lead), float(trail))


def _reverb(x: np.ndarray, sr: int, rng: np.random.Generator, babble) -> np.ndarray:
    return corrupt.reverberate(x, corrupt.room_impulse_response(corrupt.draw_room(rng), sr, rng))


CONDITIONS: tuple[Condition, ...] = (
    Condition("clean", "unchanged", lambda x, sr, rng, babble: np.asarray(x, dtype=np.float32).copy()),
    *(_noise(kind, snr) for kind in ("white", "pink") for snr in (20.0, 10.0, 5.0)),
    Condition(
        "babble_snr10",
        f"babble of {BABBLE_TALKERS} --babble-manifest utterances, SNR 10 dB",
        lambda x, sr, rng, babble: corrupt.add_babble(x, babble(BABBLE_TALKERS), 10.0, rng),
        needs_babble=True,
    ),
    Condition("telephone", "8 kHz, 300-3400 Hz band-pass, 8-bit mu-law", lambda x, sr, rng, babble: corrupt.telephone(x, sr)),
    Condition(
        "8khz",
        "resampled to 8 kHz and back (nothing above 4 kHz)",
        lambda x, sr, rng, babble: corrupt.telephone(x, sr, band=None, bits=None),
    ),
    Condition("reverb", "simulated room: RT60 0.3-0.8 s, 30-150 m^3, talker at 0.3-1.0 m", _reverb),
    Condition("level_-30dB", "30 dB quieter, 16-bit", lambda x, sr, rng, babble: corrupt.quantize(corrupt.gain(x, -30.0), 16)),
    Condition(
        "clipping",
        f"hard clipping of the loudest {100 * CLIP_FRACTION:g} % of the samples",
        lambda x, sr, rng, babble: corrupt.clip_fraction(x, CLIP_FRACTION),
    ),
    Condition("tight", f"silence trimmed to 0-{1000 * TIGHT_MARGIN_S:g} ms before and after the speech", _tight),
    Condition(
        "padded",
        f"{PADDED_S:g} s of digital silence added before and after",
        lambda x, sr, rng, babble: corrupt.pad_silence(x, sr, PADDED_S, PADDED_S),
    ),
    Condition(
        "dc_offset",
        f"a DC offset of {DC_OFFSET:g} ({100 * DC_OFFSET:g} % of full scale)",
        lambda x, sr, rng, babble: np.asarray(x, dtype=np.float32) + np.float32(DC_OFFSET),
    ),
    Condition(
        "eq",
        "random microphone EQ: low and high shelves of -10..+10 dB",
        lambda x, sr, rng, babble: corrupt.random_eq(x, sr, rng, max_db=10.0),
    ),
)


def condition_rng(seed: int, condition: str, index: int) -> np.random.Generator:
    """The generator of one utterance in one condition (independent of the other conditions)."""
    return np.random.default_rng([seed, zlib.crc32(condition.encode()), index])


def _digest(path: Path | None) -> str | None:
    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Talkers:
    """Babble talkers: utterances of a manifest, decoded on first use."""

    def __init__(self, manifest: Path, sample_rate: int, exclude: Sequence[Path]) -> None:
        from data.manifest import read_manifest

        self.paths = [wav for wav, *_ in read_manifest(manifest)]
        overlap = {p.resolve() for p in self.paths} & {p.resolve() for p in exclude}
        if overlap:
            raise ValueError(
                f"{manifest}: {len(overlap)} babble utterances are in the evaluated manifest "
                f"(e.g. {min(overlap)}); babble must come from other speakers"
            )
        if len(self.paths) < BABBLE_TALKERS:
            raise ValueError(f"{manifest}: babble needs at least {BABBLE_TALKERS} utterances")
        self.sample_rate = sample_rate
        self._cache: dict[int, np.ndarray] = {}

    def draw(self, k: int, rng: np.random.Generator) -> list[np.ndarray]:
        from data.audio import load_audio

        out = []
        for i in rng.choice(len(self.paths), size=k, replace=False):
            if int(i) not in self._cache:
                self._cache[int(i)] = load_audio(self.paths[int(i)], self.sample_rate)
            out.append(self._cache[int(i)])
        return out


def build_condition(
    condition: Condition, rows: list, work_dir: Path, fingerprint: dict, sample_rate: int, seed: int, talkers: Talkers | None
) -> tuple[Path, bool]:
    """Write the corrupted copy of ``rows`` for ``condition`` (or reuse it).

    Returns:
        (its manifest, True when it was reused).
    """
    from data.audio import load_audio
    from data.manifest import write_manifest

    folder = work_dir / condition.name
    marker = folder / ".complete.json"
    manifest = folder / "manifest.csv"
    wanted = {**fingerprint, "condition": condition.name, "description": condition.description}
    if marker.is_file() and manifest.is_file():
        try:
            if json.loads(marker.read_text()) == wanted:
                return manifest, True
        except json.JSONDecodeError:
            pass
    tmp = work_dir / f".{condition.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "wav").mkdir(parents=True)
    (tmp / "txt").mkdir()
    out_rows = []
    for i, (wav, txt, _) in enumerate(rows):
        rng = condition_rng(seed, condition.name, i)
        audio = load_audio(wav, sample_rate)
        babble = (lambda k, rng=rng: talkers.draw(k, rng)) if talkers is not None else None
        corrupted = condition.apply(audio, sample_rate, rng, babble)
        name = f"{i:05d}-{Path(wav).stem}"
        sf.write(str(tmp / "wav" / f"{name}.wav"), corrupted, sample_rate, subtype="FLOAT")
        shutil.copyfile(txt, tmp / "txt" / f"{name}.txt")
        out_rows.append((folder / "wav" / f"{name}.wav", folder / "txt" / f"{name}.txt"))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    write_manifest(manifest, out_rows)
    tmp_marker = marker.with_name(marker.name + ".tmp")
    tmp_marker.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_marker, marker)
    return manifest, False


# ---------------------------------------------------------------------------- front ends


@dataclass(frozen=True)
class Calibration:
    """Statistics of the training audio.

    Attributes:
        floor_db: background level, dBFS (10th percentile of 10 ms frames, median over utterances).
        active_db: loud speech level, dBFS (95th percentile, median over utterances).
        feature_mean, feature_std: mean and standard deviation of every un-normalised
            feature value (log1p |STFT|) of all the utterances together.
        n_utterances: utterances measured.
    """

    floor_db: float
    active_db: float
    feature_mean: float
    feature_std: float
    n_utterances: int


def calibrate(manifest: Path, audio_config, max_utterances: int = 200) -> Calibration:
    """:class:`Calibration` from up to ``max_utterances`` utterances of ``manifest`` (spread
    evenly over it), with the model's features (``audio_config``, normalisation off)."""
    from data.audio import load_audio, spectrogram
    from data.manifest import read_manifest

    cfg = dataclasses.replace(audio_config, normalize="none", feature_mean=None, feature_std=None)
    rows = spread_evenly(read_manifest(manifest), max_utterances)
    floors, actives, total, total_sq, count = [], [], 0.0, 0.0, 0
    for wav, *_ in rows:
        audio = load_audio(wav, cfg.sample_rate)
        floor, active = _levels(audio, cfg.sample_rate)
        floors.append(floor)
        actives.append(active)
        values = spectrogram(audio, cfg).astype(np.float64)
        total, total_sq, count = total + float(values.sum()), total_sq + float((values**2).sum()), count + values.size
    mean = total / count
    return Calibration(
        float(np.median(floors)), float(np.median(actives)), mean, math.sqrt(max(total_sq / count - mean**2, 0.0)), len(rows)
    )


def _levels(audio: np.ndarray, sample_rate: int) -> tuple[float, float]:
    db = frame_levels_db(audio, sample_rate)
    return float(np.percentile(db, 10)), float(np.percentile(db, 95))


PAD_S = 0.3

FRONTEND_CONDITIONS = ("clean", "tight", "8khz", "telephone", "level_-30dB")
"""Where a front end could matter: little silence, an empty upper band, a low level."""


@dataclass(frozen=True)
class Frontend:
    """A change of the feature input at test time: ``prepare(audio, sample_rate, cal)`` gives
    ``(audio for the spectrogram, offset, length)``; with a length, the model sees only the
    frames of ``audio[offset:offset + length]`` (the spectrogram, normalisation included, is
    still computed over all of it), else all frames."""

    name: str
    description: str
    prepare: Callable[[np.ndarray, int, Calibration], tuple[np.ndarray, int, int | None]]
    global_norm: bool = False  # one mean/std for all utterances (the training audio's) instead of per utterance


def _floor_noise(n: int, cal: Calibration, sample_rate: int) -> np.ndarray:
    # Seeded by the length: the same utterance always gets the same noise.
    return corrupt.white_noise(n, np.random.default_rng(n)) * np.float32(10.0 ** (cal.floor_db / 20.0))


def _pad(audio: np.ndarray, sample_rate: int, cal: Calibration | None) -> np.ndarray:
    """``PAD_S`` seconds before and after: digital silence (``cal`` None) or background noise."""
    if cal is None:
        return corrupt.pad_silence(audio, sample_rate, PAD_S, PAD_S)
    n = int(PAD_S * sample_rate)
    noise = _floor_noise(audio.size + 2 * n, cal, sample_rate)
    return np.concatenate([noise[:n], audio, noise[-n:]]).astype(np.float32)


def _level_norm(audio: np.ndarray, sample_rate: int, cal: Calibration) -> np.ndarray:
    return normalize_level(audio, AudioConfig(sample_rate=sample_rate, level_db=cal.active_db))


def _floor_fill(audio: np.ndarray, sample_rate: int, cal: Calibration) -> np.ndarray:
    return (audio + _floor_noise(audio.size, cal, sample_rate)).astype(np.float32)


def _crop_to_original(audio: np.ndarray, sample_rate: int, cal: Calibration) -> tuple[np.ndarray, int, int]:
    return _pad(audio, sample_rate, cal), int(PAD_S * sample_rate), audio.size


FRONTENDS: tuple[Frontend, ...] = (
    Frontend("as-is", "the model's features (per-utterance mean/std normalisation)", lambda x, sr, cal: (x, 0, None)),
    Frontend(
        "zero-pad", f"{PAD_S:g} s of digital silence added before and after", lambda x, sr, cal: (_pad(x, sr, None), 0, None)
    ),
    Frontend(
        "noise-pad",
        f"{PAD_S:g} s of white noise at the training background level added before and after",
        lambda x, sr, cal: (_pad(x, sr, cal), 0, None),
    ),
    Frontend(
        "noise-pad-stats", "noise-pad for the normalisation statistics only; the model sees the clip's frames", _crop_to_original
    ),
    Frontend(
        "level-norm",
        "gain to the training speech level (95th percentile of 10 ms frames)",
        lambda x, sr, cal: (_level_norm(x, sr, cal), 0, None),
    ),
    Frontend(
        "floor-fill",
        "white noise at the training background level added to the whole clip",
        lambda x, sr, cal: (_floor_fill(x, sr, cal), 0, None),
    ),
    Frontend(
        "level-norm+floor-fill",
        "level-norm, then floor-fill",
        lambda x, sr, cal: (_floor_fill(_level_norm(x, sr, cal), sr, cal), 0, None),
    ),
    Frontend(
        "level-norm+noise-pad", "level-norm, then noise-pad", lambda x, sr, cal: (_pad(_level_norm(x, sr, cal), sr, cal), 0, None)
    ),
    Frontend(
        "global-norm",
        "normalisation by the training audio's feature mean and std instead of the utterance's own",
        lambda x, sr, cal: (x, 0, None),
        global_norm=True,
    ),
)


# ---------------------------------------------------------------------------- evaluation


def evaluate_manifests(
    model_path: Path,
    manifests: dict[str, Path],
    decoders: dict[str, list[str]],
    batch_size: int,
    frontend: Frontend | None = None,
    calibration: Calibration | None = None,
) -> dict[tuple[str, str], dict]:
    """WER/CER of the model on each manifest with each decoder.

    The only place this script calls the project's evaluation code: checkpoint.load_model,
    decoder.DecoderConfig + decoder.make_decoder, data_loader.SpectrogramDataset,
    BucketingSampler, AudioDataLoader and inference.evaluate; with a front end also
    data.audio.spectrogram and the dataset's
    load/ids/wav_paths/texts (:func:`calibrate` computes training statistics with
    load_audio and spectrogram).

    Args:
        decoders: name -> decoder flags (as test.py takes them, e.g. ``["--decoder", "greedy"]``).
        frontend: computes the features from a changed input (None: the dataset's own).

    Returns:
        {(condition, decoder name): {"wer", "cer", "n"}}.
    """
    import torch
    from torch.utils.data import Dataset

    from checkpoint import load_model
    from data.audio import spectrogram
    from data.data_loader import AudioDataLoader, BucketingSampler, SpectrogramDataset
    from decoder import DecoderConfig, make_decoder
    from inference import evaluate

    model, ckpt = load_model(model_path)
    audio_cfg, labels = ckpt.audio_config, list(ckpt.labels)
    raw_cfg = dataclasses.replace(audio_cfg, normalize="none", feature_mean=None, feature_std=None)

    class FrontendView(Dataset):
        """A SpectrogramDataset's items with the features computed by ``frontend``."""

        def __init__(self, base: SpectrogramDataset) -> None:
            self.base = base

        def __len__(self) -> int:
            return len(self.base)

        def __getitem__(self, i: int):
            audio, offset, length = frontend.prepare(self.base.load(i), audio_cfg.sample_rate, calibration)
            if frontend.global_norm:
                spect = spectrogram(audio, raw_cfg)
                spect = (spect - calibration.feature_mean) / calibration.feature_std
            else:
                spect = spectrogram(audio, audio_cfg)
            if length is not None:
                first = offset // audio_cfg.hop_length
                spect = spect[:, first : first + audio_cfg.n_frames(length)]
            features = torch.from_numpy(np.ascontiguousarray(spect, dtype=np.float32))
            return features, list(self.base.ids[i]), str(self.base.wav_paths[i]), self.base.texts[i]

    results = {}
    for name, flags in decoders.items():
        parser = argparse.ArgumentParser()
        DecoderConfig.add_args(parser)
        with make_decoder(DecoderConfig.from_args(parser.parse_args(flags)), labels) as decoder:
            for condition, manifest in manifests.items():
                dataset = SpectrogramDataset(manifest, audio_cfg, labels)
                view = dataset if frontend is None else FrontendView(dataset)
                loader = AudioDataLoader(view, batch_sampler=BucketingSampler(len(dataset), batch_size=batch_size, shuffle=False))
                result = evaluate(model, loader, decoder, "cpu")
                results[(condition, name)] = {"wer": result.wer, "cer": result.cer, "n": result.n_utterances}
                log.info(
                    "%-14s %-8s %s WER %.1f CER %.1f", condition, name, frontend.name if frontend else "", result.wer, result.cer
                )
    return results


# ---------------------------------------------------------------------------- report


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def suite_table(conditions: Sequence[Condition], decoders: Sequence[str], results: dict) -> list[str]:
    head = "| condition | corruption | " + " | ".join(f"{d} WER | {d} CER" for d in decoders) + " |"
    lines = [head, "|---|---|" + "---:|---:|" * len(decoders)]
    for c in conditions:
        cells = " | ".join(f"{results[(c.name, d)]['wer']:.1f} | {results[(c.name, d)]['cer']:.1f}" for d in decoders)
        lines.append(f"| {c.name} | {c.description} | {cells} |")
    corrupted = [c.name for c in conditions if c.name != "clean"]
    cells = " | ".join(
        f"**{_mean([results[(n, d)]['wer'] for n in corrupted]):.1f}** | "
        f"**{_mean([results[(n, d)]['cer'] for n in corrupted]):.1f}**"
        for d in decoders
    )
    lines.append(f"| **average** | the {len(corrupted)} corrupted conditions | {cells} |")
    return lines


def frontend_table(conditions: Sequence[Condition], frontends: Sequence[Frontend], decoder: str, results: dict) -> list[str]:
    lines = [
        "| front end | " + " | ".join(c.name for c in conditions) + " | average corrupted |",
        "|---|" + "---:|" * (len(conditions) + 1),
    ]
    for f in frontends:
        wers = [results[f.name][(c.name, decoder)]["wer"] for c in conditions]
        corrupted = [w for c, w in zip(conditions, wers) if c.name != "clean"]
        lines.append(f"| {f.name} | " + " | ".join(f"{w:.1f}" for w in wers) + f" | {_mean(corrupted):.1f} |")
    return lines


def comparison_table(conditions: Sequence[Condition], decoders: Sequence[str], names: Sequence[str], results: dict) -> list[str]:
    """WER per condition (rows) for every model and decoder (columns); ``results[name]`` is
    :func:`evaluate_manifests`'s result for that model."""
    columns = [(n, d) for n in names for d in decoders]
    lines = [
        "| condition | " + " | ".join(f"{n} {d} WER" for n, d in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for c in conditions:
        lines.append(f"| {c.name} | " + " | ".join(f"{results[n][(c.name, d)]['wer']:.1f}" for n, d in columns) + " |")
    corrupted = [c.name for c in conditions if c.name != "clean"]
    for label, reduce in (("average", _mean), ("worst", lambda v: max(v) if v else math.nan)):
        cells = " | ".join(f"**{reduce([results[n][(c, d)]['wer'] for c in corrupted]):.1f}**" for n, d in columns)
        lines.append(f"| **{label}** of the {len(corrupted)} corrupted | {cells} |")
    return lines


def write_report(path: Path, block: str) -> None:
    """Put ``block`` between the markers of ``path`` (keeping the text around them), or
    write a new file; atomically."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    wrapped = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + wrapped + after
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "# Robustness\n\n") + wrapped + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model-path",
        type=Path,
        nargs="+",
        default=[Path("models/an4.pth")],
        help="checkpoint(s) to evaluate; several are compared side by side on the same audio",
    )
    p.add_argument("--manifest", type=Path, required=True, help="manifest to corrupt (validation data, not test)")
    p.add_argument(
        "--babble-manifest",
        type=Path,
        default=None,
        help="utterances of other speakers for babble (AN4: the training manifest); without it the babble condition is left out",
    )
    p.add_argument("--lm-path", type=Path, default=None, help="also evaluate beam search with this LM (ARPA)")
    p.add_argument(
        "--max-utterances",
        type=int,
        default=None,
        help="evaluate this many utterances, spread evenly over the manifest (default: all)",
    )
    p.add_argument("--seed", type=int, default=1234, help="seed of every corruption")
    p.add_argument(
        "--conditions",
        nargs="+",
        default=None,
        choices=[c.name for c in CONDITIONS],
        help="run only these conditions (default: all)",
    )
    p.add_argument(
        "--frontends",
        nargs="+",
        default=None,
        choices=["all"] + [f.name for f in FRONTENDS],
        help="also compare these feature front ends (greedy) on every condition; calibrated on "
        "--babble-manifest (training audio)",
    )
    p.add_argument(
        "--frontend-conditions",
        nargs="+",
        default=None,
        choices=[c.name for c in CONDITIONS],
        help="conditions the front ends are compared on (default: " + " ".join(FRONTEND_CONDITIONS) + ")",
    )
    p.add_argument("--output", type=Path, default=Path("docs/robustness.md"), help="markdown report")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path("runs/robustness"),
        help="corrupted audio and manifests (reused when the inputs are unchanged)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.max_utterances is not None and args.max_utterances < 1:
        parser.error("--max-utterances must be at least 1")
    if args.frontends and args.babble_manifest is None:
        parser.error("--frontends needs --babble-manifest: the front ends are calibrated on training audio")
    if args.frontend_conditions and not args.frontends:
        parser.error("--frontend-conditions needs --frontends")
    if args.frontends and len(args.model_path) > 1:
        parser.error("--frontends compares front ends for one model: give one --model-path")
    for flag in ("model_path", "manifest", "babble_manifest", "lm_path"):
        for value in getattr(args, flag) if flag == "model_path" else [getattr(args, flag)]:
            if value is not None and not value.is_file():
                parser.error(f"--{flag.replace('_', '-')} {value}: file not found")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from checkpoint import CheckpointError, load_checkpoint
    from data.audio import AudioError
    from data.manifest import ManifestError, read_manifest
    from data.text import TranscriptError

    try:
        ckpts = [load_checkpoint(path) for path in args.model_path]
        ckpt = ckpts[0]
        sample_rate = ckpt.audio_config.sample_rate
        for path, other in zip(args.model_path[1:], ckpts[1:]):
            if other.audio_config.sample_rate != sample_rate:
                raise ValueError(
                    f"{path} works at {other.audio_config.sample_rate} Hz and {args.model_path[0]} at {sample_rate} Hz: "
                    "compare models of one sample rate"
                )
        rows = spread_evenly(read_manifest(args.manifest), args.max_utterances)
        wanted = [c for c in CONDITIONS if args.conditions is None or c.name in args.conditions]
        conditions = [c for c in wanted if not c.needs_babble or args.babble_manifest is not None]
        talkers = Talkers(args.babble_manifest, sample_rate, [w for w, *_ in rows]) if args.babble_manifest is not None else None
        fingerprint = {
            "suite_version": SUITE_VERSION,
            "corrupt_sha256": _digest(Path(corrupt.__file__)),
            "seed": args.seed,
            "sample_rate": sample_rate,
            "manifest": str(args.manifest.resolve()),
            "manifest_sha256": _digest(args.manifest),
            "utterances": [str(w) for w, *_ in rows],
            "babble_sha256": _digest(args.babble_manifest),
        }
        start = time.perf_counter()
        manifests = {}
        for c in conditions:
            fp = fingerprint if c.needs_babble else {**fingerprint, "babble_sha256": None}
            manifests[c.name], reused = build_condition(c, rows, args.work_dir, fp, sample_rate, args.seed, talkers)
            log.info("%-14s %s (%s)", c.name, "reused" if reused else "written", manifests[c.name])
        decoders = {"greedy": ["--decoder", "greedy"]}
        if args.lm_path is not None:
            decoders["beam+LM"] = ["--decoder", "beam", "--lm-path", str(args.lm_path)]
        all_results = [evaluate_manifests(path, manifests, decoders, args.batch_size) for path in args.model_path]
        results = all_results[0]
        frontends, calibration, frontend_results = [], None, {}
        if args.frontends:
            frontends = list(FRONTENDS) if "all" in args.frontends else [f for f in FRONTENDS if f.name in args.frontends]
            calibration = calibrate(args.babble_manifest, ckpt.audio_config)
            names = args.frontend_conditions or FRONTEND_CONDITIONS
            frontend_conditions = [c for c in conditions if c.name in names]
            for f in frontends:
                frontend_results[f.name] = evaluate_manifests(
                    args.model_path[0],
                    {c.name: manifests[c.name] for c in frontend_conditions},
                    {"greedy": ["--decoder", "greedy"]},
                    args.batch_size,
                    f,
                    calibration,
                )
                log.info("front end %s done", f.name)
        elapsed = time.perf_counter() - start
    except (CheckpointError, AudioError, ManifestError, TranscriptError, FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def describe(path: Path, ckpt) -> str:
        cfg = ckpt.model_config
        return (
            f"`{path}` ({cfg.arch}, {cfg.hidden_layers} x {cfg.hidden_size} "
            f"{'bi' if cfg.bidirectional else 'uni'}directional {cfg.rnn_type}, "
            f"{ckpt.n_parameters:,} parameters, sha256 {_digest(path)[:12]})"
        )

    setup = (
        f"{len(rows)} utterances of `{args.manifest}`, seed {args.seed}"
        + (f", babble from `{args.babble_manifest}`" if args.babble_manifest else "")
        + (f", LM `{args.lm_path}` (beam search, the LM's tuned alpha/beta)" if args.lm_path else "")
        + f". WER and CER in %, corpus level. {elapsed:.0f} s."
    )
    command = ["```", "python robustness.py " + shlex.join(argv), "```", ""]
    if len(args.model_path) == 1:
        lines = ["## Corruption suite", "", f"Model {describe(args.model_path[0], ckpt)}; {setup}", "", *command]
        lines += suite_table(conditions, list(decoders), results)
    else:
        names = [f"M{i + 1}" for i in range(len(args.model_path))]
        lines = ["## Corruption suite", "", f"{len(names)} models on the same audio; {setup}", "", *command]
        lines += [f"* **{n}**: {describe(path, c)}" for n, path, c in zip(names, args.model_path, ckpts)]
        lines += ["", *comparison_table(conditions, list(decoders), names, dict(zip(names, all_results)))]
        for n, path, r in zip(names, args.model_path, all_results):
            lines += ["", f"### {n}: `{path}`", "", *suite_table(conditions, list(decoders), r)]
    if frontends:
        lines += [
            "",
            "### Front ends (greedy WER, same model, no retraining)",
            "",
            (
                f"Calibrated on {calibration.n_utterances} utterances of `{args.babble_manifest}`: background "
                f"{calibration.floor_db:.1f} dBFS, speech {calibration.active_db:.1f} dBFS (10 ms frames, 10th and 95th "
                "percentiles, medians over utterances); features (log1p |STFT|) mean "
                f"{calibration.feature_mean:.3f}, std {calibration.feature_std:.3f}."
            ),
            "",
            *[f"* **{f.name}**: {f.description}" for f in frontends],
            "",
            *frontend_table(frontend_conditions, frontends, "greedy", frontend_results),
        ]
    block = "\n".join(lines) + "\n"
    write_report(args.output, block)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
