"""train.py at scale: --batch-frames, --cache-mb, --lazy-transcripts, --continue-from auto, multi-node torchrun."""
from __future__ import annotations

import os
import time

import pytest
import torch
from test_train import TINY, load_flat, run_train

import train
from data.data_loader import FrameBatchSampler

NO_BATCH_SIZE = [a for a in TINY if a not in ("--batch-size", "3")]


def test_batch_frames_trains_with_frame_bounded_batches(tiny_dataset, tmp_path):
    args = train.build_parser().parse_args(["--train-manifest", str(tiny_dataset), "--val-manifest",
                                            str(tiny_dataset), "--batch-frames", "200", "--cache-mb", "0",
                                            "--lazy-transcripts", *NO_BATCH_SIZE])
    trainer = train.Trainer(args)
    trainer.setup()
    assert isinstance(trainer.sampler, FrameBatchSampler) and trainer.sampler.max_frames == 200
    assert all(trainer.sampler.padded_frames(b) <= 200 for b in trainer.sampler.bins)
    assert trainer.train_set.cache_bytes == 0 and trainer.train_set.lazy_transcripts
    out = tmp_path / "run"
    argv = ["--epochs", "2", "--batch-frames", "200", "--cache-mb", "0.5", "--lazy-transcripts"]
    assert train.main(["--train-manifest", str(tiny_dataset), "--val-manifest", str(tiny_dataset),
                       "--save-folder", str(out), "--model-path", str(out / "best.pth"), *NO_BATCH_SIZE, *argv]) == 0
    last = load_flat(out / "deepspeech_last.pth")
    assert last["epoch"] == 2 and last["sampler"]["n_batches"] == len(trainer.sampler)


@pytest.mark.parametrize("argv,message", [
    (["--batch-frames", "500", "--batch-size", "4"], "drop --batch-size"),
    (["--batch-frames", "0"], "--batch-frames must be at least 1"),
    (["--cache-mb", "-1"], "--cache-mb must be >= 0"),
    (["--continue-from", "auto", "--finetune"], "not --continue-from auto"),
])
def test_nonsense_scale_flags_are_refused(tiny_dataset, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        train.main(["--train-manifest", str(tiny_dataset), "--val-manifest", str(tiny_dataset), *argv])
    assert message in capsys.readouterr().err


def test_continue_from_auto_starts_fresh_then_resumes_the_newest(tiny_dataset, tmp_path, caplog):
    caplog.set_level("INFO")
    flags = ["--epochs", "3", "--batch-size", "2"]
    assert run_train(tiny_dataset, tmp_path / "a", *flags) == 0
    out = tmp_path / "b"
    assert run_train(tiny_dataset, out, *flags, "--stop-after-epoch", "1", "--continue-from", "auto") == 0
    assert load_flat(out / "deepspeech_last.pth")["epoch"] == 1
    assert train.find_resumable(out) == out / "deepspeech_last.pth"
    # a newer per-batch checkpoint wins over an older deepspeech_last.pth
    assert run_train(tiny_dataset, out, *flags, "--continue-from", "auto", "--stop-after-epoch", "2",
                     "--checkpoint-per-batch", "2") == 0
    mid = out / "deepspeech_checkpoint_epoch_2_iter_2.pth"
    now = time.time()
    os.utime(out / "deepspeech_last.pth", (now - 60, now - 60))
    os.utime(mid, (now, now))
    assert train.find_resumable(out) == mid
    (out / "deepspeech_checkpoint_epoch_9_iter_9.pth").write_bytes(b"cut short")  # newest, but unloadable
    assert train.find_resumable(out) == mid
    (out / "best.pth").touch()  # not a resumable checkpoint name
    assert run_train(tiny_dataset, out, *flags, "--continue-from", "auto") == 0
    a, b = load_flat(tmp_path / "a" / "deepspeech_last.pth"), load_flat(out / "deepspeech_last.pth")
    assert b["epoch"] == 3
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    assert train.find_resumable(tmp_path / "empty") is None
