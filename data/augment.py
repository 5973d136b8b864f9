"""Training-time data augmentation: the recording conditions of deployment, plus
speed/volume perturbation and SpecAugment.

Only the training dataset gets augmentation (validation and test never do), and the
settings are never saved as part of the model. :class:`AugmentConfig` owns the flags
(:meth:`AugmentConfig.add_args`, :meth:`AugmentConfig.from_args`); its defaults are the
AN4 recipe (speed/volume perturbation and SpecAugment on, everything else off).

Every random choice comes from explicit :class:`numpy.random.Generator` streams, one per
augmentation, seeded from ``(seed, epoch, index, stream)``
(:meth:`Augmentor.rngs_for`; :class:`data.data_loader.SpectrogramDataset` passes its
seed, epoch and utterance index). So an augmented epoch is the same whatever the number
of DataLoader workers, an interrupted run resumes exactly, and switching one
augmentation on or off does not change the draws of the others.

Order (a recording chain: talker, room, microphone, converter, channel, segmenter):
word crop -> speed + gain -> trim -> reverberation -> noise -> babble -> microphone EQ -> level ->
clipping -> telephone -> spectrogram (with its normalisation) -> SpecAugment masks. Each
waveform step except speed + gain is applied with its own probability (``*_prob``, 0 =
off). The signal processing is :mod:`data.corrupt` (shared with ``robustness.py``).

* Word crop (``word_crop_prob``, before everything else, :meth:`Augmentor.crop`): the
  utterance is replaced by 1 to ``word_crop_max_words`` consecutive words of it, cut at
  the quietest point between words (:func:`data.words.crop_words`), and its transcript by
  those words: isolated words as voice commands and crowd-sourced clips have them. It
  needs ``word_alignments`` (``python align.py``); utterances of one word, or without an
  alignment that matches their transcript, are left whole.
* Speed perturbation resamples the waveform (Kaldi-style "speed", not sox "tempo"):
  a factor ``f`` makes the utterance ``1/f`` as long and scales every frequency by ``f``.
* Gain multiplies by ``10 ** (dB / 20)``; nothing is clipped (the features are float).
* Trim (``trim_prob``): cut leading and trailing silence down to margins
  ``U(trim_margin_s)`` seconds each (:func:`data.corrupt.trim_silence`), the tight clips
  of voice-activated or crowd-sourced recordings.
* Padding (``pad_prob``): ``U(pad_s)`` seconds of silence added before and, drawn
  separately, after the utterance (:func:`data.corrupt.pad_silence`): a recording started
  early and stopped late, or a short clip padded to a fixed length. A third of the time it
  is digital silence, else white noise ``U(PAD_BELOW_SPEECH_DB)`` dB below the utterance's
  speech level (:func:`data.audio.speech_level_db`); the augmentations after it (rooms,
  noise, EQ, ...) apply to the padding too.
* Reverberation (``rir_prob``): a simulated room impulse response
  (:func:`data.corrupt.room_impulse_response`) with RT60 ``U(rir_rt60)`` s, room volume
  ``U(rir_volume)`` m^3 and talker distance ``U(rir_distance)`` m; direct path at unit
  gain, length unchanged.
* Noise (``noise_prob``) uses deepspeech.pytorch's semantics, which its
  ``--noise-min/--noise-max`` flags expose: a level ``L ~ U(noise_min, noise_max)`` and
  ``audio + L * rms(audio) / rms(noise_segment) * noise_segment``, so the added noise
  has ``L`` times the speech RMS, i.e. an SNR of ``-20 * log10(L)`` dB
  (L = 0.5 -> 6.0 dB, L = 0.1 -> 20 dB, L = 0 -> no noise). The noise is a random
  recording from ``noise_dir`` or, without one, generated: white, pink or babble-like
  (``noise_types``, one picked uniformly per utterance).
* Babble (``babble_prob``): ``U{babble_talkers}`` other utterances of
  ``babble_manifest`` (the training manifest by default) at an SNR of ``U(babble_snr_db)``
  dB. They come from a fixed random pool of ``babble_pool`` utterances, decoded on first
  use; the utterance itself may be drawn (probability about talkers / pool).
* Microphone EQ (``eq_prob``): low and high shelves of ``U(-eq_max_db, eq_max_db)`` dB.
* Level (``gain_prob``): a gain of ``U(gain_db)`` dB, not clipped.
* Clipping (``clip_prob``): the loudest ``U(clip_fraction)`` of the samples are clipped.
* Narrow band (``telephone_prob``): resampled to 8 kHz and back to the model rate, and
  each with probability 1/2 band-passed to 300-3400 Hz and 8-bit mu-law coded (so plain
  8 kHz recordings and telephone channels both occur).
* SpecAugment (Park et al. 2019) without time warping: ``n_freq_masks`` bands of
  ``U{0..freq_mask_width}`` frequency bins and ``n_time_masks`` spans of
  ``U{0..min(time_mask_width, time_mask_max_fraction * T)}`` frames are set to 0,
  which is the mean of the normalised features.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data import corrupt
from data.audio import AudioError, load_audio, probe_audio, resample, speech_level_db
from data.corrupt import noise_segment
from data.manifest import read_manifest
from data.words import crop_words, read_alignments

NOISE_EXTENSIONS = (".wav", ".flac", ".ogg")
"""Files under ``--noise-dir`` with these suffixes (any case) are used as noise."""

SPEED_MAX_DENOMINATOR = 100
"""Speed factors are applied as the nearest fraction p/q with q <= this (error < 1e-4)."""

DEFAULT_NOISE_PROB = 0.4
"""``noise_prob`` when ``noise_dir`` is given without one (deepspeech.pytorch's default)."""

RECIPE_MIX = {
    "noise_prob": 0.3,
    "babble_prob": 0.15,
    "rir_prob": 0.25,
    "telephone_prob": 0.15,
    "eq_prob": 0.3,
    "gain_prob": 0.25,
    "clip_prob": 0.05,
    "trim_prob": 0.3,
    "pad_prob": 0.3,
}
"""The recording-condition augmentation of the AN4 recipe (v2; padding since v6): ``train.py``'s
defaults, on top of the dataclass defaults (speed/volume and SpecAugment). Chosen on the corruption
suite of the validation set (docs/robustness.md, docs/experiments.md)."""

NOISE_GENERATORS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "white": lambda n, sr, rng: corrupt.white_noise(n, rng),
    "pink": lambda n, sr, rng: corrupt.pink_noise(n, rng),
    "babble-like": corrupt.babble_like_noise,
}
"""Generated noise kinds (``noise_types``), each ``(n_samples, sample_rate, rng) -> (n,)``."""

