"""train.py end to end on tiny generated data: every flag, exact resume, checkpoints, DDP, plots."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO, write_tone

import train
from checkpoint import load_checkpoint

TINY = ["--hidden-size", "8", "--hidden-layers", "1", "--conv-channels", "4", "--batch-size", "3", "--silent"]


def run_train(manifest: Path, out: Path, *extra: str) -> int:
    tiny = [a for a in TINY if a not in ("--conv-channels", "4")] if "ds1" in extra else TINY
    argv = [
        "--train-manifest",
        str(manifest),
        "--val-manifest",
        str(manifest),
        "--save-folder",
        str(out),
        "--model-path",
        str(out / "best.pth"),
        *tiny,
        *extra,
    ]
    return train.main(argv)


def load_flat(path: Path) -> dict:
    """A checkpoint as one dict: its configs, labels and weights beside its training-state fields."""
    ckpt = load_checkpoint(path)
    flat = {
        "model_config": dataclasses.asdict(ckpt.model_config),
        "audio_config": ckpt.audio_config.to_dict(),
        "labels": ckpt.labels,
        "state_dict": ckpt.state_dict,
    }
    if ckpt.training is not None:
        flat.update(ckpt.training.to_dict())
    return flat


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_flat(path)["state_dict"]


def test_trains_writes_best_model_checkpoints_and_curves(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    assert run_train(tiny_dataset, out, "--epochs", "2", "--checkpoint") == 0
    best = load_flat(out / "best.pth")
    assert best["labels"] == list("_'ABCDEFGHIJKLMNOPQRSTUVWXYZ ")
    assert best["model_config"]["hidden_size"] == 8
    assert "optimizer" not in best  # the best model holds no training state
    for name in ("deepspeech_1.pth", "deepspeech_2.pth", "deepspeech_last.pth"):
        pkg = torch.load(out / name, weights_only=True)
        assert {"optimizer", "scheduler", "sampler", "rng", "history", "args"} <= pkg["training"].keys()
    last = load_flat(out / "deepspeech_last.pth")
    assert last["epoch"] == 2 and last["history"]["epoch"] == [1, 2]
    assert all(np.isfinite(last["history"]["train_loss"]))
    assert last["args"]["epochs"] == 2  # the effective configuration is stored
    assert (out / "curves.png").stat().st_size > 1000
    assert not list(out.glob("*.tmp*"))


def test_effective_configuration_is_printed(tiny_dataset, tmp_path, caplog):
    caplog.set_level("INFO")
    argv = [
        "--train-manifest",
        str(tiny_dataset),
        "--val-manifest",
        str(tiny_dataset),
        "--save-folder",
        str(tmp_path),
        "--model-path",
        str(tmp_path / "m.pth"),
        *[a for a in TINY if a != "--silent"],
        "--epochs",
        "1",
    ]
    assert train.main(argv) == 0
    text = caplog.text
    assert '"hidden_size": 8' in text and '"train_utterances": 6' in text
    assert "epoch 1/1" in text and "WER" in text


def test_resume_is_exact(tiny_dataset, tmp_path):
    """A run stopped after epoch 1 and resumed ends with the same weights as one that never stopped,
    with shuffling, dropout and every augmentation on."""
    noise = write_tone(tmp_path / "noise" / "hum.wav", 1.0, freq=50.0, seed=9)
    flags = [
        "--epochs",
        "3",
        "--dropout",
        "0.1",
        "--augment",
        "--spec-augment",
        "--noise-dir",
        str(noise.parent),
        "--noise-prob",
        "1.0",
        "--lr-schedule",
        "onecycle",
    ]
    assert run_train(tiny_dataset, tmp_path / "a", *flags) == 0
    assert run_train(tiny_dataset, tmp_path / "b", *flags, "--stop-after-epoch", "1") == 0
    assert load_flat(tmp_path / "b" / "deepspeech_last.pth")["epoch"] == 1
    assert run_train(tiny_dataset, tmp_path / "b", *flags, "--continue-from", str(tmp_path / "b" / "deepspeech_last.pth")) == 0
    a = load_flat(tmp_path / "a" / "deepspeech_last.pth")
    b = load_flat(tmp_path / "b" / "deepspeech_last.pth")
    assert a["history"] == b["history"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


def test_resume_mid_epoch_from_per_batch_checkpoint(tiny_dataset, tmp_path):
    """--checkpoint-per-batch writes resumable checkpoints; resuming from one mid-epoch
    reproduces the uninterrupted run."""
    flags = ["--epochs", "2", "--batch-size", "2"]
    assert run_train(tiny_dataset, tmp_path / "a", *flags) == 0
    assert run_train(tiny_dataset, tmp_path / "b", *flags, "--checkpoint-per-batch", "2") == 0
    mid = tmp_path / "b" / "deepspeech_checkpoint_epoch_2_iter_2.pth"
    assert mid.exists()
    assert load_flat(mid)["sampler"]["batches_done"] == 2
    assert run_train(tiny_dataset, tmp_path / "c", *flags, "--continue-from", str(mid)) == 0
    a, c = weights(tmp_path / "a" / "deepspeech_last.pth"), weights(tmp_path / "c" / "deepspeech_last.pth")
    assert all(torch.equal(v, c[k]) for k, v in a.items())


def test_finetune_takes_weights_only(tiny_dataset, tmp_path):
    assert run_train(tiny_dataset, tmp_path / "a", "--epochs", "1") == 0
    assert (
        run_train(
            tiny_dataset, tmp_path / "b", "--epochs", "1", "--finetune", "--continue-from", str(tmp_path / "a" / "best.pth")
        )
        == 0
    )
    pkg = load_flat(tmp_path / "b" / "deepspeech_last.pth")
    assert pkg["epoch"] == 1 and pkg["history"]["epoch"] == [1]


def test_continue_from_a_model_without_training_state_says_use_finetune(tiny_dataset, tmp_path, capsys):
    assert run_train(tiny_dataset, tmp_path / "a", "--epochs", "1") == 0
    rc = run_train(tiny_dataset, tmp_path / "b", "--epochs", "2", "--continue-from", str(tmp_path / "a" / "best.pth"))
    assert rc == 2
    assert "--finetune" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        ["--arch", "ds1"],
        ["--rnn-type", "lstm"],
        ["--rnn-type", "rnn", "--no-bidirectional"],
        ["--conv-time-stride", "4"],
        ["--optim", "sgd", "--momentum", "0.5", "--lr-schedule", "anneal", "--learning-anneal", "1.1"],
        ["--amp"],
        ["--no-shuffle", "--no-sortaGrad", "--num-workers", "2"],
    ],
)
def test_architectures_optimisers_and_modes_train(tiny_dataset, tmp_path, extra):
    assert run_train(tiny_dataset, tmp_path, "--epochs", "1", *extra) == 0
    pkg = load_flat(tmp_path / "deepspeech_last.pth")
    assert np.isfinite(pkg["history"]["train_loss"][0])
    for flag, key in (("--arch", "arch"), ("--rnn-type", "rnn_type"), ("--conv-time-stride", "conv_time_stride")):
        if flag in extra:
            assert str(pkg["model_config"][key]) == extra[extra.index(flag) + 1]
    if "--no-bidirectional" in extra:
        assert pkg["model_config"]["bidirectional"] is False


def test_ds1_stride_and_global_normalisation_are_stored(tiny_dataset, tmp_path):
    """--ds1-stride reaches the model; --normalize global measures per-frequency statistics on the
    training set and stores them, so inference normalises the same way."""
    from data.audio import AudioConfig, load_audio, spectrogram
    from data.manifest import read_manifest

    assert run_train(tiny_dataset, tmp_path / "a", "--epochs", "1", "--arch", "ds1", "--ds1-stride", "2") == 0
    assert load_flat(tmp_path / "a" / "best.pth")["model_config"]["ds1_stride"] == 2
    assert run_train(tiny_dataset, tmp_path / "b", "--epochs", "1", "--normalize", "global") == 0
    audio = load_flat(tmp_path / "b" / "best.pth")["audio_config"]
    assert audio["normalize"] == "global" and len(audio["feature_mean"]) == 161
    raw = np.concatenate(
        [spectrogram(load_audio(wav), AudioConfig(normalize="none")) for wav, *_ in read_manifest(tiny_dataset)], axis=1
    )
    np.testing.assert_allclose(audio["feature_mean"], raw.mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(audio["feature_std"], np.maximum(raw.std(axis=1), 1e-5), rtol=1e-3, atol=1e-5)


def test_level_norm_measures_the_training_speech_level(tiny_dataset, tmp_path, caplog):
    """--level-norm stores the median speech level of the training audio in the model, with
    global statistics measured on the level-normalised features; resuming with --level-norm from a
    model without it says the flag is ignored."""
    from data.audio import AudioConfig, load_audio, spectrogram, speech_level_db
    from data.manifest import read_manifest

    assert run_train(tiny_dataset, tmp_path / "a", "--epochs", "1", "--level-norm", "--normalize", "global") == 0
    audio = load_flat(tmp_path / "a" / "best.pth")["audio_config"]
    wavs = [load_audio(wav) for wav, *_ in read_manifest(tiny_dataset)]
    assert audio["level_db"] == pytest.approx(np.median([speech_level_db(x, 16000) for x in wavs]), abs=0.01)
    cfg = AudioConfig(normalize="none", level_db=audio["level_db"])
    raw = np.concatenate([spectrogram(x, cfg) for x in wavs], axis=1)
    np.testing.assert_allclose(audio["feature_mean"], raw.mean(axis=1), rtol=1e-4, atol=1e-5)
    assert run_train(tiny_dataset, tmp_path / "b", "--epochs", "1") == 0
    assert load_flat(tmp_path / "b" / "best.pth")["audio_config"]["level_db"] is None
    caplog.set_level("WARNING")
    last = str(tmp_path / "b" / "deepspeech_last.pth")
    code = run_train(tiny_dataset, tmp_path / "b", "--epochs", "2", "--level-norm", "--continue-from", last)
    assert code == 0 and "ignoring --level-norm" in caplog.text
    assert load_flat(tmp_path / "b" / "deepspeech_last.pth")["audio_config"]["level_db"] is None
    caplog.clear()
    code = run_train(tiny_dataset, tmp_path / "b", "--epochs", "3", "--remove-dc", "--continue-from", last)
    assert code == 0 and "ignoring --remove-dc" in caplog.text
    assert run_train(tiny_dataset, tmp_path / "c", "--epochs", "1", "--remove-dc") == 0
    assert load_flat(tmp_path / "c" / "best.pth")["audio_config"]["remove_dc"] is True


def test_learning_rate_schedules(tiny_dataset, tmp_path):
    assert (
        run_train(
            tiny_dataset, tmp_path / "a", "--epochs", "3", "--lr", "0.01", "--lr-schedule", "anneal", "--learning-anneal", "2"
        )
        == 0
    )
    lrs = load_flat(tmp_path / "a" / "deepspeech_last.pth")["history"]["lr"]
    assert lrs == pytest.approx([0.005, 0.0025, 0.00125])  # lr after each epoch's annealing
    assert run_train(tiny_dataset, tmp_path / "b", "--epochs", "2", "--lr", "0.01", "--lr-schedule", "cosine") == 0
    lrs = load_flat(tmp_path / "b" / "deepspeech_last.pth")["history"]["lr"]
    assert lrs[0] == pytest.approx(0.01 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 0.5))), rel=1e-6)
    assert lrs[1] == pytest.approx(0.0001)


def test_no_shuffle_keeps_sorted_order_and_sortagrad_flag(tiny_dataset, tmp_path):
    args = train.build_parser().parse_args(
        ["--train-manifest", str(tiny_dataset), "--val-manifest", str(tiny_dataset), "--no-shuffle", *TINY]
    )
    trainer = train.Trainer(args)
    trainer.setup()
    for epoch in range(3):
        trainer.sampler.set_epoch(epoch)
        assert [i for b in trainer.sampler for i in b] == list(range(6))
    args = train.build_parser().parse_args(
        [
            "--train-manifest",
            str(tiny_dataset),
            "--val-manifest",
            str(tiny_dataset),
            "--no-sortaGrad",
            "--batch-size",
            "1",
            "--seed",
            "3",
            "--silent",
        ]
    )
    trainer = train.Trainer(args)
    trainer.setup()
    trainer.sampler.set_epoch(0)
    assert [i for b in trainer.sampler for i in b] != list(range(6))


def test_single_word_repeats_lengthen_the_epoch(tiny_dataset, tmp_path):
    base = ["--train-manifest", str(tiny_dataset), "--val-manifest", str(tiny_dataset), "--no-shuffle", *TINY]
    trainer = train.Trainer(train.build_parser().parse_args([*base, "--single-word-repeats", "2"]))
    trainer.setup()
    # Five of the six utterances are one word: 11 items, 4 batches of 3; validation is unchanged.
    assert len(trainer.train_set) == 11 and trainer.steps_per_epoch == 4 and len(trainer.val_set) == 6
    assert [trainer.train_set.texts[i] for b in trainer.sampler for i in b][:4] == ["A", "A", "AB", "AB"]
    assert run_train(tiny_dataset, tmp_path / "run", "--epochs", "1", "--single-word-repeats", "2") == 0


def test_custom_labels(tiny_dataset, tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(list("_ ABCDEFGHIJKLMNOPQRSTUVWXYZ'")))
    assert run_train(tiny_dataset, tmp_path, "--epochs", "1", "--labels-path", str(labels)) == 0
    assert load_flat(tmp_path / "best.pth")["labels"] == list("_ ABCDEFGHIJKLMNOPQRSTUVWXYZ'")


def test_transcript_outside_labels_is_skipped_and_counted(tiny_dataset, tmp_path, caplog):
    (tiny_dataset.parent / "txt" / "u0.txt").write_text("CAFÉ\n")
    assert run_train(tiny_dataset, tmp_path, "--epochs", "1") == 0
    assert "CAF" in caplog.text or "É" in caplog.text


def test_utterance_too_short_for_transcript_is_skipped_and_counted(tiny_dataset, tmp_path):
    (tiny_dataset.parent / "txt" / "u0.txt").write_text("THIS IS FAR TOO LONG FOR FOUR TENTHS OF A SECOND\n")
    assert run_train(tiny_dataset, tmp_path, "--epochs", "1") == 0
    counters = load_flat(tmp_path / "deepspeech_last.pth")["counters"]
    assert counters["skipped_too_short"] >= 1


def test_nonfinite_loss_skips_the_step(tiny_dataset, tmp_path, monkeypatch):
    real = torch.nn.functional.ctc_loss
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 1 else out

    args = train.build_parser().parse_args(
        ["--train-manifest", str(tiny_dataset), "--val-manifest", str(tiny_dataset), "--save-folder", str(tmp_path), *TINY]
    )
    trainer = train.Trainer(args)
    trainer.setup()
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    monkeypatch.setattr(train.nn.functional, "ctc_loss", flaky)
    batch = next(iter(trainer.train_loader))
    assert trainer.train_step(batch) is None
    assert trainer.counters["skipped_nonfinite"] == 1
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # no weight moved
    assert trainer.train_step(batch) is not None  # the next step is applied


def test_ctc_feasible_counts_repeats():
    targets = torch.tensor([1, 1, 2, 3, 3, 3, 4])  # "AAB" | "CCC" | "D"
    lengths = torch.tensor([3, 3, 1])
    # AAB needs 4 frames, CCC needs 5, D needs 1
    assert train.ctc_feasible(torch.tensor([4, 5, 1]), targets, lengths).tolist() == [True, True, True]
    assert train.ctc_feasible(torch.tensor([3, 4, 1]), targets, lengths).tolist() == [False, False, True]


def test_tensorboard_events_read_back(tiny_dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert (
        run_train(tiny_dataset, tmp_path, "--epochs", "2", "--tensorboard", "--log-dir", str(tmp_path / "tb"), "--id", "tiny")
        == 0
    )
    acc = EventAccumulator(str(tmp_path / "tb" / "tiny"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/wer", "val/cer", "lr"} <= tags
    assert [e.step for e in acc.Scalars("val/wer")] == [1, 2]


def test_visdom_without_server_warns_once_and_trains(tiny_dataset, tmp_path, caplog):
    pytest.importorskip("visdom")
    port = free_port()
    assert run_train(tiny_dataset, tmp_path, "--epochs", "2", "--visdom", "--visdom-port", str(port)) == 0
    assert caplog.text.count("visdom server unavailable") == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def visdom_server(tmp_path):
    pytest.importorskip("visdom")
    port = free_port()
    code = (
        "import sys; from visdom.server.run_server import main; "
        f"sys.argv=['visdom','-port','{port}','-bind_local','-env_path','{tmp_path / 'visdom'}']; main()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import visdom

    deadline = time.time() + 30
    client = None
    while time.time() < deadline:
        try:
            client = visdom.Visdom(server="http://127.0.0.1", port=port, raise_exceptions=True, use_incoming_socket=False)
            if client.check_connection(timeout_seconds=1):
                break
        except Exception:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("visdom server did not start")
    yield port, client
    proc.terminate()
    proc.wait(10)


def test_visdom_plots_and_resume_continues_window(tiny_dataset, tmp_path, visdom_server):
    port, client = visdom_server
    flags = ["--epochs", "3", "--visdom", "--visdom-server", "http://127.0.0.1", "--visdom-port", str(port), "--id", "run1"]
    assert run_train(tiny_dataset, tmp_path, *flags, "--stop-after-epoch", "2") == 0
    data = json.loads(client.get_window_data("run1_curves"))
    assert [len(trace["x"]) for trace in data["content"]["data"]] == [2, 2, 2]
    assert run_train(tiny_dataset, tmp_path, *flags, "--continue-from", str(tmp_path / "deepspeech_last.pth")) == 0
    data = json.loads(client.get_window_data("run1_curves"))
    assert [trace["x"] for trace in data["content"]["data"]][0] == [1, 2, 3]


def test_bad_arguments_give_clear_errors(tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--train-manifest", str(tmp_path / "missing.csv"), "--val-manifest", str(tiny_dataset)])
    assert e.value.code == 2
    assert "missing.csv: manifest not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--train-manifest", str(tiny_dataset), "--val-manifest", str(tiny_dataset), "--finetune"])
    assert "--finetune needs --continue-from" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert run_train(tiny_dataset, tmp_path, "--continue-from", str(bad)) == 2
    assert str(bad) in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            train.main(["--train-manifest", str(tiny_dataset), "--val-manifest", str(tiny_dataset), "--cuda"])
        assert "no CUDA device" in capsys.readouterr().err


def train_cmd(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train.py"),
        "--train-manifest",
        str(manifest),
        "--val-manifest",
        str(manifest),
        "--save-folder",
        str(out),
        "--model-path",
        str(out / "best.pth"),
        *TINY,
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_leaves_only_loadable_checkpoints_and_run_resumes(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        train_cmd(tiny_dataset, out, "--epochs", "50", "--checkpoint-per-batch", "1", "--batch-size", "1"), cwd=REPO, env=env
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("deepspeech_checkpoint_*.pth"))) < 8:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    files = sorted(out.glob("*.pth"))
    assert len(files) >= 8
    for f in files:
        load_checkpoint(f)  # every file that claims to be a checkpoint loads
    result = subprocess.run(
        train_cmd(tiny_dataset, out, "--epochs", "2", "--continue-from", str(out / "deepspeech_last.pth")), cwd=REPO, env=env
    )
    assert result.returncode == 0


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_a_resumable_checkpoint(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        train_cmd(tiny_dataset, out, "--epochs", "500", "--batch-size", "1"), cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "deepspeech_last.pth").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    pkg = load_flat(out / "deepspeech_last.pth")
    assert pkg["epoch"] < 500 and "optimizer" in pkg


@pytest.mark.slow
def test_ddp_two_processes_gloo(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *train_cmd(tiny_dataset, out, "--epochs", "2", "--batch-size", "1")[1:],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    pkg = load_flat(out / "deepspeech_last.pth")
    assert pkg["epoch"] == 2
    assert pkg["sampler"]["epoch"] >= 1
    assert not any(k.startswith("module.") for k in pkg["state_dict"])
    assert (out / "curves.png").exists() and (out / "best.pth").exists()


@pytest.mark.an4
@pytest.mark.slow
def test_tiny_model_overfits_real_an4_utterances(an4_dir, tmp_path):
    """The loop really learns: a small model memorises four real AN4 utterances."""
    from data.manifest import read_manifest, write_manifest

    rows = read_manifest(an4_dir / "an4_train_manifest.csv")[:4]
    manifest = tmp_path / "four.csv"
    write_manifest(manifest, rows)
    argv = [
        "--train-manifest",
        str(manifest),
        "--val-manifest",
        str(manifest),
        "--save-folder",
        str(tmp_path),
        "--model-path",
        str(tmp_path / "best.pth"),
        "--hidden-size",
        "96",
        "--hidden-layers",
        "2",
        "--conv-channels",
        "8",
        "--batch-size",
        "4",
        "--epochs",
        "120",
        "--lr",
        "3e-3",
        "--silent",
    ]
    assert train.main(argv) == 0
    pkg = load_flat(tmp_path / "deepspeech_last.pth")
    assert min(pkg["history"]["cer"]) < 5.0, pkg["history"]["cer"][-5:]


def test_audio_flags_are_stored_in_the_model(tiny_dataset, tmp_path):
    assert (
        run_train(
            tiny_dataset,
            tmp_path,
            "--epochs",
            "1",
            "--sample-rate",
            "8000",
            "--window-size",
            "0.025",
            "--window-stride",
            "0.0125",
            "--window",
            "hann",
        )
        == 0
    )
    pkg = load_flat(tmp_path / "best.pth")
    assert pkg["audio_config"] == {
        "sample_rate": 8000,
        "window_size": 0.025,
        "window_stride": 0.0125,
        "window": "hann",
        "normalize": "utterance",
        "feature_mean": None,
        "feature_std": None,
        "window_periodic": True,
        "pad_mode": "constant",
        "int16_divisor": 32768,
        "level_db": None,
        "remove_dc": False,
    }
    assert pkg["model_config"]["n_features"] == 101  # int(8000 * 0.025) // 2 + 1


def test_seed_weight_decay_and_max_norm(tiny_dataset, tmp_path):
    assert run_train(tiny_dataset, tmp_path / "a", "--epochs", "1", "--seed", "7") == 0
    assert run_train(tiny_dataset, tmp_path / "b", "--epochs", "1", "--seed", "7") == 0
    assert run_train(tiny_dataset, tmp_path / "c", "--epochs", "1", "--seed", "8") == 0
    a, b, c = (weights(tmp_path / d / "deepspeech_last.pth") for d in "abc")
    assert all(torch.equal(v, b[k]) for k, v in a.items())  # same seed: same run
    assert not all(torch.equal(v, c[k]) for k, v in a.items())
    assert run_train(tiny_dataset, tmp_path / "d", "--epochs", "1", "--weight-decay", "0.25") == 0
    groups = load_flat(tmp_path / "d" / "deepspeech_last.pth")["optimizer"]["param_groups"]
    assert all(g["weight_decay"] == 0.25 for g in groups)


def test_max_norm_clips_the_gradient(tiny_dataset, tmp_path):
    args = train.build_parser().parse_args(
        [
            "--train-manifest",
            str(tiny_dataset),
            "--val-manifest",
            str(tiny_dataset),
            "--save-folder",
            str(tmp_path),
            "--max-norm",
            "0.001",
            "--optim",
            "sgd",
            "--momentum",
            "0",
            "--lr",
            "1.0",
            "--lr-schedule",
            "anneal",
            "--weight-decay",
            "0",
            *TINY,
        ]
    )
    trainer = train.Trainer(args)
    trainer.setup()
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    assert trainer.train_step(next(iter(trainer.train_loader))) is not None
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    # plain SGD with lr 1: the update is the clipped gradient, whose norm is max-norm
    assert float((after - before).norm()) == pytest.approx(0.001, rel=1e-3)


def test_warmup_steps_and_threads(tiny_dataset, tmp_path):
    threads = torch.get_num_threads()
    try:
        assert (
            run_train(
                tiny_dataset,
                tmp_path,
                "--epochs",
                "1",
                "--lr",
                "0.01",
                "--lr-schedule",
                "anneal",
                "--warmup-steps",
                "4",
                "--threads",
                "1",
            )
            == 0
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    # 2 batches in the epoch: after them the warm-up factor is (2 + 1) / 4
    assert load_flat(tmp_path / "deepspeech_last.pth")["history"]["lr"] == pytest.approx([0.0075])


def test_resume_with_a_new_model_path_writes_the_best_model_there(tiny_dataset, tmp_path, caplog):
    """No epoch after the resume beats the stored best: the best model must still be written to the
    new --model-path, and every path the final log line names must exist."""
    assert run_train(tiny_dataset, tmp_path / "a", "--epochs", "2", "--lr", "1e-3") == 0
    first_best = load_flat(tmp_path / "a" / "best.pth")
    new_path = tmp_path / "elsewhere" / "resumed_best.pth"
    caplog.set_level("INFO", logger="deepspeech.train")
    argv = [
        "--train-manifest",
        str(tiny_dataset),
        "--val-manifest",
        str(tiny_dataset),
        "--save-folder",
        str(tmp_path / "a"),
        "--model-path",
        str(new_path),
        *[a for a in TINY if a != "--silent"],
        "--epochs",
        "3",
        "--lr",
        "1e-12",
        "--continue-from",
        str(tmp_path / "a" / "deepspeech_last.pth"),
    ]
    assert train.main(argv) == 0
    assert new_path.is_file()
    best = load_flat(new_path)
    assert best["best_wer"] == min(best["history"]["wer"])
    if min(best["history"]["wer"]) == min(first_best["history"]["wer"]):  # no new best: the stored one
        for k, v in first_best["state_dict"].items():
            assert torch.equal(best["state_dict"][k], v), k
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done:")]
    assert done and str(new_path) in done[-1]
    for token in done[-1].split():
        if token.endswith(".pth") or token.endswith(".png"):
            assert Path(token).exists(), token


def test_undecodable_training_audio_is_skipped_and_counted(tiny_dataset, tmp_path, capsys):
    """A WAV whose header is fine but whose samples cannot be decoded (or are NaN) does not stop training."""
    from data.manifest import read_manifest

    rows = read_manifest(tiny_dataset)
    bad_nan = rows[1].wav
    sf.write(bad_nan, np.full(8000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    truncated = rows[2].wav
    data = truncated.read_bytes()
    truncated.write_bytes(data[:44] + b"\x00")  # header claims more samples than the file holds
    assert run_train(tiny_dataset, tmp_path, "--epochs", "1", "--no-augment", "--no-spec-augment") == 0
    counters = load_flat(tmp_path / "deepspeech_last.pth")["counters"]
    assert counters["skipped_unreadable"] >= 1
    assert np.isfinite(load_flat(tmp_path / "deepspeech_last.pth")["history"]["train_loss"][0])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--momentum", "0.5"], "--momentum applies to --optim sgd"),
        (["--learning-anneal", "1.1"], "--learning-anneal applies to --lr-schedule anneal"),
        (["--arch", "ds1", "--conv-channels", "8"], "--conv-channels applies to --arch ds2"),
        (["--arch", "ds1", "--conv-time-stride", "2"], "--conv-time-stride applies to --arch ds2"),
        (["--lookahead-context", "3"], "--lookahead-context applies to unidirectional"),
        (["--ds1-context", "3"], "--ds1-context applies to --arch ds1"),
        (["--visdom-port", "9000"], "--visdom-port applies with --visdom"),
        (["--visdom-server", "http://x"], "--visdom-server applies with --visdom"),
        (["--log-dir", "runs/tb"], "--log-dir applies with --tensorboard"),
        (["--threads", "0"], "--threads"),
        (["--stop-after-epoch", "0"], "--stop-after-epoch"),
        (["--single-word-repeats", "0"], "--single-word-repeats must be at least 1"),
        (["--word-crop-prob", "0", "--word-crop-min-pause-db", "30"], "--word-crop-min-pause-db does nothing"),
        (["--word-crop-prob", "0", "--word-crop-skip-letters"], "--word-crop-skip-letters does nothing"),
        (["--single-word-repeats", "2", "--lazy-transcripts"], "drop --lazy-transcripts"),
    ],
)
def test_flags_that_would_do_nothing_are_refused(tiny_dataset, tmp_path, capsys, argv, message):
    paths = ["--save-folder", str(tmp_path), "--model-path", str(tmp_path / "m.pth")]  # if it ran, not into models/
    with pytest.raises(SystemExit) as info:
        train.main(["--train-manifest", str(tiny_dataset), "--val-manifest", str(tiny_dataset), *paths, *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_keeps_examples_and_prints_each_default_once():
    text = train.build_parser().format_help()
    assert "    python train.py --cuda --amp" in text  # the description keeps its line breaks
    import re

    assert text.count("(default: onecycle)") == 1
    assert not re.search(r"\(default: [^)]*\)\s*\(default:", text)


def test_progress_is_plain_lines_when_not_a_terminal(tiny_dataset, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--train-manifest",
            str(tiny_dataset),
            "--val-manifest",
            str(tiny_dataset),
            "--save-folder",
            str(tmp_path),
            "--model-path",
            str(tmp_path / "m.pth"),
            *[a for a in TINY if a != "--silent"],
            "--epochs",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "epoch 1/1" in result.stderr


def test_init_from_starts_a_unidirectional_model_from_a_bidirectional_one():
    from checkpoint import Checkpoint, CheckpointError
    from data.audio import AudioConfig
    from model import ModelConfig, build_model

    def cfg(**kw):
        base = dict(n_features=161, hidden_size=8, hidden_layers=2, conv_channels=4, rnn_type="lstm")
        return ModelConfig(**{**base, **kw})

    torch.manual_seed(0)
    labels = list("_'ABCDEFGHIJKLMNOPQRSTUVWXYZ ")
    source = Checkpoint.from_model(build_model(cfg(bidirectional=True)), AudioConfig(), labels)
    student = build_model(cfg(bidirectional=False, lookahead_context=3))
    copied, fresh = train.init_from(student, source, same_labels=True)
    assert fresh == ["lookahead.conv.weight"]
    state = student.state_dict()
    assert all(torch.equal(state[k], source.state_dict[k]) for k in copied)
    assert "rnns.0.rnn.weight_ih_l0" in copied and not any("reverse" in k for k in state)
    look = state["lookahead.conv.weight"]  # (hidden, 1, context): the current frame passes itself on
    assert torch.equal(look[:, :, 0], torch.ones_like(look[:, :, 0])) and not look[:, :, 1:].any()
    # other labels: the output layer is not taken, whatever its shape
    student = build_model(cfg(bidirectional=False, lookahead_context=3))
    copied, fresh = train.init_from(student, source, same_labels=False)
    assert {"head.weight"} <= set(fresh) and not any(k.startswith("head.") for k in copied)
    # nothing in common
    other = Checkpoint.from_model(build_model(cfg(conv_channels=6, hidden_size=12)), AudioConfig(), labels)
    with pytest.raises(CheckpointError, match="no weight matches"):
        train.init_from(build_model(cfg(bidirectional=False)), other, same_labels=False)


def test_init_from_trains_a_new_run_and_refuses_resume_flags(tiny_dataset, tmp_path, capsys):
    assert run_train(tiny_dataset, tmp_path / "bi", "--epochs", "1") == 0
    bi = str(tmp_path / "bi" / "best.pth")
    argv = ["--epochs", "1", "--no-bidirectional", "--lookahead-context", "2", "--init-from", bi]
    assert run_train(tiny_dataset, tmp_path / "uni", *argv) == 0
    last = load_flat(tmp_path / "uni" / "deepspeech_last.pth")
    assert last["epoch"] == 1 and last["model_config"]["bidirectional"] is False
    with pytest.raises(SystemExit):
        run_train(tiny_dataset, tmp_path / "x", *argv, "--continue-from", bi)
    assert "--init-from starts a new run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_train(tiny_dataset, tmp_path / "x", "--init-from", str(tmp_path / "missing.pth"))
    assert "missing.pth: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert run_train(tiny_dataset, tmp_path / "x", "--init-from", str(bad)) == 2
    assert str(bad) in capsys.readouterr().err


def test_init_from_a_lookahead_of_another_context_keeps_the_taps_both_have():
    from checkpoint import Checkpoint
    from data.audio import AudioConfig
    from model import ModelConfig, build_model

    def uni(context):
        cfg = ModelConfig(hidden_size=8, hidden_layers=1, conv_channels=4, bidirectional=False, lookahead_context=context)
        return build_model(cfg)

    torch.manual_seed(0)
    source = Checkpoint.from_model(uni(3), AudioConfig(), list("_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "))
    theirs = source.state_dict["lookahead.conv.weight"]
    longer, shorter = uni(5), uni(2)
    copied, fresh = train.init_from(longer, source, same_labels=True)
    assert fresh == [] and "lookahead.conv.weight[:, :, :3]" in copied
    weight = longer.state_dict()["lookahead.conv.weight"]
    assert torch.equal(weight[:, :, :3], theirs) and not weight[:, :, 3:].any()
    x, lengths = torch.randn(2, 1, 161, 40), torch.tensor([40, 31])
    with torch.no_grad():  # the longer lookahead's new taps are zero: it starts as the source model
        torch.testing.assert_close(longer.eval()(x, lengths)[0], source.build_model()(x, lengths)[0])
    train.init_from(shorter, source, same_labels=True)
    assert torch.equal(shorter.state_dict()["lookahead.conv.weight"], theirs[:, :, :2])
