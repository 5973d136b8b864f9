"""checkpoint.py: round trip, weights_only, atomic save, wrapped models, errors, fp16, model.py info tool."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import model as model_module
from checkpoint import (
    Checkpoint,
    CheckpointError,
    TrainingState,
    load_checkpoint,
    load_model,
    save_checkpoint,
    to_plain_data,
    unwrap_model,
)
from data.audio import AudioConfig
from data.text import LABELS
from model import ModelConfig, build_model, count_parameters

REPO = Path(__file__).resolve().parents[1]


def save(
    path: Path, model: nn.Module, audio: AudioConfig = AudioConfig(), labels=LABELS, fp16_weights: bool = False, **training
) -> Path:
    state = TrainingState(**training) if training else None
    return save_checkpoint(path, Checkpoint.from_model(model, audio, labels, state), fp16_weights=fp16_weights)


def tiny_model(arch: str = "ds2", bidirectional: bool = True, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch=arch,
        hidden_size=8,
        hidden_layers=2,
        rnn_type="gru",
        bidirectional=bidirectional,
        conv_channels=4,
        lookahead_context=3,
        ds1_context=2,
        **kw,
    )
    model = build_model(cfg)
    with torch.no_grad():  # non-trivial BatchNorm buffers, so they must round-trip too
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def outputs(model: nn.Module, n_features: int = 161) -> torch.Tensor:
    torch.manual_seed(123)
    x = torch.randn(2, 1, n_features, 40)
    with torch.no_grad():
        return model(x, torch.tensor([40, 27]))[0]


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, nn.Module]:
    model = tiny_model()
    path = save(tmp_path / "model.pth", model, AudioConfig(), LABELS)
    return path, model


# ---------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("arch,bidirectional", [("ds2", True), ("ds2", False), ("ds1", True)])
def test_round_trip_gives_identical_outputs(tmp_path: Path, arch: str, bidirectional: bool) -> None:
    model = tiny_model(arch, bidirectional)
    path = save(tmp_path / "deep" / "er" / "model.pth", model, AudioConfig(), LABELS, epoch=3)
    loaded, pkg = load_model(path)
    assert not loaded.training
    assert loaded.cfg == model.cfg
    assert pkg.labels == list(LABELS) and pkg.training.epoch == 3
    assert pkg.audio_config == AudioConfig()
    assert torch.equal(outputs(loaded), outputs(model))
    for key, value in model.state_dict().items():
        assert torch.equal(pkg.state_dict[key], value), key


def test_audio_config_and_labels_are_stored(tmp_path: Path) -> None:
    audio = AudioConfig(sample_rate=8000, window="hann", normalize="none")  # 81 features
    labels = list("_abc ")
    model = tiny_model(n_features=audio.n_freq, n_classes=len(labels))
    path = save(tmp_path / "m.pth", model, audio, labels)
    loaded, pkg = load_model(path)
    assert pkg.audio_config == audio
    assert pkg.labels == labels
    assert torch.equal(outputs(loaded, 81), outputs(model, 81))


def test_file_is_plain_data_for_weights_only_load(saved: tuple[Path, nn.Module]) -> None:
    path, model = saved
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "deepspeech-ctc" and raw["format_version"] == 2
    assert raw["model_config"] == dataclasses.asdict(model.cfg)
    assert raw["audio_config"] == AudioConfig().to_dict()
    assert set(raw["state_dict"]) == set(model.state_dict())
    assert all(v.device.type == "cpu" for v in raw["state_dict"].values())


def test_training_state_round_trips(tmp_path: Path) -> None:
    """Optimizer, scheduler, RNG states and history (after to_plain_data) survive weights_only loading."""
    model = tiny_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    log_probs, lengths = model(torch.randn(2, 1, 161, 30), torch.tensor([30, 20]))
    log_probs.sum().backward()
    optimizer.step()
    scheduler.step()
    rng = to_plain_data({"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()})
    history = {"epoch": [1], "train_loss": [50.0], "val_loss": [40.0], "wer": [80.0], "cer": [40.0]}
    args = to_plain_data({"save_folder": Path("models"), "lr": np.float64(1e-3), "labels_path": None})
    path = save(
        tmp_path / "m.pth",
        model,
        AudioConfig(),
        LABELS,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=rng,
        epoch=1,
        step=7,
        history=history,
        args=args,
    )
    pkg = load_checkpoint(path).training
    assert pkg.args == {"save_folder": "models", "lr": 1e-3, "labels_path": None}
    assert pkg.history == history and pkg.step == 7
    restored = torch.optim.AdamW(tiny_model().parameters(), lr=1e-3)
    restored.load_state_dict(pkg.optimizer)
    for a, b in zip(optimizer.state_dict()["state"].values(), restored.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    np_state = pkg.rng["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy(), *np_state[2:]))
    random.setstate(pkg.rng["python"])
    torch.set_rng_state(pkg.rng["torch"])


# ---------------------------------------------------------------------------- atomic save


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pth"
    old_model = tiny_model(seed=0)
    save(path, old_model, AudioConfig(), LABELS, epoch=1)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save(path, tiny_model(seed=1), AudioConfig(), LABELS, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pth"]  # no temp file left behind
    loaded, pkg = load_model(path)
    assert pkg.training.epoch == 1 and torch.equal(outputs(loaded), outputs(old_model))


def test_save_overwrites_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    save(path, tiny_model(seed=0), AudioConfig(), LABELS, epoch=1)
    save(path, tiny_model(seed=1), AudioConfig(), LABELS, epoch=2)
    assert os.listdir(tmp_path) == ["model.pth"]
    assert load_checkpoint(path).training.epoch == 2


# ---------------------------------------------------------------------------- wrapped models


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_wrapped_models_save_the_same_clean_keys(tmp_path: Path) -> None:
    import torch.distributed as dist

    model = tiny_model()
    bare_keys = list(model.state_dict())
    wrapped = {
        "dataparallel": nn.DataParallel(model),
        "compiled": torch.compile(model),
        "dataparallel+compiled": nn.DataParallel(torch.compile(model)),
    }
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped["ddp"] = nn.parallel.DistributedDataParallel(model)
        wrapped["compiled ddp"] = torch.compile(nn.parallel.DistributedDataParallel(model))
        for name, wrapper in wrapped.items():
            assert unwrap_model(wrapper) is model, name
            path = save(tmp_path / f"{name}.pth", wrapper, AudioConfig(), LABELS)
            keys = list(torch.load(path, weights_only=True)["state_dict"])
            assert keys == bare_keys, name
            assert torch.equal(outputs(load_model(path)[0]), outputs(model)), name
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- errors


def _assert_error(path: Path, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _assert_error(tmp_path / "nope.pth", "not found")
    _assert_error(tmp_path, "not a file")


def test_corrupt_files(tmp_path: Path, saved: tuple[Path, nn.Module]) -> None:
    data = saved[0].read_bytes()
    cases = {
        "truncated.pth": (data[: len(data) // 2], "truncated or corrupt"),
        "random.pth": (np.random.default_rng(0).bytes(4096), "not a PyTorch checkpoint"),
        "empty.pth": (b"", "empty"),
        "text.pth": (b"this is not a checkpoint\n", "not a PyTorch checkpoint"),
    }
    for name, (blob, fragment) in cases.items():
        (tmp_path / name).write_bytes(blob)
        _assert_error(tmp_path / name, fragment)


def test_foreign_files(tmp_path: Path) -> None:
    model = tiny_model()
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    _assert_error(tmp_path / "bare.pth", "bare state_dict")
    ds_package = {
        "version": "0.0.1",
        "hidden_size": 8,
        "hidden_layers": 2,
        "rnn_type": "gru",
        "audio_conf": {"sample_rate": 16000},
        "labels": list(LABELS),
        "state_dict": model.state_dict(),
    }
    torch.save(ds_package, tmp_path / "deepspeech_pytorch.pth")
    _assert_error(tmp_path / "deepspeech_pytorch.pth", "deepspeech.pytorch")
    torch.save(model, tmp_path / "pickled_module.pth")  # a whole pickled nn.Module: never unpickled
    _assert_error(tmp_path / "pickled_module.pth", "weights_only")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    _assert_error(tmp_path / "list.pth", "not a deepspeech-ctc checkpoint")


def _edited(saved_path: Path, tmp_path: Path, name: str, edit) -> Path:
    pkg = torch.load(saved_path, weights_only=True)
    edit(pkg)
    torch.save(pkg, tmp_path / name)
    return tmp_path / name


def test_wrong_version_and_missing_keys(tmp_path: Path, saved: tuple[Path, nn.Module]) -> None:
    path = saved[0]
    _assert_error(_edited(path, tmp_path, "v3.pth", lambda p: p.update(format_version=3)), "format_version 3 is newer")
    _assert_error(_edited(path, tmp_path, "v0.pth", lambda p: p.update(format_version="1")), "unknown")
    _assert_error(_edited(path, tmp_path, "other.pth", lambda p: p.update(format="nemo")), "'nemo'")
    _assert_error(_edited(path, tmp_path, "nolabels.pth", lambda p: p.pop("labels")), "lacks ['labels']")
    _assert_error(_edited(path, tmp_path, "dtype.pth", lambda p: p.update(weights_dtype="int4")), "weights_dtype")


def test_inconsistent_contents(tmp_path: Path, saved: tuple[Path, nn.Module]) -> None:
    path = saved[0]
    _assert_error(
        _edited(path, tmp_path, "hidden.pth", lambda p: p["model_config"].update(hidden_size=9)),
        "weights do not match",
        "wrong shape",
        "head.weight [29, 8] vs [29, 9]",
    )
    _assert_error(_edited(path, tmp_path, "layers.pth", lambda p: p["model_config"].update(hidden_layers=3)), "missing: rnns.2")
    _assert_error(
        _edited(path, tmp_path, "extra_key.pth", lambda p: p["state_dict"].update(stray=torch.ones(1))), "unexpected: stray"
    )
    _assert_error(_edited(path, tmp_path, "arch.pth", lambda p: p["model_config"].update(arch="ds9")), "bad model_config", "ds9")
    _assert_error(_edited(path, tmp_path, "audio.pth", lambda p: p["audio_config"].update(window="kaiser")), "bad audio_config")
    _assert_error(_edited(path, tmp_path, "labels.pth", lambda p: p.update(labels=list("_ab "))), "4 labels")
    _assert_error(_edited(path, tmp_path, "rate.pth", lambda p: p["audio_config"].update(sample_rate=8000)), "81 features")


def test_non_plain_training_state_is_refused_before_writing(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "model.pth"
    bad_extras = [
        ({"args": {"save_folder": Path("models")}}, "training['args']['save_folder'] is a pathlib"),
        ({"rng": np.random.get_state()}, "numpy.ndarray"),
        ({"epoch": np.int64(3)}, "numpy.int64"),
        ({"counters": {"hook": lambda: None}}, "function"),
        ({"history": {1, 2}}, "set"),
    ]
    for extra, fragment in bad_extras:
        with pytest.raises(CheckpointError) as info:
            save(path, model, AudioConfig(), LABELS, **extra)
        assert str(path) in str(info.value) and fragment in str(info.value), str(info.value)
    with pytest.raises(CheckpointError, match="3 labels"):
        save(path, model, AudioConfig(), list("_a "))
    with pytest.raises(CheckpointError, match="build_model"):
        save(path, nn.Linear(2, 2), AudioConfig(), LABELS)
    assert not tmp_path.exists() or os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- fp16


def test_half_precision_save_is_smaller_and_loads_as_fp32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=64, hidden_layers=2, conv_channels=8)).eval()
    full = save(tmp_path / "full.pth", model, AudioConfig(), LABELS)
    half = save(tmp_path / "half.pth", model, AudioConfig(), LABELS, fp16_weights=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    raw = torch.load(half, weights_only=True)
    assert raw["weights_dtype"] == "float16" and raw["state_dict"]["head.weight"].dtype == torch.float16
    assert raw["state_dict"]["head_norm.num_batches_tracked"].dtype == torch.long
    loaded, _ = load_model(half)
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())
    torch.testing.assert_close(outputs(loaded), outputs(model), atol=2e-2, rtol=0)


# ---------------------------------------------------------------------------- python model.py --model-path


def test_info_tool_prints_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tiny_model(bidirectional=False)
    history = {
        "epoch": [1, 2, 3],
        "train_loss": [9.0, 7.0, 6.0],
        "val_loss": [8.0, 6.5, 6.6],
        "wer": [60.0, 40.5, 45.0],
        "cer": [30.0, 20.25, 22.0],
        "lr": [1e-3, 1e-3, 1e-3],
    }
    path = save(
        tmp_path / "m.pth",
        model,
        AudioConfig(),
        LABELS,
        epoch=3,
        step=30,
        history=history,
        optimizer={"state": {}, "param_groups": []},
        fp16_weights=True,
    )
    assert model_module.main(["--model-path", str(path)]) == 0
    out = capsys.readouterr().out
    assert "DeepSpeech 2 (ds2): 2 x 8 unidirectional GRU, conv channels 4, conv time stride 4, lookahead context 3" in out
    assert f"parameters:    {count_parameters(model):,}" in out
    assert repr("".join(LABELS)) in out and "sample_rate=16000" in out
    assert "epochs:        3 (step 30)" in out
    assert "last:          WER 45.000  CER 22.000  val_loss 6.600  train_loss 6.000  (epoch 3)" in out
    assert "best:          WER 40.500  CER 20.250  val_loss 6.500  train_loss 7.000  (epoch 2)" in out
    assert "weights saved: float16" in out and "training state: optimizer" in out


def test_info_tool_reads_a_list_of_epochs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    history = [{"epoch": 1, "wer": 50.0, "cer": 25.0}, {"epoch": 2, "wer": 30.0, "cer": 15.0}]
    path = save(tmp_path / "m.pth", tiny_model(), AudioConfig(), LABELS, epoch=2, history=history)
    assert model_module.main(["--model-path", str(path)]) == 0
    out = capsys.readouterr().out
    assert "epochs:        2 (step 0)\n" in out and "last:          WER 30.000  CER 15.000  (epoch 2)" in out
    assert "training state: none (inference only)" in out


def test_info_tool_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    assert model_module.main(["--model-path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        model_module.main([])
    assert info.value.code == 2


def test_info_tool_runs_as_a_script(saved: tuple[Path, nn.Module]) -> None:
    result = subprocess.run(
        [sys.executable, "model.py", "--model-path", str(saved[0])], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "architecture:  DeepSpeech 2 (ds2): 2 x 8 bidirectional GRU" in result.stdout
    assert "metrics:       none stored" in result.stdout
    missing = subprocess.run(
        [sys.executable, "model.py", "--model-path", "does/not/exist.pth"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: does/not/exist.pth: checkpoint not found")


def test_export_strips_training_state_and_halves_weights(tmp_path, capsys):
    import model as model_cli

    cfg = ModelConfig(hidden_size=16, hidden_layers=1, conv_channels=4)
    net = build_model(cfg).eval()
    opt = torch.optim.AdamW(net.parameters())
    src = tmp_path / "last.pth"
    save(
        src,
        net,
        AudioConfig(),
        list(LABELS),
        optimizer=opt.state_dict(),
        epoch=3,
        history={"epoch": [1, 2, 3], "wer": [90.0, 80.0, 70.0]},
    )
    out = tmp_path / "release.pth"
    assert model_cli.main(["--model-path", str(src), "--export", str(out), "--fp16-weights"]) == 0
    pkg = load_checkpoint(out)
    assert pkg.training.optimizer is None and pkg.training.epoch == 3 and pkg.training.history["wer"][-1] == 70.0
    assert pkg.weights_dtype == "float16"
    assert out.stat().st_size < src.stat().st_size
    exported, _ = load_model(out)
    x, lengths = torch.randn(2, 1, 161, 50), torch.tensor([50, 30])
    with torch.no_grad():
        a, _ = net(x, lengths)
        b, _ = exported(x, lengths)
    assert torch.allclose(a, b, atol=0.05)
    with pytest.raises(SystemExit):
        model_cli.main(["--model-path", str(src), "--fp16-weights"])
    assert "--fp16-weights applies to --export" in capsys.readouterr().err


def test_export_can_switch_on_level_normalisation(tmp_path, capsys):
    """--level-norm-from MANIFEST: the copy normalises the level to that audio's median speech level."""
    import soundfile as sf

    import model as model_cli
    from data.audio import speech_level_db
    from data.manifest import write_manifest

    src = save(
        tmp_path / "m.pth", build_model(ModelConfig(hidden_size=16, hidden_layers=1, conv_channels=4)), AudioConfig(), LABELS
    )
    rows, levels = [], []
    for i, amplitude in enumerate((0.05, 0.2, 0.5)):
        audio = (amplitude * np.random.default_rng(i).standard_normal(8000)).astype(np.float32)
        sf.write(tmp_path / f"{i}.wav", audio, 16000, subtype="FLOAT")
        (tmp_path / f"{i}.txt").write_text("A")
        rows.append((tmp_path / f"{i}.wav", tmp_path / f"{i}.txt"))
        levels.append(speech_level_db(audio, 16000))
    write_manifest(tmp_path / "train.csv", rows)
    out = tmp_path / "level.pth"
    assert model_cli.main(["--model-path", str(src), "--export", str(out), "--level-norm-from", str(tmp_path / "train.csv")]) == 0
    assert load_checkpoint(out).audio_config.level_db == pytest.approx(np.median(levels), abs=0.01)
    assert "speech level:  " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        model_cli.main(["--model-path", str(src), "--level-norm-from", str(tmp_path / "train.csv")])
    assert "--level-norm-from applies to --export" in capsys.readouterr().err
    assert model_cli.main(["--model-path", str(src), "--export", str(out), "--level-norm-from", str(tmp_path / "no.csv")]) == 2
    assert "no.csv: manifest not found" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("")
    assert model_cli.main(["--model-path", str(src), "--export", str(out), "--level-norm-from", str(tmp_path / "empty.csv")]) == 2
    assert "empty.csv: the manifest lists no utterances" in capsys.readouterr().err


