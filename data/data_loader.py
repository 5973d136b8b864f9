"""Training and evaluation data: a manifest as padded, length-bucketed batches.

* :class:`SpectrogramDataset` reads a manifest (:mod:`data.manifest`), checks every row
  up front, and yields features (:func:`data.audio.spectrogram`) with label ids
  (:mod:`data.text`); training-time augmentation lives in :mod:`data.augment`.
* :func:`collate` / :class:`Batch` pad utterances into a batch.
* :class:`BucketingSampler` and :class:`DistributedBucketingSampler` give SortaGrad,
  seeded shuffling and exact resume; :class:`FrameBatchSampler` and
  :class:`DistributedFrameBatchSampler` do the same with batches bounded by padded frames;
  :class:`AudioDataLoader` ties them together.
"""

from __future__ import annotations

import logging
import math
import operator
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence, Sized

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data.audio import AudioConfig, AudioError, load_audio, probe_audio, resampled_length, spectrogram
from data.augment import AugmentConfig, Augmentor
from data.manifest import ManifestError, read_manifest
from data.text import LABELS, TranscriptError, ids_to_text, read_transcript, text_to_ids
from data.words import count_aligned

logger = logging.getLogger(__name__)

AUTO_CACHE_BYTES = 512 * 2**20  # cache_bytes=None caches a manifest whose float32 audio fits in this


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

    Audio is decoded on demand. Decoded waveforms are kept in memory only up to
    ``cache_bytes`` (float32 bytes, per process): ``None`` (the default) caches everything
    when the whole manifest fits in :data:`AUTO_CACHE_BYTES` (512 MB, about 2.3 hours at
    16 kHz; AN4's 2,546 s of train audio are ~160 MB) and nothing otherwise; ``0`` or
    ``cache_audio=False`` turns the cache off, so resident memory stays flat over an epoch
    of any corpus. A bounded cache keeps the first utterances that fit and never evicts
    (an epoch visits every utterance once, so eviction would only churn). Each DataLoader
    worker keeps its own cache, so :class:`AudioDataLoader` keeps workers alive between
    epochs by default.

    ``lazy_transcripts`` skips reading the transcripts at construction (a 281k-row
    manifest with durations then loads without opening a file): each transcript is read
    and checked in :meth:`__getitem__`, and a bad one is raised (``on_error="raise"``) or
    returned as an :class:`Unusable` that :func:`collate` counts (``"skip"``), like
    undecodable audio. ``ids`` and ``texts`` then hold ``None`` until read (use
    :meth:`transcript`).

    ``single_word_repeats`` (training) lists every utterance whose transcript is one word
    that many times, each copy right after the original: a recorded voice command is then
    seen ``k`` times per epoch, each time with its own augmentation draws (the copies are
    separate indices). It needs the transcripts up front (not ``lazy_transcripts``).

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
        cache_bytes: int | None = None,
        lazy_transcripts: bool = False,
        single_word_repeats: int = 1,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if type(single_word_repeats) is not int or single_word_repeats < 1:
            raise ValueError(f"single_word_repeats must be an integer >= 1, got {single_word_repeats!r}")
        if single_word_repeats > 1 and lazy_transcripts:
            raise ValueError("single_word_repeats needs the transcripts read up front: not with lazy_transcripts")
        self.manifest_path = Path(manifest_path)
        self.audio_cfg = audio_cfg
        self.labels = list(labels)
        if cache_bytes is not None and cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0 or None (automatic), got {cache_bytes}")
        self.lazy_transcripts = bool(lazy_transcripts)
        self.seed = int(seed)
        self.on_error = on_error
        self.augment = augment if augment is not None and augment.enabled else None
        self._augmentor = None
        if self.augment is not None:
            self._augmentor = Augmentor(self.augment, audio_cfg.sample_rate)

        rows = read_manifest(self.manifest_path)
        self.wav_paths: list[Path] = []
        self.transcript_paths: list[Path] = []
        self.ids: list[list[int] | None] = []
        self.texts: list[str | None] = []
        self.n_samples: list[int] = []
        self.durations: list[float] = []
        self.skipped: list[tuple[str, str]] = []
        for row in rows:
            try:
                ids, n_samples, duration = self._check_row(row.wav, row.txt, row.duration)
            except (FileNotFoundError, AudioError, TranscriptError) as e:
                if on_error == "raise":
                    raise
                self.skipped.append((str(row.wav), str(e)))
                continue
            self.wav_paths.append(row.wav)
            self.transcript_paths.append(row.txt)
            self.ids.append(ids)
            self.texts.append(None if ids is None else ids_to_text(ids, self.labels))
            self.n_samples.append(n_samples)
            self.durations.append(duration)
        if self.skipped:
            logger.warning(
                "%s: skipped %d of %d utterances (on_error='skip'); first: %s",
                self.manifest_path,
                len(self.skipped),
                len(rows),
                self.skipped[0][1],
            )
        if not self.wav_paths:
            detail = f" (all {len(rows)} rows were bad; first: {self.skipped[0][1]})" if self.skipped else ""
            raise ManifestError(f"{self.manifest_path}: no usable utterances{detail}")
        self.single_word_repeats = single_word_repeats
        if single_word_repeats > 1:
            self._repeat_single_words(single_word_repeats)
        self.n_frames = [audio_cfg.n_frames(n) for n in self.n_samples]
        if self._augmentor is not None and self.augment.word_crop_prob > 0:
            self._check_alignments()
        total_bytes = 4 * sum(self.n_samples)
        if not cache_audio:
            cache_bytes = 0
        elif cache_bytes is None:
            cache_bytes = total_bytes if total_bytes <= AUTO_CACHE_BYTES else 0
        self.cache_bytes = int(cache_bytes)
        self.cache_audio = self.cache_bytes > 0
        self._cache: dict[int, np.ndarray] = {}
        self._cached_bytes = 0
        # Shared memory, so that set_epoch() in the main process reaches running workers.
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    def _repeat_single_words(self, k: int) -> None:
        """List each one-word utterance ``k`` times, the copies right after it."""
        counts = [k if len(text.split()) == 1 else 1 for text in self.texts]
        for name in ("wav_paths", "transcript_paths", "ids", "texts", "n_samples", "durations"):
            column = getattr(self, name)
            setattr(self, name, [v for v, n in zip(column, counts) for _ in range(n)])
        single = sum(n > 1 for n in counts)
        logger.info(
            "%s: %d one-word utterances listed %d times each: %d items per epoch from %d utterances",
            self.manifest_path,
            single,
            k,
            len(self.wav_paths),
            len(counts),
        )

    def _check_alignments(self) -> None:
        """Log how many utterances the word alignments cover; none at all is an error."""
        covered = count_aligned(self._augmentor.alignments, self.wav_paths)
        source = self.augment.word_alignments
        if covered == 0:
            raise ManifestError(
                f"--word-alignments {source} covers none of the {len(self)} utterances of {self.manifest_path}: "
                f"align this manifest (python align.py --manifest {self.manifest_path} --output FILE)"
            )
        logger.info("%s: word alignments for %d of %d utterances (%s)", self.manifest_path, covered, len(self), source)

    def _read_ids(self, txt: Path) -> list[int]:
        try:
            text = read_transcript(txt)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} (listed in {self.manifest_path})") from None
        return text_to_ids(text, self.labels, source=txt)

    def _check_row(self, wav: Path, txt: Path, duration: float | None) -> tuple[list[int] | None, int, float]:
        """(label ids, samples at the model rate, seconds) for one row, or the row's error.
        A duration from the manifest saves opening the audio file; otherwise its header is read.
        With lazy transcripts the ids are None (read in :meth:`__getitem__`)."""
        ids = None if self.lazy_transcripts else self._read_ids(txt)
        if duration is not None:
            return ids, max(1, round(duration * self.audio_cfg.sample_rate)), duration
        try:
            info = probe_audio(wav)
        except FileNotFoundError:
            raise FileNotFoundError(f"{wav}: audio file not found (listed in {self.manifest_path})") from None
        return ids, resampled_length(info.frames, info.sample_rate, self.audio_cfg.sample_rate), info.duration

    def __len__(self) -> int:
        return len(self.wav_paths)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (no effect without augmentation)."""
        self._epoch.fill_(int(epoch))

    def transcript(self, index: int) -> tuple[list[int], str]:
        """(label ids, normalised text) of utterance ``index``; with lazy transcripts the file
        is read and checked now (raising its FileNotFoundError or TranscriptError)."""
        ids = self.ids[index]
        if ids is None:
            ids = self._read_ids(self.transcript_paths[index])
            return ids, ids_to_text(ids, self.labels)
        return ids, self.texts[index]

    def load(self, index: int) -> np.ndarray:
        """The decoded (n,) float32 waveform of utterance ``index`` (cached within
        ``cache_bytes``; do not modify)."""
        audio = self._cache.get(index)
        if audio is None:
            audio = load_audio(self.wav_paths[index], self.audio_cfg.sample_rate)
            if self.cache_bytes and self._cached_bytes + audio.nbytes <= self.cache_bytes:
                self._cache[index] = audio
                self._cached_bytes += audio.nbytes
        return audio

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded audio held in this process's cache."""
        return self._cached_bytes

    def preload(self) -> None:
        """Decode utterances into the cache now (in this process), as many as ``cache_bytes`` holds."""
        if not self.cache_audio:
            raise ValueError("preload() needs a cache (cache_audio=True and cache_bytes > 0)")
        for i in range(len(self)):
            if self._cached_bytes + 4 * self.n_samples[i] > self.cache_bytes:
                break
            self.load(i)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[int], str, str] | Unusable:
        """Returns (spectrogram (n_freq, T) float32, label ids, wav path, normalised text).

        Audio that passed the header check but fails to decode (or holds NaN/inf samples),
        and with lazy transcripts a missing or unencodable transcript, raise with
        ``on_error="raise"``; with ``"skip"`` the item is returned as an
        :class:`Unusable` that :func:`collate` leaves out of the batch and reports.
        """
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} utterances")
        try:
            ids, text = self.transcript(index)
            audio = self.load(index)
        except (AudioError, FileNotFoundError, TranscriptError) as e:
            if self.on_error == "raise":
                raise
            return Unusable(str(self.wav_paths[index]), str(e))
        if self._augmentor is None or self.epoch < self.augment.warmup_epochs:
            spect = torch.from_numpy(spectrogram(audio, self.audio_cfg))
        else:
            rngs = self._augmentor.rngs_for(self.seed, self.epoch, index)
            audio, cropped = self._augmentor.crop(audio, text, self.wav_paths[index], rngs)
            if cropped is not None:
                ids, text = text_to_ids(cropped, self.labels), cropped
            spect = torch.from_numpy(spectrogram(self._augmentor.waveform(audio, rngs), self.audio_cfg))
            spect = self._augmentor.spectrogram(spect, rngs)
        return spect, list(ids), str(self.wav_paths[index]), text


