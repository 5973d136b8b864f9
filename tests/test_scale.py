"""Corpus-scale data loading: bounded audio cache, lazy transcripts, flat memory, frame-bounded batches."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tone

from data.data_loader import (
    AudioDataLoader,
    BucketingSampler,
    DistributedFrameBatchSampler,
    FrameBatchSampler,
    SpectrogramDataset,
    Unusable,
    collate,
)
from data.manifest import read_manifest, write_manifest
from data.text import TranscriptError


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


# ---------------------------------------------------------------------------- cache


def test_cache_is_automatic_bounded_or_off(tiny_dataset: Path) -> None:
    auto = SpectrogramDataset(tiny_dataset)
    total = 4 * sum(auto.n_samples)
    assert auto.cache_bytes == total and auto.cache_audio  # 3.9 s fit in the automatic budget
    for i in range(len(auto)):
        auto[i]
    assert auto.cached_bytes == total
    off = SpectrogramDataset(tiny_dataset, cache_bytes=0)
    assert not off.cache_audio
    for i in range(len(off)):
        off[i]
    assert off.cached_bytes == 0
    assert SpectrogramDataset(tiny_dataset, cache_audio=False, cache_bytes=10**9).cache_bytes == 0
    bounded = SpectrogramDataset(tiny_dataset, cache_bytes=4 * (auto.n_samples[0] + auto.n_samples[1]))
    bounded.preload()
    assert sorted(bounded._cache) == [0, 1] and bounded.cached_bytes <= bounded.cache_bytes
    for i in range(len(bounded)):
        assert torch.equal(bounded[i][0], auto[i][0])
    assert sorted(bounded._cache) == [0, 1]  # full: nothing else is kept, nothing evicted
    with pytest.raises(ValueError):
        SpectrogramDataset(tiny_dataset, cache_bytes=-1)


def test_large_manifest_is_not_cached_automatically(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    import data.data_loader as dl

    monkeypatch.setattr(dl, "AUTO_CACHE_BYTES", 1000)
    ds = SpectrogramDataset(tiny_dataset)
    assert ds.cache_bytes == 0 and not ds.cache_audio


def test_memory_stays_flat_streaming_without_cache(tmp_path: Path) -> None:
    """3,000 utterances (a manifest repeating a few tiny files) through the dataset with the
    cache off: resident memory does not grow with the number of utterances read."""
    rows = []
    for i in range(5):
        wav = write_tone(tmp_path / f"u{i}.wav", 0.2 + 0.05 * i, seed=i)
        txt = tmp_path / f"u{i}.txt"
        txt.write_text("HELLO\n")
        rows.append((wav, txt, 0.2 + 0.05 * i))
    write_manifest(tmp_path / "m.csv", rows * 600)
    ds = SpectrogramDataset(tmp_path / "m.csv", cache_bytes=0, lazy_transcripts=True)
    assert len(ds) == 3000
    for i in range(300):  # warm up allocator pools
        ds[i]
    before = rss_kb()
    for i in range(300, len(ds)):
        ds[i]
    growth_mb = (rss_kb() - before) / 1024
    assert ds.cached_bytes == 0
    assert growth_mb < 20, f"RSS grew by {growth_mb:.1f} MB over 2,700 utterances"


# ---------------------------------------------------------------------------- lazy transcripts


def test_lazy_transcripts_are_read_in_getitem_and_bad_ones_skipped(tiny_dataset: Path, tmp_path: Path) -> None:
    rows = read_manifest(tiny_dataset)
    manifest = tmp_path / "d.csv"
    write_manifest(manifest, [(w, t, 0.5) for w, t, _ in rows])
    eager = SpectrogramDataset(tiny_dataset)
    (tiny_dataset.parent / "txt" / "u1.txt").write_text("CAF\u00c9\n")
    (tiny_dataset.parent / "txt" / "u2.txt").unlink()
    lazy = SpectrogramDataset(manifest, lazy_transcripts=True, on_error="skip")
    assert len(lazy) == 6 and lazy.ids == [None] * 6 and not lazy.skipped  # nothing read yet
    items = [lazy[i] for i in range(6)]
    assert isinstance(items[1], Unusable) and "\u00c9" in items[1].reason
    assert isinstance(items[2], Unusable) and "u2.txt" in items[2].reason
    for i in (0, 3, 4, 5):
        assert items[i][1] == eager[i][1] and items[i][3] == eager.texts[i]
    batch = collate(items)
    assert len(batch.paths) == 4 and len(batch.skipped) == 2
    strict = SpectrogramDataset(manifest, lazy_transcripts=True)
    with pytest.raises(TranscriptError, match="u1.txt"):
        strict[1]
    with pytest.raises(FileNotFoundError, match="u2.txt"):
        strict[2]
    loader = AudioDataLoader(strict, batch_sampler=BucketingSampler(strict, 6), num_workers=1)
    with pytest.raises(TranscriptError, match="u1.txt"):
        list(loader)


# ---------------------------------------------------------------------------- frame batches


def random_frames(n: int = 200, seed: int = 0) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).integers(50, 1500, n)]


def epoch_batches(sampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


def test_frame_batches_respect_the_bound_and_cover_everything_once() -> None:
    frames = random_frames()
    s = FrameBatchSampler(frames, 6000, seed=3)
    assert sorted(i for b in s.bins for i in b) == list(range(len(frames)))
    assert all(max(frames[i] for i in b) * len(b) <= 6000 for b in s.bins)
    assert all(s.padded_frames(b) <= 6000 for b in s.bins)
    sizes = [len(b) for b in s.bins]
    assert sizes[0] > sizes[-1]  # short utterances make larger batches
    # greedy: adding the next utterance would have broken the bound
    order = [i for b in s.bins for i in b]
    for b, nxt in zip(s.bins, s.bins[1:]):
        assert frames[nxt[0]] * (len(b) + 1) > 6000
    assert [frames[i] for i in order] == sorted(frames)
    one = FrameBatchSampler([10, 20, 900, 30], 100)
    assert one.oversized == 1 and [2] in one.bins  # too long alone: a batch of one, never dropped
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError):
            FrameBatchSampler(frames, bad)
    with pytest.raises(ValueError):
        FrameBatchSampler([], 100)


def test_frame_batches_sortagrad_and_seeded_shuffle_are_deterministic(tiny_dataset: Path) -> None:
    frames = random_frames()
    a, b = FrameBatchSampler(frames, 6000, seed=3), FrameBatchSampler(frames, 6000, seed=3)
    assert epoch_batches(a, 0) == a.bins  # SortaGrad: shortest first
    for epoch in (1, 2):
        assert epoch_batches(a, epoch) == epoch_batches(b, epoch)
        assert sorted(map(tuple, epoch_batches(a, epoch))) == sorted(map(tuple, a.bins))
    assert epoch_batches(a, 1) != epoch_batches(a, 2) != a.bins
    assert epoch_batches(FrameBatchSampler(frames, 6000, seed=4), 1) != epoch_batches(a, 1)
    assert epoch_batches(FrameBatchSampler(frames, 6000, shuffle=False), 3) == a.bins
    assert epoch_batches(FrameBatchSampler(frames, 6000, sortagrad=False, seed=3), 0) != a.bins
    ds = SpectrogramDataset(tiny_dataset)
    s = FrameBatchSampler(ds, 2 * ds.n_frames[-1])
    assert [len(b) for b in s.bins] == [2, 2, 2]  # uses the dataset's n_frames


@pytest.mark.parametrize("epoch,done", [(0, 3), (2, 0), (2, 5)])
def test_frame_batches_resume_mid_epoch_equals_uninterrupted(epoch: int, done: int) -> None:
    frames = random_frames()
    full = epoch_batches(FrameBatchSampler(frames, 6000, seed=7), epoch)
    run = FrameBatchSampler(frames, 6000, seed=7)
    run.set_epoch(epoch)
    seen = []
    for b, _ in zip(run, range(done)):
        seen.append(list(b))
        run.batches_done += 1
    state = run.state_dict()
    assert state == {"epoch": epoch, "batches_done": done, "n_batches": len(run)}
    resumed = FrameBatchSampler(frames, 6000, seed=7)
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)
    assert seen + [list(b) for b in resumed] == full
    with pytest.raises(ValueError, match="batches per epoch"):
        FrameBatchSampler(frames, 3000, seed=7).load_state_dict(state)


@pytest.mark.parametrize("replicas", [2, 3])
def test_distributed_frame_batches_partition_and_pad(replicas: int) -> None:
    frames = random_frames(101)
    base = FrameBatchSampler(frames, 5000, seed=2)
    n = len(base.bins)
    for epoch in range(3):
        ranks = [DistributedFrameBatchSampler(frames, 5000, seed=2, num_replicas=replicas, rank=r) for r in range(replicas)]
        per_rank = [epoch_batches(s, epoch) for s in ranks]
        assert all(len(b) == len(s) == math.ceil(n / replicas) for b, s in zip(per_rank, ranks))
        covered = [tuple(b) for batches in per_rank for b in batches]
        assert sorted(set(covered)) == sorted(tuple(b) for b in base.bins)
        assert len(covered) - n == (-n) % replicas
        interleaved = [per_rank[k % replicas][k // replicas] for k in range(n)]
        assert interleaved == epoch_batches(base, epoch)
    run = DistributedFrameBatchSampler(frames, 5000, seed=2, num_replicas=2, rank=1)
    full = epoch_batches(run, 1)
    run.load_state_dict({"epoch": 1, "batches_done": 2, "n_batches": len(run)})
    run.set_epoch(1)
    assert [list(b) for b in run] == full[2:]


def test_bench_loader_quick(capsys: pytest.CaptureFixture) -> None:
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_loader

    assert bench_loader.main(["--rows", "2000", "--files", "2", "--seconds", "1", "--stream", "200", "--runs", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"manifest_load_s", "flac_x_realtime", "rss_growth_mb"}
    assert result["flac_x_realtime"] > 0 and result["manifest_load_s"] < 10