def test_export_can_switch_on_dc_removal(tmp_path, capsys):
    import model as model_cli

    src = save(
        tmp_path / "m.pth", build_model(ModelConfig(hidden_size=16, hidden_layers=1, conv_channels=4)), AudioConfig(), LABELS
    )
    out = tmp_path / "dc.pth"
    assert model_cli.main(["--model-path", str(src), "--export", str(out), "--remove-dc"]) == 0
    assert load_checkpoint(out).audio_config == AudioConfig(remove_dc=True)
    assert "DC offset:" in capsys.readouterr().out
    assert load_checkpoint(src).audio_config.remove_dc is False
    with pytest.raises(SystemExit):
        model_cli.main(["--model-path", str(src), "--remove-dc"])
    assert "--remove-dc applies to --export" in capsys.readouterr().err


def test_format_1_files_still_load(tmp_path: Path) -> None:
    """Format 1 kept the training keys at the top level and normalize as a bool."""
    model = tiny_model()
    path = save(
        tmp_path / "v2.pth",
        model,
        epoch=4,
        step=40,
        history={"epoch": [4], "wer": [33.0]},
        optimizer={"state": {}, "param_groups": []},
    )
    raw = torch.load(path, weights_only=True)
    training = raw.pop("training")
    raw.update(format_version=1, **training)
    raw["audio_config"]["normalize"] = True
    del raw["audio_config"]["feature_mean"], raw["audio_config"]["feature_std"]
    torch.save(raw, tmp_path / "v1.pth")
    loaded, ckpt = load_model(tmp_path / "v1.pth")
    assert ckpt.training.epoch == 4 and ckpt.training.history["wer"] == [33.0]
    assert ckpt.training.optimizer == {"state": {}, "param_groups": []}
    assert ckpt.audio_config == AudioConfig()
    assert torch.equal(outputs(loaded), outputs(model))