class Unusable(NamedTuple):
    """A dataset item whose audio could not be decoded, or whose transcript (read lazily)
    is missing or unencodable (``on_error="skip"``)."""

    path: str
    reason: str


class Batch(NamedTuple):
    """A padded batch (see INTERFACES.md).

    inputs: (B, 1, F, Tmax) float32, zero-padded on the right in time.
    input_lengths: (B,) int64 true frame counts.
    targets: (sum(target_lengths),) int64 label ids of all utterances, concatenated.
    target_lengths: (B,) int64.
    paths: wav path per utterance (for error messages).
    texts: normalised reference transcript per utterance.
    skipped: items left out because their audio could not be decoded.
    """

    inputs: torch.Tensor
    input_lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    paths: list[str]
    texts: list[str]
    skipped: tuple[Unusable, ...] = ()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """The same batch with its tensors on ``device``."""
        return self._replace(
            inputs=self.inputs.to(device, non_blocking=non_blocking),
            input_lengths=self.input_lengths.to(device, non_blocking=non_blocking),
            targets=self.targets.to(device, non_blocking=non_blocking),
            target_lengths=self.target_lengths.to(device, non_blocking=non_blocking),
        )


def collate(samples: Sequence[tuple[torch.Tensor, Sequence[int], str, str] | Unusable]) -> Batch:
    """Pad dataset items into a :class:`Batch`, keeping their order (no sorting).

    Args:
        samples: items ``(spect (F, T_i), ids, wav_path, text)`` as returned by
            :class:`SpectrogramDataset`; :class:`Unusable` items go to ``Batch.skipped``
            (a batch may then hold no utterance at all: ``len(batch.paths) == 0``).
    """
    skipped = tuple(s for s in samples if isinstance(s, Unusable))
    samples = [s for s in samples if not isinstance(s, Unusable)]
    if not samples and not skipped:
        raise ValueError("cannot collate an empty batch")
    n_freq = samples[0][0].shape[0] if samples else 1
    lengths = [s[0].shape[1] for s in samples]
    inputs = torch.zeros(len(samples), 1, n_freq, max(lengths, default=1), dtype=torch.float32)
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
        skipped=skipped,
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

    ``len()`` is the number of batches in a full epoch.
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
        bins = [order[i : i + batch_size] for i in range(0, n_items, batch_size)]
        if drop_last and len(bins[-1]) < batch_size:
            if len(bins) == 1:
                raise ValueError(f"drop_last with batch_size {batch_size} leaves no batch from {n_items} utterances")
            bins.pop()
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self._init_order(bins, shuffle, sortagrad, seed)

    def _init_order(self, bins: list[list[int]], shuffle: bool, sortagrad: bool, seed: int) -> None:
        self.bins: list[list[int]] = bins
        self.shuffle = shuffle
        self.sortagrad = sortagrad
        self.seed = int(seed)
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