PAD_DIGITAL_SHARE = 1.0 / 3.0
"""Share of the padding augmentation that adds digital silence rather than a noise background."""
PAD_BELOW_SPEECH_DB = (30.0, 60.0)
"""(min, max) dB below the utterance's speech level of the padding's noise background."""

TELEPHONE_BAND = (300.0, 3400.0)
TELEPHONE_BITS = 8

STREAMS = {
    "speed": 0,
    "noise": 1,
    "masks": 2,
    "trim": 3,
    "rir": 4,
    "babble": 5,
    "eq": 6,
    "gain": 7,
    "clip": 8,
    "telephone": 9,
    "crop": 10,
    "pad": 11,
}
"""Generator stream of each augmentation (fixed forever: changing one changes the draws)."""


def _pair(value: Any, cast: Callable = float) -> tuple:
    return tuple(cast(v) for v in value)


@dataclass(frozen=True)
class AugmentConfig:
    """What augmentation the training set gets. Plain data (``asdict`` is JSON-able).

    The defaults are the AN4 recipe (``python train.py``): speed/volume perturbation and
    SpecAugment. :meth:`none` switches everything off.

    Attributes:
        speed_volume_perturb: speed factor ~ U(speed_range) and gain ~ U(gain_range_db).
        speed_range: (min, max) speed factors; 1.1 = 10 % faster and shorter.
        gain_range_db: (min, max) gain in dB.
        spec_augment: apply frequency and time masks to the spectrogram.
        freq_mask_width: widest frequency mask, in bins (of 161 at the default config).
        n_freq_masks: frequency masks per utterance.
        time_mask_width: widest time mask, in frames (10 ms each by default).
        time_mask_max_fraction: a time mask never covers more than this fraction of T.
        n_time_masks: time masks per utterance.
        noise_dir: folder of noise recordings (wav/flac/ogg, searched recursively);
            None: generated noise of ``noise_types``.
        noise_prob: probability that an utterance gets noise; None means
            :data:`DEFAULT_NOISE_PROB` with a ``noise_dir`` and 0 (off) without.
        noise_min, noise_max: noise level range, relative to the speech RMS (see the
            module docstring; level L means an SNR of -20*log10(L) dB).
        noise_types: kinds of generated noise (keys of :data:`NOISE_GENERATORS`).
        babble_prob: probability of babble from ``babble_manifest``.
        babble_manifest: manifest whose utterances make the babble (training speakers).
        babble_talkers: (min, max) number of other utterances mixed.
        babble_snr_db: (min, max) SNR of the babble, dB.
        babble_pool: utterances of ``babble_manifest`` that babble is drawn from.
        rir_prob: probability of reverberation.
        rir_rt60, rir_volume, rir_distance: (min, max) RT60 (s), room volume (m^3) and
            talker-microphone distance (m).
        telephone_prob: probability of 8 kHz audio, telephone band and codec each with
            probability 1/2.
        eq_prob: probability of a random microphone EQ; eq_max_db: its largest shelf gain.
        gain_prob: probability of a level change; gain_db: its (min, max) in dB.
        clip_prob: probability of hard clipping; clip_fraction: (min, max) fraction of
            samples clipped.
        trim_prob: probability of trimming silence; trim_margin_s: (min, max) seconds
            kept before and after the speech (drawn separately for each side).
        pad_prob: probability of adding silence; pad_s: (min, max) seconds added before
            and after the utterance (drawn separately for each side).
        word_crop_prob: probability of cutting a multi-word utterance down to a run of
            1 to ``word_crop_max_words`` of its words; word_alignments: the word alignment
            file (``align.py``) that says where the words are; word_crop_min_pause_db: cut
            only between words with a pause at least this many dB below the speech level
            (0: between any two words; :func:`data.words.crop_words`);
            word_crop_skip_letters: never cut out a run made only of spelled letters.
        warmup_epochs: the first this many epochs (epochs 0 to ``warmup_epochs - 1``) get
            no augmentation at all, the utterances as recorded; every other field applies
            from then on.
    """

    speed_volume_perturb: bool = True
    speed_range: tuple[float, float] = (0.9, 1.1)
    gain_range_db: tuple[float, float] = (-6.0, 8.0)
    spec_augment: bool = True
    freq_mask_width: int = 27
    n_freq_masks: int = 1
    time_mask_width: int = 70
    time_mask_max_fraction: float = 0.2
    n_time_masks: int = 1
    noise_dir: str | None = None
    noise_prob: float | None = None
    noise_min: float = 0.0
    noise_max: float = 0.5
    noise_types: tuple[str, ...] = ("white", "pink", "babble-like")
    babble_prob: float = 0.0
    babble_manifest: str | None = None
    babble_talkers: tuple[int, int] = (3, 7)
    babble_snr_db: tuple[float, float] = (5.0, 20.0)
    babble_pool: int = 200
    rir_prob: float = 0.0
    rir_rt60: tuple[float, float] = (0.3, 0.8)
    rir_volume: tuple[float, float] = (30.0, 150.0)
    rir_distance: tuple[float, float] = (0.3, 1.0)
    telephone_prob: float = 0.0
    eq_prob: float = 0.0
    eq_max_db: float = 10.0
    gain_prob: float = 0.0
    gain_db: tuple[float, float] = (-30.0, 6.0)
    clip_prob: float = 0.0
    clip_fraction: tuple[float, float] = (0.005, 0.05)
    trim_prob: float = 0.0
    trim_margin_s: tuple[float, float] = (0.0, 0.1)
    pad_prob: float = 0.0
    pad_s: tuple[float, float] = (0.0, 1.0)
    word_crop_prob: float = 0.0
    word_crop_max_words: int = 2
    word_crop_min_pause_db: float = 0.0
    word_crop_skip_letters: bool = False
    word_alignments: str | None = None
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        # Lists (e.g. from JSON) become tuples so the config stays hashable and comparable.
        for name in (
            "speed_range",
            "gain_range_db",
            "babble_snr_db",
            "rir_rt60",
            "rir_volume",
            "rir_distance",
            "gain_db",
            "clip_fraction",
            "trim_margin_s",
            "pad_s",
        ):
            object.__setattr__(self, name, _pair(getattr(self, name)))
        object.__setattr__(self, "babble_talkers", _pair(self.babble_talkers, int))
        object.__setattr__(self, "noise_types", tuple(str(t) for t in self.noise_types))
        for name in ("noise_dir", "babble_manifest", "word_alignments"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        if self.noise_prob is None:
            object.__setattr__(self, "noise_prob", DEFAULT_NOISE_PROB if self.noise_dir is not None else 0.0)
        object.__setattr__(self, "noise_prob", float(self.noise_prob))

        def ordered(name: str, low: float | None = None, strict: bool = False, high: float | None = None) -> None:
            v = getattr(self, name)
            bad = len(v) != 2 or v[0] > v[1]
            bad = bad or (low is not None and (v[0] <= low if strict else v[0] < low))
            bad = bad or (high is not None and v[1] > high)
            if bad:
                limits = "" if low is None else f" and min {'>' if strict else '>='} {low}"
                limits += "" if high is None else f" and max <= {high}"
                raise ValueError(f"{name} must be (min, max) with min <= max{limits}, got {v}")

        ordered("speed_range", 0.0, strict=True)
        ordered("gain_range_db")
        ordered("babble_snr_db")
        ordered("babble_talkers", 1)
        ordered("rir_rt60", 0.0, strict=True)
        ordered("rir_volume", 0.0, strict=True)
        ordered("rir_distance", 0.0, strict=True)
        ordered("gain_db")
        ordered("clip_fraction", 0.0, strict=True, high=0.5)
        ordered("trim_margin_s", 0.0)
        ordered("pad_s", 0.0, high=10.0)
        for name in (
            "freq_mask_width",
            "n_freq_masks",
            "time_mask_width",
            "n_time_masks",
            "babble_pool",
            "word_crop_max_words",
            "warmup_epochs",
        ):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)}")
        if not 0.0 <= self.time_mask_max_fraction <= 1.0:
            raise ValueError(f"time_mask_max_fraction must be in [0, 1], got {self.time_mask_max_fraction}")
        for name in (*self.probabilities(), "word_crop_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.noise_min <= self.noise_max:
            raise ValueError(f"noise levels must satisfy 0 <= noise_min <= noise_max, got {self.noise_min}, {self.noise_max}")
        unknown = [t for t in self.noise_types if t not in NOISE_GENERATORS]
        if not self.noise_types or unknown:
            raise ValueError(
                f"noise_types must be a non-empty subset of {sorted(NOISE_GENERATORS)}, got {list(self.noise_types)}"
            )
        if self.eq_max_db < 0:
            raise ValueError(f"eq_max_db must be >= 0, got {self.eq_max_db}")
        if self.babble_prob > 0 and (self.babble_manifest is None or self.babble_pool < 1):
            raise ValueError("babble needs a babble_manifest and babble_pool >= 1")
        if self.word_crop_prob > 0 and (self.word_alignments is None or self.word_crop_max_words < 1):
            raise ValueError("word crop needs word_alignments and word_crop_max_words >= 1")
        if not 0.0 <= self.word_crop_min_pause_db <= 120.0:
            raise ValueError(f"word_crop_min_pause_db must be between 0 and 120 dB, got {self.word_crop_min_pause_db}")

    @staticmethod
    def probabilities() -> tuple[str, ...]:
        """The ``*_prob`` fields, one per waveform augmentation after speed/gain."""
        return (
            "noise_prob",
            "babble_prob",
            "rir_prob",
            "telephone_prob",
            "eq_prob",
            "gain_prob",
            "clip_prob",
            "trim_prob",
            "pad_prob",
        )

    @property
    def enabled(self) -> bool:
        """True when any augmentation is switched on."""
        probabilities = (*self.probabilities(), "word_crop_prob")
        return self.speed_volume_perturb or self.spec_augment or any(getattr(self, name) > 0 for name in probabilities)

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(speed_volume_perturb=False, spec_augment=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        return cls(**d)

    # -- command line ---------------------------------------------------------------

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser, prob_defaults: dict[str, float] | None = None) -> argparse.ArgumentParser:
        """Add the augmentation flags (one group, training only) to ``parser``; returns it.

        Flags that only refine an augmentation (``--noise-min``, ``--rir-rt60``, ...)
        default to None, so that :meth:`from_args` can refuse them when their
        augmentation is off; their effective defaults are in the help text.
        ``prob_defaults`` overrides the defaults of the ``*_prob`` flags (train.py passes
        :data:`RECIPE_MIX`).
        """
        d = {f.name: f.default for f in fields(cls)}
        unknown = set(prob_defaults or {}) - set(cls.probabilities())
        if unknown:
            raise ValueError(f"not augmentation probabilities: {sorted(unknown)}")
        d.update(prob_defaults or {})

        def shown(text: str) -> str:
            # "%(default).0s" prints nothing: it keeps ArgumentDefaultsHelpFormatter from
            # appending "(default: None)" to flags whose real default is in the text.
            return text + "%(default).0s"

        def pair(values: tuple) -> str:
            return " ".join(f"{v:g}" for v in values)

        g = parser.add_argument_group(
            "augmentation (training data only; never saved in the model)",
            "Each waveform augmentation has a probability per utterance (0 = off); see data/augment.py.",
        )
        g.add_argument(
            "--augment",
            "--speed-volume-perturb",
            dest="augment",
            action=argparse.BooleanOptionalAction,
            default=d["speed_volume_perturb"],
            help="random speed ({:g}-{:g}) and gain ({:g} to {:g} dB) per utterance".format(
                *d["speed_range"], *d["gain_range_db"]
            ),
        )
        g.add_argument(
            "--spec-augment",
            action=argparse.BooleanOptionalAction,
            default=d["spec_augment"],
            help="SpecAugment frequency and time masks",
        )
        g.add_argument(
            "--noise-prob",
            type=float,
            default=d["noise_prob"],
            metavar="P",
            help=shown(
                (
                    f"probability of adding noise (default: {d['noise_prob']:g})"
                    if d["noise_prob"] is not None
                    else f"probability of adding noise (default: {DEFAULT_NOISE_PROB:g} with --noise-dir, else 0 = off)"
                )
                + "; without --noise-dir the noise is generated"
            ),
        )
        g.add_argument(
            "--noise-dir",
            default=None,
            metavar="DIR",
            help="folder of noise recordings (wav/flac/ogg) mixed into training utterances",
        )
        g.add_argument(
            "--noise-min",
            type=float,
            default=None,
            metavar="L",
            help=shown(f"minimum noise level, relative to the speech RMS: SNR = -20*log10(L) dB (default: {d['noise_min']:g})"),
        )
        g.add_argument(
            "--noise-max",
            type=float,
            default=None,
            metavar="L",
            help=shown(f"maximum noise level, relative to the speech RMS; 0.5 = 6 dB SNR (default: {d['noise_max']:g})"),
        )
        g.add_argument(
            "--noise-types",
            nargs="+",
            choices=sorted(NOISE_GENERATORS),
            default=None,
            help=shown(f"generated noise kinds, without --noise-dir (default: {' '.join(d['noise_types'])})"),
        )
        g.add_argument(
            "--babble-prob",
            type=float,
            default=d["babble_prob"],
            metavar="P",
            help="probability of babble made of other training utterances",
        )
        g.add_argument(
            "--babble-manifest",
            default=None,
            metavar="CSV",
            help=shown("manifest of the babble talkers (default: --train-manifest)"),
        )
        g.add_argument(
            "--babble-talkers",
            type=int,
            nargs=2,
            default=None,
            metavar=("MIN", "MAX"),
            help=shown(f"other utterances in the babble (default: {pair(d['babble_talkers'])})"),
        )
        g.add_argument(
            "--babble-snr",
            type=float,
            nargs=2,
            default=None,
            metavar=("MIN", "MAX"),
            help=shown(f"SNR of the babble in dB (default: {pair(d['babble_snr_db'])})"),
        )
        g.add_argument(
            "--rir-prob",
            type=float,
            default=d["rir_prob"],
            metavar="P",
            help="probability of reverberation by a simulated room impulse response",
        )
        g.add_argument(
            "--rir-rt60",
            type=float,
            nargs=2,
            default=None,
            metavar=("MIN", "MAX"),
            help=shown(f"room RT60 in seconds (default: {pair(d['rir_rt60'])})"),
        )
        g.add_argument(
            "--telephone-prob",
            type=float,
            default=d["telephone_prob"],
            metavar="P",
            help="probability of 8 kHz audio (half of it also 300-3400 Hz band-passed, half of it 8-bit mu-law coded: telephone)",
        )
        g.add_argument(
            "--eq-prob",
            type=float,
            default=d["eq_prob"],
            metavar="P",
            help="probability of a random microphone EQ (low and high shelves)",
        )
        g.add_argument(
            "--eq-max-db",
            type=float,
            default=None,
            metavar="DB",
            help=shown(f"largest shelf gain, +-dB (default: {d['eq_max_db']:g})"),
        )
        g.add_argument(
            "--gain-prob",
            type=float,
            default=d["gain_prob"],
            metavar="P",
            help="probability of a level change (quiet or loud recordings)",
        )
        g.add_argument(
            "--gain-db",
            type=float,
            nargs=2,
            default=None,
            metavar=("MIN", "MAX"),
            help=shown(f"level change in dB (default: {pair(d['gain_db'])})"),
        )
        g.add_argument("--clip-prob", type=float, default=d["clip_prob"], metavar="P", help="probability of hard clipping")
        g.add_argument(
            "--clip-fraction",
            type=float,
            nargs=2,
            default=None,
            metavar=("MIN", "MAX"),
            help=shown(f"fraction of the samples clipped (default: {pair(d['clip_fraction'])})"),
        )
        g.add_argument(
            "--trim-prob",
            type=float,
            default=d["trim_prob"],
            metavar="P",
            help="probability of trimming leading and trailing silence (tight segmentation)",
        )
        g.add_argument(
            "--trim-margin",
            type=float,
            nargs=2,
            default=None,
            metavar=("MIN", "MAX"),
            help=shown(f"seconds of silence kept before and after the speech (default: {pair(d['trim_margin_s'])})"),
        )
        g.add_argument(
            "--pad-prob",
            type=float,
            default=d["pad_prob"],
            metavar="P",
            help="probability of adding silence before and after the utterance (recordings started early, "
            "clips padded to a length)",
        )
        g.add_argument(
            "--pad-seconds",
            type=float,
            nargs=2,
            default=None,
            metavar=("MIN", "MAX"),
            help=shown(f"seconds of silence added before and after (default: {pair(d['pad_s'])})"),
        )
        g.add_argument(
            "--word-crop-prob",
            type=float,
            default=d["word_crop_prob"],
            metavar="P",
            help="probability of training on a run of words cut out of a multi-word utterance (needs --word-alignments)",
        )
        g.add_argument(
            "--word-crop-max-words",
            type=int,
            default=None,
            metavar="N",
            help=shown(f"most words in a cut-out run (default: {d['word_crop_max_words']})"),
        )
        g.add_argument(
            "--word-crop-min-pause-db",
            type=float,
            default=None,
            metavar="DB",
            help=shown(
                "cut only between words with a pause this many dB below the speech level; utterances without "
                f"one stay whole (default: {d['word_crop_min_pause_db']:g}: between any two words)"
            ),
        )
        g.add_argument(
            "--word-crop-skip-letters",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=shown(
                "never cut out a run made only of spelled letters (one-character words): a short sound alone is not "
                "taught to be a letter (train.py's recipe: on while the word crop is)"
            ),
        )
        g.add_argument(
            "--word-alignments",
            default=None,
            metavar="FILE",
            help="word alignments of the training manifest, written by align.py (for --word-crop-prob)",
        )
        g.add_argument(
            "--augment-warmup-epochs",
            type=int,
            default=None,
            metavar="N",
            help=shown(
                "train the first N epochs on the utterances as recorded, every augmentation off "
                f"(default: {d['warmup_epochs']}; train.py: its recipe's number while any augmentation is on)"
            ),
        )
        return parser

    @classmethod
    def from_args(cls, args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> AugmentConfig:
        """The config selected by the flags of :meth:`add_args`.

        Flags that would do nothing (a refinement of an augmentation that is off, a
        ``--noise-dir`` with ``--noise-prob 0``) and invalid values are refused: with
        ``parser``, through ``parser.error`` (exit status 2); without, as ``ValueError``.
        The babble manifest defaults to ``args.train_manifest`` when the namespace has one.
        """

        def fail(msg: str) -> None:
            if parser is not None:
                parser.error(msg)
            raise ValueError(msg)

        def get(name: str) -> Any:
            return getattr(args, name, None)

        noise_dir = get("noise_dir")
        noise_prob = get("noise_prob")
        noise_on = noise_dir is not None or (noise_prob is not None and noise_prob > 0)
        if noise_dir is not None and noise_prob == 0:
            fail("--noise-dir does nothing with --noise-prob 0: drop one of them")
        if noise_dir is not None and not Path(noise_dir).is_dir():
            fail(f"--noise-dir {noise_dir}: not a folder")
        refinements = {
            "noise_min": ("noise", noise_on, "--noise-prob P or --noise-dir DIR"),
            "noise_max": ("noise", noise_on, "--noise-prob P or --noise-dir DIR"),
            "babble_manifest": ("babble", bool(get("babble_prob")), "--babble-prob P"),
            "babble_talkers": ("babble", bool(get("babble_prob")), "--babble-prob P"),
            "babble_snr": ("babble", bool(get("babble_prob")), "--babble-prob P"),
            "rir_rt60": ("reverberation", bool(get("rir_prob")), "--rir-prob P"),
            "eq_max_db": ("the microphone EQ", bool(get("eq_prob")), "--eq-prob P"),
            "gain_db": ("the level change", bool(get("gain_prob")), "--gain-prob P"),
            "clip_fraction": ("clipping", bool(get("clip_prob")), "--clip-prob P"),
            "trim_margin": ("trimming", bool(get("trim_prob")), "--trim-prob P"),
            "pad_seconds": ("padding", bool(get("pad_prob")), "--pad-prob P"),
            "word_crop_max_words": ("the word crop", bool(get("word_crop_prob")), "--word-crop-prob P"),
            "word_crop_min_pause_db": ("the word crop", bool(get("word_crop_prob")), "--word-crop-prob P"),
            "word_crop_skip_letters": ("the word crop", bool(get("word_crop_prob")), "--word-crop-prob P"),
            "word_alignments": ("the word crop", bool(get("word_crop_prob")), "--word-crop-prob P"),
        }
        for name, (what, on, enable) in refinements.items():
            value = get(name)  # a --no-... switch (False) turns a refinement off, which is always allowed
            if value is not None and value is not False and not on:
                fail(f"--{name.replace('_', '-')} does nothing: {what} is off (add {enable} with P > 0)")
        if get("noise_types") is not None:
            if not noise_on:
                fail("--noise-types does nothing: noise is off (add --noise-prob P with P > 0)")
            if noise_dir is not None:
                fail("--noise-types does nothing with --noise-dir: the noise comes from the recordings")
        babble_manifest = get("babble_manifest")
        if babble_manifest is not None and not Path(babble_manifest).is_file():
            fail(f"--babble-manifest {babble_manifest}: manifest not found")
        if get("babble_prob") and babble_manifest is None:
            babble_manifest = get("train_manifest")  # checked by whoever declared it
            if babble_manifest is None:
                fail("--babble-prob needs --babble-manifest (the utterances to make babble from)")

        word_alignments = get("word_alignments")
        write_them = "write it with: python align.py --manifest TRAIN_MANIFEST --output FILE"
        if get("word_crop_prob") and word_alignments is None:
            fail(f"--word-crop-prob needs --word-alignments FILE ({write_them})")
        if word_alignments is not None and not Path(word_alignments).is_file():
            fail(f"--word-alignments {word_alignments}: file not found ({write_them})")

        d = {f.name: f.default for f in fields(cls)}

        def pick(name: str, field: str | None = None) -> Any:
            value = get(name)
            return d[field or name] if value is None else value

        try:
            cfg = cls(
                speed_volume_perturb=pick("augment", "speed_volume_perturb"),
                spec_augment=pick("spec_augment"),
                noise_dir=None if noise_dir is None else str(noise_dir),
                noise_prob=noise_prob,
                noise_min=pick("noise_min"),
                noise_max=pick("noise_max"),
                noise_types=pick("noise_types"),
                babble_prob=pick("babble_prob"),
                babble_manifest=None if not get("babble_prob") else str(babble_manifest),
                babble_talkers=pick("babble_talkers"),
                babble_snr_db=pick("babble_snr", "babble_snr_db"),
                rir_prob=pick("rir_prob"),
                rir_rt60=pick("rir_rt60"),
                telephone_prob=pick("telephone_prob"),
                eq_prob=pick("eq_prob"),
                eq_max_db=pick("eq_max_db"),
                gain_prob=pick("gain_prob"),
                gain_db=pick("gain_db"),
                clip_prob=pick("clip_prob"),
                clip_fraction=pick("clip_fraction"),
                trim_prob=pick("trim_prob"),
                trim_margin_s=pick("trim_margin", "trim_margin_s"),
                pad_prob=pick("pad_prob"),
                pad_s=pick("pad_seconds", "pad_s"),
                word_crop_prob=pick("word_crop_prob"),
                word_crop_max_words=pick("word_crop_max_words"),
                word_crop_min_pause_db=pick("word_crop_min_pause_db"),
                word_crop_skip_letters=pick("word_crop_skip_letters"),
                word_alignments=None if word_alignments is None else str(word_alignments),
                warmup_epochs=pick("augment_warmup_epochs", "warmup_epochs"),
            )
        except ValueError as e:
            fail(f"augmentation flags: {e}")
            raise
        if cfg.warmup_epochs and not cfg.enabled:
            fail("--augment-warmup-epochs does nothing: every augmentation is off")
        return cfg


def add_augment_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """:meth:`AugmentConfig.add_args` (the augmentation flags) on ``parser``."""
    return AugmentConfig.add_args(parser)


# ---------------------------------------------------------------------------- waveform


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster by resampling.

    Args:
        audio: (n,) float waveform.
        factor: > 0; applied as the nearest fraction p/q (q <= 100).

    Returns:
        (ceil(n * q / p),) float32: about ``n / factor`` samples, every frequency
        multiplied by ``factor`` when played at the original rate.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    ratio = Fraction(factor).limit_denominator(SPEED_MAX_DENOMINATOR)
    # Treat the samples as recorded at p/q times the rate and resample back to 1.
    audio = np.asarray(audio, dtype=np.float32)
    out = resample(audio, ratio.numerator, ratio.denominator)
    return audio.copy() if out is audio else out


def apply_gain(audio: np.ndarray, db: float) -> np.ndarray:
    """``audio * 10 ** (db / 20)`` as float32 (no clipping). Shape unchanged."""
    return corrupt.gain(audio, db)


def mix_noise(audio: np.ndarray, noise: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Add a random segment of ``noise`` at ``level`` times the speech RMS.

    ``audio + level * rms(audio) / rms(segment) * segment``: the result has an SNR of
    exactly ``-20 * log10(level)`` dB (``snr_to_level`` converts). Silent audio or a
    silent segment leaves ``audio`` unchanged.

    Args:
        audio: (n,) float waveform at the model's sample rate.
        noise: (m,) float waveform at the same rate; looped when m < n.
        level: >= 0, noise RMS relative to the speech RMS.
        rng: picks the segment.

    Returns:
        (n,) float32.
    """
    if level < 0:
        raise ValueError(f"noise level must be >= 0, got {level}")
    return corrupt.add_noise(audio, noise, level_to_snr(level), rng)


def snr_to_level(snr_db: float) -> float:
    """Noise level (relative RMS, as in ``--noise-min/--noise-max``) for an SNR in dB."""
    return 10.0 ** (-snr_db / 20.0)


def level_to_snr(level: float) -> float:
    """SNR in dB that a noise level (relative RMS) gives; ``inf`` for 0."""
    return math.inf if level == 0 else -20.0 * math.log10(level)


class NoiseBank:
    """The noise recordings under a folder, decoded on first use and cached.

    Files are found recursively by suffix (:data:`NOISE_EXTENSIONS`) and their
    headers checked at construction, so a bad folder or file fails before training
    starts. Audio is read with ``load_audio`` (mono, resampled to ``sample_rate``).
    """

    def __init__(self, noise_dir: str | Path, sample_rate: int) -> None:
        self.noise_dir = Path(noise_dir)
        self.sample_rate = sample_rate
        if not self.noise_dir.is_dir():
            raise FileNotFoundError(f"{self.noise_dir}: noise folder not found (--noise-dir)")
        self.paths = sorted(p for p in self.noise_dir.rglob("*") if p.is_file() and p.suffix.lower() in NOISE_EXTENSIONS)
        if not self.paths:
            raise FileNotFoundError(
                f"{self.noise_dir}: no noise audio found (looked for {', '.join(NOISE_EXTENSIONS)} files, "
                "recursively); point --noise-dir at a folder of noise recordings"
            )
        for path in self.paths:
            try:
                probe_audio(path)
            except AudioError as e:
                raise AudioError(f"{e} (a noise file: remove it from --noise-dir)") from None
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> np.ndarray:
        """Noise file ``i`` as (m,) float32 at ``sample_rate``."""
        if i not in self._cache:
            self._cache[i] = load_audio(self.paths[i], self.sample_rate)
        return self._cache[i]

    def pick(self, rng: np.random.Generator) -> np.ndarray:
        """A noise recording chosen uniformly with ``rng``."""
        return self.get(int(rng.integers(0, len(self.paths))))


class BabblePool:
    """Up to ``size`` utterances of a manifest, the talkers of babble; decoded on first use.

    The pool is the same for every run (a fixed-seed sample of the manifest's rows, in
    manifest order), so babble draws depend only on the augmentation seeds.
    """

    def __init__(self, manifest: str | Path, sample_rate: int, size: int = 200) -> None:
        rows = read_manifest(manifest)
        if not rows:
            raise ValueError(f"{manifest}: no utterances for babble (--babble-manifest)")
        chosen = np.sort(np.random.default_rng(0).choice(len(rows), size=min(size, len(rows)), replace=False))
        self.paths = [rows[int(i)][0] for i in chosen]
        self.sample_rate = sample_rate
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> np.ndarray:
        """Utterance ``i`` of the pool as (m,) float32 at ``sample_rate``."""
        if i not in self._cache:
            self._cache[i] = load_audio(self.paths[i], self.sample_rate)
        return self._cache[i]

    def draw(self, k: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``k`` different utterances (fewer when the pool is smaller)."""
        picks = rng.choice(len(self.paths), size=min(k, len(self.paths)), replace=False)
        return [self.get(int(i)) for i in picks]


# ---------------------------------------------------------------------------- spectrogram


def spec_augment(
    spect: torch.Tensor,
    rng: np.random.Generator,
    freq_mask_width: int = 27,
    n_freq_masks: int = 1,
    time_mask_width: int = 70,
    n_time_masks: int = 1,
    time_mask_max_fraction: float = 0.2,
) -> torch.Tensor:
    """SpecAugment frequency and time masks (no time warping).

    Each frequency mask zeroes ``f ~ U{0..min(freq_mask_width, F)}`` consecutive bins
    starting at ``U{0..F-f}``; each time mask zeroes ``t ~ U{0..min(time_mask_width,
    floor(time_mask_max_fraction * T))}`` consecutive frames starting at ``U{0..T-t}``.
    Masks may overlap. 0 is the mean of normalised features.

    Args:
        spect: (F, T) spectrogram; not modified.
        rng: source of all widths and positions.

    Returns:
        (F, T) masked copy.
    """
    out = spect.clone()
    n_freq, n_time = out.shape
    max_f = min(freq_mask_width, n_freq)
    for _ in range(n_freq_masks):
        f = int(rng.integers(0, max_f + 1))
        f0 = int(rng.integers(0, n_freq - f + 1))
        out[f0 : f0 + f, :] = 0
    max_t = min(time_mask_width, int(time_mask_max_fraction * n_time))
    for _ in range(n_time_masks):
        t = int(rng.integers(0, max_t + 1))
        t0 = int(rng.integers(0, n_time - t + 1))
        out[:, t0 : t0 + t] = 0
    return out


# ---------------------------------------------------------------------------- pipeline


class UtteranceRngs:
    """The generator streams of one utterance in one epoch, created on first use.

    ``rngs[stream]`` (a name of :data:`STREAMS` or its number) is
    ``np.random.default_rng([seed, epoch, index, number])``.
    """

    def __init__(self, seed: int, epoch: int, index: int) -> None:
        self.key = [seed % 2**64, epoch % 2**64, index % 2**64]
        self._rngs: dict[int, np.random.Generator] = {}

    __iter__ = None  # indexed by stream, not a sequence

    def __getitem__(self, stream: int | str) -> np.random.Generator:
        number = STREAMS[stream] if isinstance(stream, str) else int(stream)
        if number not in self._rngs:
            self._rngs[number] = np.random.default_rng(self.key + [number])
        return self._rngs[number]


class Augmentor:
    """Applies an :class:`AugmentConfig` to one utterance, in the module docstring's order.

    ``rngs_for(seed, epoch, index)`` gives the independent generator streams of one
    utterance, so switching one augmentation on or off does not change the random draws
    of another. Every step leaves its input untouched.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int) -> None:
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.noise = NoiseBank(cfg.noise_dir, sample_rate) if cfg.noise_dir is not None else None
        self.babble = BabblePool(cfg.babble_manifest, sample_rate, cfg.babble_pool) if cfg.babble_prob > 0 else None
        self.alignments = read_alignments(cfg.word_alignments) if cfg.word_crop_prob > 0 else {}

    @staticmethod
    def rngs_for(seed: int, epoch: int, index: int) -> UtteranceRngs:
        """The generator streams (:data:`STREAMS`) for one utterance in one epoch."""
        return UtteranceRngs(seed, epoch, index)

    @staticmethod
    def _coin(rngs: UtteranceRngs, stream: str, prob: float) -> np.random.Generator | None:
        """The stream's generator when this augmentation applies to the utterance, else None."""
        if prob <= 0:
            return None
        rng = rngs[stream]
        return rng if rng.random() < prob else None

    def crop(self, audio: np.ndarray, text: str, wav_path: str | Path, rngs: UtteranceRngs) -> tuple[np.ndarray, str | None]:
        """The word crop: ``(audio, None)`` when it does not apply, else ``(a run of the
        utterance's words, their transcript)``. ``text`` is the normalised transcript; an
        alignment whose words differ from it is not used."""
        rng = self._coin(rngs, "crop", self.cfg.word_crop_prob)
        if rng is None:
            return audio, None
        alignment = self.alignments.get(Path(wav_path).resolve())
        if alignment is None or len(alignment.words) < 2 or list(alignment.words) != text.split():
            return audio, None
        cfg = self.cfg
        return crop_words(
            audio,
            self.sample_rate,
            alignment,
            rng,
            cfg.word_crop_max_words,
            cfg.word_crop_min_pause_db,
            cfg.word_crop_skip_letters,
        )

    def waveform(self, audio: np.ndarray, rngs: UtteranceRngs) -> np.ndarray:
        """All waveform augmentations. ``audio`` (n,) is never modified; returns (n',) float32
        (n' differs from n after speed perturbation or trimming)."""
        cfg, sr = self.cfg, self.sample_rate
        if cfg.speed_volume_perturb:
            rng = rngs["speed"]
            factor = float(rng.uniform(*cfg.speed_range))
            db = float(rng.uniform(*cfg.gain_range_db))
            audio = apply_gain(speed_perturb(audio, factor), db)
        if rng := self._coin(rngs, "trim", cfg.trim_prob):
            lead, trail = (float(v) for v in rng.uniform(*cfg.trim_margin_s, size=2))
            audio = corrupt.trim_silence(audio, sr, lead, trail)
        if rng := self._coin(rngs, "pad", cfg.pad_prob):
            lead, trail = (float(v) for v in rng.uniform(*cfg.pad_s, size=2))
            noise_dbfs = None
            if rng.random() >= PAD_DIGITAL_SHARE:
                noise_dbfs = speech_level_db(audio, sr) - float(rng.uniform(*PAD_BELOW_SPEECH_DB))
            audio = corrupt.pad_silence(audio, sr, lead, trail, noise_dbfs, rng)
        if rng := self._coin(rngs, "rir", cfg.rir_prob):
            room = corrupt.draw_room(rng, cfg.rir_rt60, cfg.rir_volume, cfg.rir_distance)
            audio = corrupt.reverberate(audio, corrupt.room_impulse_response(room, sr, rng))
        if rng := self._coin(rngs, "noise", cfg.noise_prob):
            level = float(rng.uniform(cfg.noise_min, cfg.noise_max))
            if self.noise is not None:
                audio = mix_noise(audio, self.noise.pick(rng), level, rng)
            else:
                kind = cfg.noise_types[int(rng.integers(0, len(cfg.noise_types)))]
                noise = NOISE_GENERATORS[kind](np.size(audio), sr, rng)
                audio = corrupt.mix_at_snr(audio, noise, level_to_snr(level))
        if rng := self._coin(rngs, "babble", cfg.babble_prob):
            k = int(rng.integers(cfg.babble_talkers[0], cfg.babble_talkers[1] + 1))
            snr = float(rng.uniform(*cfg.babble_snr_db))
            audio = corrupt.add_babble(audio, self.babble.draw(k, rng), snr, rng)
        if rng := self._coin(rngs, "eq", cfg.eq_prob):
            audio = corrupt.random_eq(audio, sr, rng, max_db=cfg.eq_max_db)
        if rng := self._coin(rngs, "gain", cfg.gain_prob):
            audio = corrupt.random_gain(audio, rng, *cfg.gain_db)
        if rng := self._coin(rngs, "clip", cfg.clip_prob):
            audio = corrupt.clip_fraction(audio, float(rng.uniform(*cfg.clip_fraction)))
        if rng := self._coin(rngs, "telephone", cfg.telephone_prob):
            band = TELEPHONE_BAND if rng.random() < 0.5 else None
            bits = TELEPHONE_BITS if rng.random() < 0.5 else None
            audio = corrupt.telephone(audio, sr, band=band, bits=bits)
        return np.asarray(audio, dtype=np.float32)

    def spectrogram(self, spect: torch.Tensor, rngs: UtteranceRngs) -> torch.Tensor:
        """SpecAugment masks on a (F, T) normalised spectrogram (a copy when enabled)."""
        cfg = self.cfg
        if not cfg.spec_augment:
            return spect
        return spec_augment(
            spect,
            rngs["masks"],
            freq_mask_width=cfg.freq_mask_width,
            n_freq_masks=cfg.n_freq_masks,
            time_mask_width=cfg.time_mask_width,
            n_time_masks=cfg.n_time_masks,
            time_mask_max_fraction=cfg.time_mask_max_fraction,
        )


__all__ = [
    "DEFAULT_NOISE_PROB",
    "RECIPE_MIX",
    "NOISE_EXTENSIONS",
    "NOISE_GENERATORS",
    "PAD_BELOW_SPEECH_DB",
    "PAD_DIGITAL_SHARE",
    "STREAMS",
    "AugmentConfig",
    "Augmentor",
    "BabblePool",
    "NoiseBank",
    "UtteranceRngs",
    "add_augment_args",
    "apply_gain",
    "level_to_snr",
    "mix_noise",
    "noise_segment",
    "snr_to_level",
    "spec_augment",
    "speed_perturb",
]