def test_files_older_than_a_field_load_as_they_were_saved(tmp_path: Path) -> None:
    """A model_config without conv_time_stride / conv_bias was written before they existed:
    it means stride 2 and no conv bias, whatever today's defaults are."""
    assert model_module.ABSENT_FIELDS == {"conv_bias": False, "conv_time_stride": 2}
    assert ModelConfig().conv_time_stride == 4, "today's default differs from what old files meant"
    model = tiny_model(conv_time_stride=2)
    raw = torch.load(save(tmp_path / "new.pth", model), weights_only=True)
    for name in model_module.ABSENT_FIELDS:
        del raw["model_config"][name]
    torch.save(raw, tmp_path / "old.pth")
    loaded, ckpt = load_model(tmp_path / "old.pth")
    assert ckpt.model_config == model.cfg
    assert torch.equal(outputs(loaded), outputs(model))
    stride4 = tiny_model(conv_time_stride=4)
    loaded, ckpt = load_model(save(tmp_path / "stride4.pth", stride4))
    assert ckpt.model_config.conv_time_stride == 4
    assert torch.equal(outputs(loaded), outputs(stride4))


def test_average_of_checkpoints_is_the_mean_of_their_weights(tmp_path, capsys):
    paths = [
        save(tmp_path / f"deepspeech_{epoch}.pth", tiny_model(seed=epoch), epoch=epoch, history={"epoch": [epoch]})
        for epoch in (3, 4, 5)
    ]
    out = tmp_path / "avg.pth"
    assert model_module.main(["--average", *map(str, paths), "--export", str(out)]) == 0
    assert "averaged:      3 checkpoints, epochs [3, 4, 5]" in capsys.readouterr().out
    avg, parts = load_checkpoint(out), [load_checkpoint(p) for p in paths]
    for name, tensor in avg.state_dict.items():
        if tensor.is_floating_point():
            expected = sum(p.state_dict[name] for p in parts) / 3
            torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)
        else:
            assert torch.equal(tensor, parts[-1].state_dict[name])
    assert avg.averaged_from == {"files": [p.name for p in paths], "epochs": [3, 4, 5]}
    assert avg.training.optimizer is None and avg.training.epoch == 5  # a release copy with the last one's history
    assert model_module.main(["--model-path", str(out)]) == 0
    assert "the average of 3 checkpoints, epochs [3, 4, 5]" in capsys.readouterr().out
    avg.build_model()  # loads into the architecture
    again = tmp_path / "again.pth"  # an averaged release copy exported again keeps its origin
    assert model_module.main(["--model-path", str(out), "--export", str(again), "--fp16-weights"]) == 0
    assert "averaged:      3 checkpoints, epochs [3, 4, 5]" in capsys.readouterr().out
    assert load_checkpoint(again).averaged_from == avg.averaged_from


def test_average_refuses_checkpoints_of_different_models(tmp_path, capsys):
    a = save(tmp_path / "a.pth", tiny_model())
    b = save(tmp_path / "b.pth", tiny_model(bidirectional=False))
    assert model_module.main(["--average", str(a), str(b), "--export", str(tmp_path / "x.pth")]) == 2
    assert "different model_config" in capsys.readouterr().err and not (tmp_path / "x.pth").exists()
    for argv, message in (
        (["--average", str(a)], "--average needs --export"),
        (["--average", str(a), "--export-onnx", str(tmp_path / "x.onnx")], "--export-onnx takes --model-path"),
    ):
        with pytest.raises(SystemExit):
            model_module.main(argv)
        assert message in capsys.readouterr().err