def _replica(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """(num_replicas, rank), defaulting to the initialised process group."""
    if num_replicas is None or rank is None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("give num_replicas and rank, or initialise torch.distributed first")
        num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
        rank = dist.get_rank() if rank is None else rank
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
    return int(num_replicas), int(rank)


class _RankShare:
    """Rank ``r`` of ``R`` takes bins ``r, r+R, ...`` of the shared epoch order, padded by
    repeating its first bins so that every rank runs ``ceil(n_bins / R)`` batches."""

    bins: list[list[int]]
    num_replicas: int
    rank: int
    epoch: int

    def _my_bins(self) -> list[int]:
        order = self.bin_order(self.epoch)
        total = len(self) * self.num_replicas
        padded = (order * math.ceil(total / len(order)))[:total]
        return padded[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return math.ceil(len(self.bins) / self.num_replicas)


class DistributedBucketingSampler(_RankShare, BucketingSampler):
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
        self.num_replicas, self.rank = _replica(num_replicas, rank)


class FrameBatchSampler(BucketingSampler):
    """Dynamic batches: duration-sorted utterances grouped so that each batch's padded
    size, ``max(frames) * count``, stays within ``max_frames``.

    ``data`` is a dataset with ``n_frames`` (spectrogram frames per utterance, before
    augmentation) or a sequence of frame counts. Utterances are sorted by length (stable)
    and cut greedily: a batch grows while the padded size of the batch with the next
    utterance stays <= ``max_frames``. An utterance longer than ``max_frames`` on its own
    becomes a batch of one (it is never dropped) and is counted in
    :attr:`oversized`. Short utterances make large batches and long ones small batches,
    so every step holds a similar amount of padded audio.

    SortaGrad, seeded shuffling of the batches per epoch, ``batches_done`` and
    :meth:`state_dict` / :meth:`load_state_dict` are those of :class:`BucketingSampler`.
    """

    def __init__(
        self,
        data: Sized | Sequence[int],
        max_frames: int,
        shuffle: bool = True,
        sortagrad: bool = True,
        seed: int = 123456,
    ) -> None:
        Sampler.__init__(self)
        frames = getattr(data, "n_frames", data)
        frames = [int(f) for f in frames]
        if int(max_frames) != max_frames or max_frames < 1:
            raise ValueError(f"max_frames must be a positive integer, got {max_frames}")
        if not frames:
            raise ValueError("cannot sample batches from an empty dataset")
        order = [int(i) for i in np.argsort(np.asarray(frames, dtype=np.int64), kind="stable")]
        bins: list[list[int]] = []
        current: list[int] = []
        self.oversized = 0
        for i in order:
            if current and frames[i] * (len(current) + 1) > max_frames:
                bins.append(current)
                current = []
            current.append(i)
            if frames[i] > max_frames:
                self.oversized += 1
        bins.append(current)
        if self.oversized:
            logger.warning(
                "%d utterances are longer than --batch-frames %d on their own; each is a batch of one", self.oversized, max_frames
            )
        self.max_frames = int(max_frames)
        self.n_frames = frames
        self._init_order(bins, shuffle, sortagrad, seed)

    def padded_frames(self, batch: Sequence[int]) -> int:
        """``max(frames) * len(batch)``: the batch's size once padded."""
        return max(self.n_frames[i] for i in batch) * len(batch)


class DistributedFrameBatchSampler(_RankShare, FrameBatchSampler):
    """:class:`FrameBatchSampler` for DDP: every rank builds the same batches and epoch
    order and takes every ``R``-th batch, padded by repetition so that all ranks run
    ``ceil(n_batches / R)`` steps per epoch (no rank waits at a collective)."""

    def __init__(
        self,
        data: Sized | Sequence[int],
        max_frames: int,
        shuffle: bool = True,
        sortagrad: bool = True,
        seed: int = 123456,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(data, max_frames, shuffle=shuffle, sortagrad=sortagrad, seed=seed)
        self.num_replicas, self.rank = _replica(num_replicas, rank)


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
        super().__init__(dataset, num_workers=num_workers, persistent_workers=persistent_workers, collate_fn=collate_fn, **kwargs)

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
    "SpectrogramDataset",
    "Batch",
    "collate",
    "Unusable",
    "BucketingSampler",
    "DistributedBucketingSampler",
    "FrameBatchSampler",
    "DistributedFrameBatchSampler",
    "AudioDataLoader",
]
