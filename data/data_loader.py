"""Audio front end: audio config, labels, audio loading, spectrograms and manifests.

Everything that shapes the model's input features lives here, once:

* :class:`AudioConfig` is the single source of truth for the features; ``n_fft``,
  ``hop_length`` and ``n_freq`` are derived from it, never typed elsewhere.
* :func:`load_audio` reads any soundfile format, sample rate and channel count and
  returns 16 kHz (or the requested rate) mono float32 in [-1, 1].
* :func:`spectrogram` computes deepspeech.pytorch's features with ``torch.stft``.
* :func:`read_manifest` / :func:`write_manifest` read and write the CSV manifests
  (``wav_path,transcript_path`` rows, no header) that deepspeech.pytorch v2 used, with
  an optional third column, the duration in seconds.
* :class:`SpectrogramDataset`, :func:`collate` / :class:`Batch`, :class:`AudioDataLoader`,
  :class:`BucketingSampler` and :class:`DistributedBucketingSampler` turn a manifest
  into padded, length-bucketed batches (SortaGrad, seeded shuffling, exact resume);
  training-time augmentation lives in :mod:`data.augment`.

Feature details (deepspeech.pytorch's pipeline, with its ambiguities fixed):
|STFT| with n_fft = win_length = sample_rate * window_size (320), hop =
sample_rate * window_stride (160), a **periodic** window (``torch.hamming_window``'s
default, what ``scipy.signal.get_window('hamming', N)`` and deepspeech.pytorch V3
give), ``center=True`` with **zero** padding of n_fft // 2 samples on both sides
(librosa >= 0.9's default), then ``log1p`` and, with ``normalize``, one scalar mean
and standard deviation over the whole utterance. Shape: (n_freq, 1 + n_samples // hop).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import operator
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple, Sequence, Sized

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

if TYPE_CHECKING:
    from data.augment import AugmentConfig

logger = logging.getLogger(__name__)

LABELS: tuple[str, ...] = tuple("_'ABCDEFGHIJKLMNOPQRSTUVWXYZ ")
"""Default character set. Index 0 is the CTC blank, always."""
BLANK_INDEX = 0

WINDOWS = {
    "hamming": torch.hamming_window,
    "hann": torch.hann_window,
    "blackman": torch.blackman_window,
    "bartlett": torch.bartlett_window,
}


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the fix."""


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the row and the fix."""


class TranscriptError(ValueError):
    """A transcript that cannot be encoded with the model's labels."""


