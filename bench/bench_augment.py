"""Cost of the training-time augmentation per epoch, measured on real training audio.

    python bench/bench_augment.py --manifest data/an4_train_manifest.csv --max-utterances 300

Times what :class:`data.data_loader.SpectrogramDataset` does per utterance after its
audio cache is warm: ``Augmentor.waveform``, the spectrogram, ``Augmentor.spectrogram``
(SpecAugment), on one thread. ``--max-utterances`` utterances spread evenly over the
manifest (it is sorted by duration) are timed after one untimed pass (which also decodes
the babble talkers, as the first epoch does), and the time per audio second is
extrapolated to the whole manifest (``epoch s``; 858 utterances, 2,315 s of audio for
AN4 train). Rows: no augmentation, the recipe (speed/volume + SpecAugment), each
recording-condition augmentation alone at probability 1 on top of the recipe, all of
them at probability 1, and the recipe's mix (``data.augment.RECIPE_MIX``), with and without its padding.

Process CPU time is reported next to wall time: on a shared machine the wall time also
counts other processes. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from data.audio import AudioConfig, load_audio, probe_audio, spectrogram
from data.augment import RECIPE_MIX, AugmentConfig, Augmentor
from data.manifest import read_manifest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=Path("data/an4_train_manifest.csv"), help="training manifest")
    p.add_argument("--max-utterances", type=int, default=300, help="utterances timed (spread over the manifest)")
    p.add_argument("--runs", type=int, default=1, help="timed passes per row (the fastest is reported)")
    p.add_argument("--seed", type=int, default=123456)
    return p


def configs(manifest: Path) -> dict[str, AugmentConfig]:
    recipe = AugmentConfig(babble_manifest=str(manifest))
    rows = {"none": AugmentConfig.none(), "recipe (speed/volume + SpecAugment)": recipe}
    for name in AugmentConfig.probabilities():
        rows[f"recipe + {name.removesuffix('_prob')} (p=1)"] = replace(recipe, **{name: 1.0})
    rows["recipe + all (p=1)"] = replace(recipe, **{name: 1.0 for name in AugmentConfig.probabilities()})
    rows["recipe + RECIPE_MIX"] = replace(recipe, **RECIPE_MIX)
    rows["recipe + RECIPE_MIX without padding"] = replace(recipe, **{**RECIPE_MIX, "pad_prob": 0.0})
    return rows


def time_pass(aug: Augmentor | None, audios: list[np.ndarray], cfg: AudioConfig, seed: int) -> tuple[float, float]:
    """(wall s, process CPU s) of features for every utterance, with augmentation if ``aug``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i, audio in enumerate(audios):
        if aug is None:
            spectrogram(audio, cfg)
        else:
            rngs = aug.rngs_for(seed, 1, i)
            aug.spectrogram(torch.from_numpy(spectrogram(aug.waveform(audio, rngs), cfg)), rngs)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_utterances < 1 or args.runs < 1:
        print("error: --max-utterances and --runs must be at least 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    cfg = AudioConfig()
    rows = read_manifest(args.manifest)
    total_seconds = sum(probe_audio(wav).duration for wav, *_ in rows)
    idx = np.unique(np.round(np.linspace(0, len(rows) - 1, min(args.max_utterances, len(rows)))).astype(int))
    audios = [load_audio(rows[i][0], cfg.sample_rate) for i in idx]
    seconds = sum(a.size for a in audios) / cfg.sample_rate
    scale = total_seconds / seconds
    print(
        f"{len(audios)} of {len(rows)} utterances ({seconds:.0f} of {total_seconds:.0f} s of audio) of "
        f"{args.manifest}; epoch = x{scale:.2f}"
    )
    print(f"{'configuration':44s} {'epoch wall s':>12s} {'epoch CPU s':>12s} {'x realtime':>11s}")
    summary = {"utterances_timed": len(audios), "manifest_utterances": len(rows), "manifest_seconds": round(total_seconds, 1)}
    for name, aug_cfg in configs(args.manifest).items():
        aug = Augmentor(aug_cfg, cfg.sample_rate) if aug_cfg.enabled else None
        time_pass(aug, audios, cfg, args.seed)  # warm-up: caches, babble talkers
        best = min((time_pass(aug, audios, cfg, args.seed) for _ in range(args.runs)), key=lambda r: r[1])
        wall, cpu = best[0] * scale, best[1] * scale
        print(f"{name:44s} {wall:12.1f} {cpu:12.1f} {total_seconds / cpu:11.0f}")
        summary[name] = {"epoch_wall_s": round(wall, 2), "epoch_cpu_s": round(cpu, 2)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