@dataclass(frozen=True)
class AudioConfig:
    """Everything that defines the features. Saved in every checkpoint."""

    sample_rate: int = 16000
    window_size: float = 0.02  # seconds
    window_stride: float = 0.01  # seconds
    window: str = "hamming"
    normalize: bool = True  # per-utterance scalar mean/std

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {sorted(WINDOWS)}, got {self.window!r}")
        if self.hop_length <= 0 or self.n_fft < 2 or self.hop_length > self.n_fft:
            raise ValueError(
                f"window_size {self.window_size} s and window_stride {self.window_stride} s "
                f"give n_fft={self.n_fft}, hop={self.hop_length} at {self.sample_rate} Hz; "
                "need 0 < hop <= n_fft"
            )

    @property
    def n_fft(self) -> int:
        """FFT size and window length in samples (320 at 16 kHz, 20 ms)."""
        return int(self.sample_rate * self.window_size)

    @property
    def hop_length(self) -> int:
        """Frame shift in samples (160 at 16 kHz, 10 ms)."""
        return int(self.sample_rate * self.window_stride)

    @property
    def n_freq(self) -> int:
        """Rows of the spectrogram, the model's input features (161)."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Spectrogram frames for ``n_samples`` of audio (``center=True``)."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AudioConfig":
        return cls(**d)


# ---------------------------------------------------------------------------- labels


def load_labels(path: str | Path | None = None) -> list[str]:
    """Labels from a JSON list of single characters (blank first), or the default set."""
    if path is None:
        return list(LABELS)
    path = Path(path)
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: labels file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON list of labels ({e})") from None
    if isinstance(labels, str):
        labels = list(labels)
    if not isinstance(labels, list) or not all(isinstance(c, str) and len(c) == 1 for c in labels):
        raise ValueError(f"{path}: labels must be a JSON list of single characters")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: labels contain duplicates")
    if labels[:1] != ["_"]:
        raise ValueError(f"{path}: the first label must be the CTC blank '_', got {labels[:1]}")
    if " " not in labels:
        raise ValueError(f"{path}: labels need a space ' ' to separate words")
    return labels


def text_to_ids(text: str, labels: Sequence[str], source: str | Path = "<text>") -> list[int]:
    """Encode a transcript as label ids.

    Normalisation (documented, deliberate): runs of whitespace collapse to one
    space, and when the labels hold no lower-case letter the text is upper-cased.
    Any other character outside ``labels`` is an error naming ``source`` and the
    character; nothing is dropped silently.
    """
    index = {c: i for i, c in enumerate(labels)}
    text = " ".join(text.split())
    if not any(c.islower() for c in labels):
        text = text.upper()
    unknown = sorted({c for c in text if c not in index or index[c] == BLANK_INDEX})
    if unknown:
        shown = ", ".join(repr(c) for c in unknown)
        raise TranscriptError(
            f"{source}: transcript has characters outside the labels: {shown}. "
            "Clean the transcript or train with a --labels-path that includes them."
        )
    return [index[c] for c in text]


def ids_to_text(ids: Iterable[int], labels: Sequence[str]) -> str:
    return "".join(labels[i] for i in ids)


def read_transcript(path: str | Path) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: transcript file not found") from None
    except UnicodeDecodeError:
        raise TranscriptError(f"{path}: transcript is not UTF-8 text") from None


# ---------------------------------------------------------------------------- audio


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) along the first axis."""
    if orig_sr == target_sr:
        return audio
    from scipy.signal import resample_poly

    ratio = Fraction(target_sr, orig_sr)
    return resample_poly(audio, ratio.numerator, ratio.denominator, axis=0).astype(np.float32)


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    Any format soundfile reads (WAV, FLAC, OGG, ...; 8/16/24/32-bit integer or
    float), any sample rate (resampled) and any channel count (averaged).

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: the file is empty, unreadable, not audio, or holds no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes); re-create or remove it")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(
            f"{path}: cannot read audio ({e}). Convert it to WAV, FLAC or OGG "
            "(e.g. 16 kHz mono 16-bit WAV)."
        ) from None
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    audio = resample(audio, sr, sample_rate)
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: cannot read audio header ({e})") from None
    return info.frames / info.samplerate


def spectrogram(audio: np.ndarray | torch.Tensor, cfg: AudioConfig = AudioConfig()) -> torch.Tensor:
    """Log-magnitude spectrogram, shape (cfg.n_freq, cfg.n_frames(len(audio))).

    ``audio`` is mono float at ``cfg.sample_rate``. See the module docstring for the
    exact definition (periodic window, zero padding, log1p, scalar normalisation).
    """
    x = torch.as_tensor(audio, dtype=torch.float32)
    if x.dim() != 1:
        raise ValueError(f"spectrogram expects mono audio of shape (n_samples,), got {tuple(x.shape)}")
    window = WINDOWS[cfg.window](cfg.n_fft, periodic=True)
    stft = torch.stft(
        x,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.n_fft,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    spect = stft.abs().log1p()  # (F, T)
    if cfg.normalize:
        mean = spect.mean()
        std = spect.std() if spect.numel() > 1 else spect.new_tensor(0.0)
        spect = (spect - mean) / (std + 1e-10) if std > 0 else spect - mean
    return spect


# ---------------------------------------------------------------------------- manifests


def read_manifest(
    path: str | Path, with_duration: bool = False
) -> list[tuple[Path, Path]] | list[tuple[Path, Path, float | None]]:
    """Rows of a CSV manifest as absolute (wav_path, transcript_path) pairs.

    Relative paths are relative to the manifest's folder; absolute paths (what
    deepspeech.pytorch v2 wrote) are kept. A row may carry a third field, the
    duration in seconds (``wav,txt,2.345``); with ``with_duration`` the rows are
    (wav_path, transcript_path, seconds or None). Blank lines are ignored; any other
    row that is not two non-empty fields plus an optional non-negative number is an
    error naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: manifest not found. Create one with data/an4.py or "
            "`python data/utils.py create`."
        )
    base = path.resolve().parent
    rows: list = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                duration = _manifest_duration(row[2]) if len(row) == 3 else None
                if len(row) not in (2, 3) or not row[0].strip() or not row[1].strip() or (
                    len(row) == 3 and duration is None
                ):
                    raise ManifestError(
                        f"{path}:{lineno}: expected 'wav_path,transcript_path[,duration_seconds]', "
                        f"got {','.join(row)!r}"
                    )
                wav, txt = (Path(p.strip()).expanduser() for p in row[:2])
                wav, txt = (wav if wav.is_absolute() else base / wav, txt if txt.is_absolute() else base / txt)
                rows.append((wav, txt, duration) if with_duration else (wav, txt))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not a UTF-8 text manifest") from None
    except csv.Error as e:
        raise ManifestError(f"{path}: not a CSV manifest ({e})") from None
    return rows


def _manifest_duration(field: str) -> float | None:
    """The optional third manifest field as seconds; None when it is not a finite number >= 0."""
    try:
        value = float(field)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def write_manifest(
    path: str | Path, rows: Iterable[Sequence[str | Path | float | None]], relative: bool = True
) -> None:
    """Write a manifest atomically; with ``relative`` paths are written relative to
    the manifest's folder (so the dataset and its manifests can move together).

    Rows are ``(wav, txt)`` or ``(wav, txt, seconds)``; a duration (not None) is
    written as a third column with millisecond precision (``wav,txt,2.345``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        for row in rows:
            wav, txt = Path(row[0]).resolve(), Path(row[1]).resolve()
            if relative:
                wav, txt = Path(os.path.relpath(wav, base)), Path(os.path.relpath(txt, base))
            duration = row[2] if len(row) > 2 else None
            writer.writerow([wav.as_posix(), txt.as_posix()] + ([] if duration is None else [f"{float(duration):.3f}"]))
    os.replace(tmp, path)


def frames_to_seconds(n_frames: int, cfg: AudioConfig) -> float:
    return n_frames * cfg.hop_length / cfg.sample_rate


# ---------------------------------------------------------------------------- dataset


class SpectrogramDataset(Dataset):
    """Utterances of a manifest as (spectrogram, label ids, wav path, text).

    At construction every row is checked: the transcript is read and encoded with
    ``labels`` (errors name the file and the character), and the audio header is read
    (missing, empty, unreadable or 0-sample files are caught here, before training).
    With ``on_error="raise"`` the first bad row raises its error; with ``"skip"`` bad
    rows are left out, listed in :attr:`skipped` as ``(wav_path, reason)`` and
    reported in one ``logging`` warning. A malformed manifest line always raises
    (:class:`ManifestError`), and so does a manifest with no usable row.

    Decoded audio is cached in memory with ``cache_audio`` (AN4's 2,546 s of train
    audio are ~160 MB float32); each DataLoader worker keeps its own cache, so
    :class:`AudioDataLoader` keeps workers alive between epochs by default.

    Augmentation (``augment``; give it to the training set only) draws every random
    choice from generators seeded with ``(seed, epoch, index)``: the same epoch gives
    the same features whatever the worker count or order, and a resumed run repeats
    them exactly. Call :meth:`set_epoch` (or :meth:`AudioDataLoader.set_epoch`) at the
    start of each epoch; the epoch lives in shared memory, so running workers see it.

    Attributes:
        wav_paths, transcript_paths: absolute paths of the usable rows.
        ids: label ids per utterance; texts: the normalised transcripts.
        durations: seconds per utterance (from the header).
        n_frames: spectrogram frames per utterance without augmentation.
        skipped: ``(wav_path, reason)`` per row left out with ``on_error="skip"``.
    """

    def __init__(
        self,
        manifest_path: str | Path,
        audio_cfg: AudioConfig = AudioConfig(),
        labels: Sequence[str] = LABELS,
        augment: AugmentConfig | None = None,
        cache_audio: bool = True,
        on_error: str = "raise",
        seed: int = 123456,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.manifest_path = Path(manifest_path)
        self.audio_cfg = audio_cfg
        self.labels = list(labels)
        self.cache_audio = cache_audio
        self.seed = int(seed)
        self.augment = augment if augment is not None and augment.enabled else None
        self._augmentor = None
        if self.augment is not None:
            from data.augment import Augmentor

            self._augmentor = Augmentor(self.augment, audio_cfg.sample_rate)

        rows = read_manifest(self.manifest_path)
        self.wav_paths: list[Path] = []
        self.transcript_paths: list[Path] = []
        self.ids: list[list[int]] = []
        self.texts: list[str] = []
        self.n_samples: list[int] = []
        self.durations: list[float] = []
        self.skipped: list[tuple[str, str]] = []
        for wav, txt in rows:
            try:
                ids, n_samples, duration = self._check_row(wav, txt)
            except (FileNotFoundError, AudioError, TranscriptError) as e:
                if on_error == "raise":
                    raise
                self.skipped.append((str(wav), str(e)))
                continue
            self.wav_paths.append(wav)
            self.transcript_paths.append(txt)
            self.ids.append(ids)
            self.texts.append(ids_to_text(ids, self.labels))
            self.n_samples.append(n_samples)
            self.durations.append(duration)
        if self.skipped:
            logger.warning(
                "%s: skipped %d of %d utterances (on_error='skip'); first: %s",
                self.manifest_path, len(self.skipped), len(rows), self.skipped[0][1],
            )
        if not self.wav_paths:
            detail = f" (all {len(rows)} rows were bad; first: {self.skipped[0][1]})" if self.skipped else ""
            raise ManifestError(f"{self.manifest_path}: no usable utterances{detail}")
        self.n_frames = [audio_cfg.n_frames(n) for n in self.n_samples]
        self._cache: dict[int, np.ndarray] = {}
        # Shared memory, so that set_epoch() in the main process reaches running workers.
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    def _check_row(self, wav: Path, txt: Path) -> tuple[list[int], int, float]:
        """(label ids, samples at the model rate, seconds) for one row, or the row's error."""
        try:
            text = read_transcript(txt)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} (listed in {self.manifest_path})") from None
        ids = text_to_ids(text, self.labels, source=txt)
        if not wav.is_file():
            raise FileNotFoundError(f"{wav}: audio file not found (listed in {self.manifest_path})")
        if wav.stat().st_size == 0:
            raise AudioError(f"{wav}: audio file is empty (0 bytes); re-create or remove it")
        try:
            info = sf.info(str(wav))
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise AudioError(
                f"{wav}: cannot read audio ({e}). Convert it to WAV, FLAC or OGG "
                "(e.g. 16 kHz mono 16-bit WAV)."
            ) from None
        if info.frames <= 0:
            raise AudioError(f"{wav}: audio file holds no samples")
        # resample_poly gives ceil(n * target / source) samples.
        n_samples = -(-info.frames * self.audio_cfg.sample_rate // info.samplerate)
        return ids, n_samples, info.frames / info.samplerate

    def __len__(self) -> int:
        return len(self.wav_paths)

    @property
    def total_duration(self) -> float:
        """Seconds of audio in the dataset."""
        return float(sum(self.durations))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (no effect without augmentation)."""
        self._epoch.fill_(int(epoch))

    def load(self, index: int) -> np.ndarray:
        """The decoded (n,) float32 waveform of utterance ``index`` (cached; do not modify)."""
        audio = self._cache.get(index)
        if audio is None:
            audio = load_audio(self.wav_paths[index], self.audio_cfg.sample_rate)
            if self.cache_audio:
                self._cache[index] = audio
        return audio

    def preload(self) -> None:
        """Decode every utterance into the cache now (in this process)."""
        if not self.cache_audio:
            raise ValueError("preload() needs cache_audio=True")
        for i in range(len(self)):
            self.load(i)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[int], str, str]:
        """Returns (spectrogram (n_freq, T) float32, label ids, wav path, normalised text).

        Raises:
            AudioError / FileNotFoundError: the audio cannot be decoded (names the file).
        """
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} utterances")
        audio = self.load(index)
        if self._augmentor is None:
            spect = spectrogram(audio, self.audio_cfg)
        else:
            rngs = self._augmentor.rngs_for(self.seed, self.epoch, index)
            spect = spectrogram(self._augmentor.waveform(audio, rngs), self.audio_cfg)
            spect = self._augmentor.spectrogram(spect, rngs)
        return spect, list(self.ids[index]), str(self.wav_paths[index]), self.texts[index]


class Batch(NamedTuple):
    """A padded batch (see INTERFACES.md).

    inputs: (B, 1, F, Tmax) float32, zero-padded on the right in time.
    input_lengths: (B,) int64 true frame counts.
    targets: (sum(target_lengths),) int64 label ids of all utterances, concatenated.
    target_lengths: (B,) int64.
    paths: wav path per utterance (for error messages).
    texts: normalised reference transcript per utterance.
    """

    inputs: torch.Tensor
    input_lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    paths: list[str]
    texts: list[str]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """The same batch with its tensors on ``device``."""
        return self._replace(
            inputs=self.inputs.to(device, non_blocking=non_blocking),
            input_lengths=self.input_lengths.to(device, non_blocking=non_blocking),
            targets=self.targets.to(device, non_blocking=non_blocking),
            target_lengths=self.target_lengths.to(device, non_blocking=non_blocking),
        )


def collate(samples: Sequence[tuple[torch.Tensor, Sequence[int], str, str]]) -> Batch:
    """Pad dataset items into a :class:`Batch`, keeping their order (no sorting).

    Args:
        samples: B items ``(spect (F, T_i), ids, wav_path, text)`` as returned by
            :class:`SpectrogramDataset`.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    n_freq = samples[0][0].shape[0]
    lengths = [s[0].shape[1] for s in samples]
    inputs = torch.zeros(len(samples), 1, n_freq, max(lengths), dtype=torch.float32)
    for i, (spect, _, path, _) in enumerate(samples):
        if spect.dim() != 2 or spect.shape[0] != n_freq:
            raise ValueError(f"{path}: spectrogram shape {tuple(spect.shape)} does not match ({n_freq}, T)")
        inputs[i, 0, :, : spect.shape[1]] = spect
    targets = torch.tensor([t for s in samples for t in s[1]], dtype=torch.long)
    return Batch(
        inputs=inputs,
        input_lengths=torch.tensor(lengths, dtype=torch.long),
        targets=targets,
        target_lengths=torch.tensor([len(s[1]) for s in samples], dtype=torch.long),
        paths=[s[2] for s in samples],
        texts=[s[3] for s in samples],
    )


# ---------------------------------------------------------------------------- samplers


class BucketingSampler(Sampler[list[int]]):
    """Batches of similar length, deepspeech.pytorch style, with SortaGrad and exact resume.

    Utterances are ordered by duration (a dataset's ``durations``, stable sort, which
    for our duration-sorted manifests is the manifest order; a plain ``n_items`` keeps
    index order) and cut into consecutive bins of ``batch_size``. Each bin is a batch.

    * ``sortagrad`` (SortaGrad): epoch 0 runs the bins shortest first.
    * ``shuffle``: other epochs run the bins in a permutation drawn from
      ``numpy.random.default_rng([seed, epoch])``: the same on every rank and every run.
    * ``shuffle=False`` (``--no-shuffle``): length order every epoch.
    * ``drop_last``: leave out the final, partial bin (which holds the longest utterances).

    Resume: ``batches_done`` is the number of this epoch's batches the training loop
    has finished, and **the loop advances it** (``sampler.batches_done += 1`` after
    each step); the sampler never does, because DataLoader workers fetch batches ahead
    of training. A new pass over the sampler starts it at 0 (or at the restored
    position). :meth:`state_dict` is ``{"epoch", "batches_done", "n_batches"}`` (plain
    ints); after :meth:`load_state_dict` the next iteration skips the batches done.

    ``len()`` is the number of batches in a full epoch; :meth:`remaining` is
    ``len() - batches_done``.
    """

    def __init__(
        self,
        data: int | Sized,
        batch_size: int,
        shuffle: bool = True,
        sortagrad: bool = True,
        seed: int = 123456,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(data, (int, np.integer)):
            n_items, order = int(data), list(range(int(data)))
        else:
            n_items = len(data)
            durations = getattr(data, "durations", None)
            order = (
                [int(i) for i in np.argsort(np.asarray(durations, dtype=np.float64), kind="stable")]
                if durations is not None
                else list(range(n_items))
            )
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if n_items < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        bins = [order[i:i + batch_size] for i in range(0, n_items, batch_size)]
        if drop_last and len(bins[-1]) < batch_size:
            if len(bins) == 1:
                raise ValueError(
                    f"drop_last with batch_size {batch_size} leaves no batch from {n_items} utterances"
                )
            bins.pop()
        self.bins: list[list[int]] = bins
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.sortagrad = sortagrad
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        self.batches_done = 0
        self._resume = False

    def bin_order(self, epoch: int) -> list[int]:
        """Indices into :attr:`bins` in the order all replicas see them in ``epoch``."""
        if not self.shuffle or (self.sortagrad and epoch == 0):
            return list(range(len(self.bins)))
        rng = np.random.default_rng([self.seed % 2**64, int(epoch) % 2**64])
        return [int(b) for b in rng.permutation(len(self.bins))]

    def _my_bins(self) -> list[int]:
        """The bins this sampler yields this epoch, in order."""
        return self.bin_order(self.epoch)

    def __iter__(self) -> Iterator[list[int]]:
        start = self.start_batch
        self._resume = False
        self.batches_done = start
        for b in self._my_bins()[start:]:
            yield list(self.bins[b])

    def __len__(self) -> int:
        return len(self.bins)

    @property
    def start_batch(self) -> int:
        """Batches the next iteration skips (non-zero only after :meth:`load_state_dict`)."""
        return self.batches_done if self._resume else 0

    def remaining(self) -> int:
        """Batches of this epoch the training loop has not finished."""
        return len(self) - self.batches_done

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``; a different epoch starts from its first batch, the same
        epoch keeps a position restored by :meth:`load_state_dict`."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches_done = 0
            self._resume = False

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "batches_done": int(self.batches_done), "n_batches": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position from :meth:`state_dict`; the next iteration resumes there.

        Raises:
            ValueError: the state is malformed or was saved with a different number of
                batches per epoch (another manifest, batch size or replica count).
        """
        try:
            epoch, done = int(state["epoch"]), int(state["batches_done"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"sampler state must hold integer 'epoch' and 'batches_done', got {state!r}") from None
        n_batches = state.get("n_batches")
        if n_batches is not None and int(n_batches) != len(self):
            raise ValueError(
                f"sampler state was saved with {n_batches} batches per epoch but this sampler has {len(self)} "
                "(different manifest, batch size or number of processes); the position cannot be restored"
            )
        if not 0 <= done <= len(self) or epoch < 0:
            raise ValueError(f"sampler state out of range: epoch {epoch}, batches_done {done} of {len(self)}")
        self.epoch, self.batches_done, self._resume = epoch, done, True


class DistributedBucketingSampler(BucketingSampler):
    """:class:`BucketingSampler` for DDP: rank ``r`` of ``R`` takes bins ``r, r+R, ...``
    of the shared epoch order.

    Every rank builds the same bins and the same permutation (same seed and epoch), so
    the ranks partition the epoch. When the bin count is not a multiple of ``R`` the
    order is padded by repeating its first bins, so every rank runs the same number of
    batches (``len() = ceil(n_bins / R)``) and no rank waits at a collective.
    ``num_replicas``/``rank`` default to the initialised process group.
    """

    def __init__(
        self,
        data: int | Sized,
        batch_size: int,
        shuffle: bool = True,
        sortagrad: bool = True,
        seed: int = 123456,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(data, batch_size, shuffle=shuffle, sortagrad=sortagrad, seed=seed, drop_last=drop_last)
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("give num_replicas and rank, or initialise torch.distributed first")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)

    def _my_bins(self) -> list[int]:
        order = self.bin_order(self.epoch)
        total = len(self) * self.num_replicas
        padded = (order * math.ceil(total / len(order)))[:total]
        return padded[self.rank::self.num_replicas]

    def __len__(self) -> int:
        return math.ceil(len(self.bins) / self.num_replicas)


# ---------------------------------------------------------------------------- loader


def _clean_worker_error(e: Exception) -> Exception:
    """A worker's error re-raised by DataLoader carries the worker traceback in its
    message; keep only the original one-line message."""
    msg = str(e)
    if "Original Traceback" not in msg:
        return e
    _, sep, original = msg.rstrip().splitlines()[-1].partition(": ")
    return type(e)(original if sep else msg)


class AudioDataLoader(DataLoader):
    """DataLoader with :func:`collate` (passed to ``DataLoader.__init__``).

    Differences from a plain DataLoader:

    * ``persistent_workers`` defaults to True when ``num_workers > 0``, so each
      worker's audio cache survives from one epoch to the next (and is ignored when
      ``num_workers == 0``).
    * :meth:`set_epoch` reaches the sampler and the dataset in one call.
    * A dataset error raised in a worker (AudioError, TranscriptError,
      FileNotFoundError) is re-raised with its original one-line message.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_workers: int = 0,
        persistent_workers: bool | None = None,
        collate_fn: Any = collate,
        **kwargs: Any,
    ) -> None:
        # Without workers there is nothing to keep alive, so the option is moot.
        persistent_workers = num_workers > 0 and persistent_workers is not False
        super().__init__(
            dataset, num_workers=num_workers, persistent_workers=persistent_workers, collate_fn=collate_fn, **kwargs
        )

    def set_epoch(self, epoch: int) -> None:
        """``set_epoch`` on the sampler(s) and the dataset, whichever have one."""
        seen: list[object] = []
        for obj in (self.batch_sampler, self.sampler, self.dataset):
            if hasattr(obj, "set_epoch") and not any(obj is s for s in seen):
                obj.set_epoch(epoch)
                seen.append(obj)

    def __iter__(self) -> Iterator[Batch]:
        it = super().__iter__()
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except (AudioError, TranscriptError, FileNotFoundError) as e:
                raise _clean_worker_error(e) from None
            yield batch


__all__ = [
    "LABELS",
    "BLANK_INDEX",
    "AudioConfig",
    "AudioError",
    "ManifestError",
    "TranscriptError",
    "load_labels",
    "text_to_ids",
    "ids_to_text",
    "read_transcript",
    "resample",
    "load_audio",
    "audio_duration",
    "spectrogram",
    "read_manifest",
    "write_manifest",
    "frames_to_seconds",
    "SpectrogramDataset",
    "Batch",
    "collate",
    "BucketingSampler",
    "DistributedBucketingSampler",
    "AudioDataLoader",
]
