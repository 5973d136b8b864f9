"""ONNX export and the torch-free runtime: tiny random models of every architecture give the
PyTorch log-probs, alone and in mixed-length batches; int8 runs and keeps its metadata; bad
files give one clear error; transcribe.py runs an .onnx model without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, write_tone

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import model as model_cli  # noqa: E402
import onnx_export  # noqa: E402
import test as test_cli  # noqa: E402
import transcribe  # noqa: E402
from checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from data.audio import AudioConfig, spectrogram  # noqa: E402
from data.text import LABELS  # noqa: E402
from decoder import GreedyDecoder  # noqa: E402
from inference import (  # noqa: E402
    InferenceConfig,
    OnnxRecognizer,  # noqa: E402
    TorchRecognizer,
    load_recognizer,
    transcribe_many,
)
from model import ModelConfig, build_model  # noqa: E402
from onnx_runtime import FORMAT_VERSION, OnnxModelError  # noqa: E402

TINY_DS2 = dict(hidden_size=16, conv_channels=4, conv_time_stride=2)
CONFIGS = {
    "ds2-bi-lstm": ModelConfig(**TINY_DS2, hidden_layers=2, rnn_type="lstm"),
    "ds2-bi-gru": ModelConfig(**TINY_DS2, hidden_layers=2, rnn_type="gru"),
    "ds2-bi-lstm-stride4": ModelConfig(**{**TINY_DS2, "conv_time_stride": 4}, hidden_layers=1, rnn_type="lstm"),
    "ds2-uni-lstm": ModelConfig(**TINY_DS2, hidden_layers=2, rnn_type="lstm", bidirectional=False, lookahead_context=3),
    "ds2-uni-gru": ModelConfig(**TINY_DS2, hidden_layers=1, rnn_type="gru", bidirectional=False, lookahead_context=4),
    "ds1-bi-rnn": ModelConfig(arch="ds1", hidden_size=16, hidden_layers=1, rnn_type="rnn", ds1_context=2),
    "ds1-uni-lstm-stride2": ModelConfig(
        arch="ds1", hidden_size=16, hidden_layers=2, rnn_type="lstm", bidirectional=False, ds1_context=3, ds1_stride=2
    ),
}
LENGTHS = [57, 1, 12, 40, 57, 3]  # frames; mixed, including the shortest possible and a tie


def random_model(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """A model with random weights and random BatchNorm statistics (so folding them is tested)."""
    torch.manual_seed(seed)
    m = build_model(cfg)
    for module in m.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return m.eval()


def features_for(lengths, n_features: int = 161, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n_features, n)).astype(np.float32) for n in lengths]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Every config exported once: {name: (torch model, onnx path)}."""
    out = tmp_path_factory.mktemp("onnx")
    result = {}
    for name, cfg in CONFIGS.items():
        m = random_model(cfg)
        path = onnx_export.export_onnx(m, AudioConfig(), list(LABELS), out / f"{name}.onnx", info={"epochs": 3})
        result[name] = (m, path)
    return result


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fp32_equals_pytorch_alone_and_in_mixed_batches(exported, name):
    m, path = exported[name]
    torch_rec = TorchRecognizer(m, AudioConfig(), LABELS)
    onnx_rec = OnnxRecognizer(path, threads=1)
    feats = features_for(LENGTHS)
    batched = onnx_rec.log_probs(feats)
    for f, b in zip(feats, batched):
        (ref,) = torch_rec.log_probs([f])
        (alone,) = onnx_rec.log_probs([f])
        assert alone.shape == ref.shape == b.shape
        assert np.abs(alone - ref).max() < 1e-4
        assert np.abs(b - ref).max() < 1e-4
        assert np.abs(b - alone).max() < 1e-5
    assert onnx_rec.frame_shift == pytest.approx(torch_rec.frame_shift)


def test_batch_of_two_then_one_reuses_one_session(exported):
    """Dynamic axes: batch sizes and lengths differ from call to call and from the export example."""
    m, path = exported["ds2-bi-lstm"]
    rec = OnnxRecognizer(path, threads=1)
    torch_rec = TorchRecognizer(m, AudioConfig(), LABELS)
    for lengths in ([300, 5], [64], [2, 2, 2, 2, 2, 2, 2, 2, 9]):
        feats = features_for(lengths, seed=len(lengths))
        for got, ref in zip(rec.log_probs(feats), torch_rec.log_probs(feats)):
            assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4


def test_metadata_describes_the_model(tmp_path):
    cfg = CONFIGS["ds2-bi-gru"]
    rng = np.random.default_rng(0)
    audio_cfg = AudioConfig(
        normalize="global",
        feature_mean=tuple(rng.standard_normal(161).tolist()),
        feature_std=tuple(rng.uniform(0.5, 2, 161).tolist()),
        level_db=-22.5,
        remove_dc=True,
    )
    labels = list(LABELS)
    path = onnx_export.export_onnx(random_model(cfg), audio_cfg, labels, tmp_path / "m.onnx", info={"epochs": 7})
    rec = OnnxRecognizer(path)
    assert rec.labels == labels
    assert rec.audio_config == audio_cfg  # normalize, the per-frequency statistics, the level and the DC removal
    assert rec.metadata["model_config"] == cfg.__dict__
    assert rec.metadata["precision"] == "float32" and rec.metadata["opset"] == onnx_export.OPSET
    assert rec.frame_shift == pytest.approx(0.02)
    assert rec.info["epochs"] == 7 and rec.info["format"] == "onnx"
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["labels"]) == labels and json.loads(props["format_version"]) == FORMAT_VERSION
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["features", "lengths"]
    assert [o.name for o in graph.output] == ["log_probs", "output_lengths"]
    assert not any(n.op_type == "BatchNormalization" and "conv" in n.name for n in graph.node)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static-conv"])
def test_int8_runs_and_keeps_metadata(exported, tmp_path, static):
    m, fp32 = exported["ds2-bi-lstm"]
    calibration = features_for([30, 50, 70], seed=5) if static else None
    path = onnx_export.quantize_onnx(fp32, tmp_path / "int8.onnx", calibration)
    rec, ref = OnnxRecognizer(path), OnnxRecognizer(fp32)
    assert rec.metadata["precision"] == ("int8-static-conv" if static else "int8-dynamic")
    for key in ("labels", "audio_config", "model_config", "frame_shift", "info", "format_version"):
        assert rec.metadata[key] == ref.metadata[key], key
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "DynamicQuantizeLSTM" in ops
    assert ("QuantizeLinear" in ops) == static
    feats = features_for(LENGTHS)
    for got, want in zip(rec.log_probs(feats), ref.log_probs(feats)):
        assert got.shape == want.shape and np.isfinite(got).all()
        assert np.allclose(np.exp(got).sum(-1), 1.0, atol=1e-4)
    with pytest.raises(onnx_export.OnnxExportError, match="fp32"):
        onnx_export.quantize_onnx(path, tmp_path / "twice.onnx")


def _foreign_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bad_files_give_one_clear_error(exported, tmp_path):
    good = exported["ds1-bi-rnn"][1]
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf at all" * 10)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    import onnx

    newer = onnx.load(str(good))
    onnx_export.set_metadata(newer, {"format_version": json.dumps(FORMAT_VERSION + 1)})
    onnx.save(newer, str(tmp_path / "newer.onnx"))
    cases = {
        tmp_path / "missing.onnx": "not found",
        empty: "empty",
        garbage: "not a usable ONNX model",
        truncated: "not a usable ONNX model",
        _foreign_onnx(tmp_path / "foreign.onnx"): "without deepspeech-ctc metadata",
        tmp_path / "newer.onnx": "newer than this code reads",
    }
    for path, message in cases.items():
        with pytest.raises(OnnxModelError, match=message) as info:
            OnnxRecognizer(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    # and on the command line: exit 2 with one line
    wav = write_tone(tmp_path / "a.wav", 0.5)
    for path in (garbage, tmp_path / "foreign.onnx"):
        proc = subprocess.run(
            [sys.executable, str(REPO / "transcribe.py"), "--model-path", str(path), "--audio-path", str(wav)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


BLOCK_TORCH = r"""
import importlib.abc, runpy, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"importing {name} is blocked in this test")
        return None
sys.meta_path.insert(0, BlockTorch())
sys.argv = ["transcribe.py"] + sys.argv[1:]
sys.path.insert(0, ".")
code = 0
try:
    runpy.run_path("transcribe.py", run_name="__main__")
except SystemExit as e:
    code = e.code
print("TORCH_LOADED=%s" % any(m == "torch" or m.startswith("torch.") for m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def test_transcribe_onnx_never_imports_torch(exported, tmp_path):
    m, path = exported["ds2-bi-lstm"]
    wavs = [write_tone(tmp_path / f"a{i}.wav", 0.3 + 0.4 * i, freq=300 + 100 * i, seed=i) for i in range(3)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_TORCH,
            "--model-path",
            str(path),
            "--audio-path",
            *map(str, wavs),
            "--offsets",
            "--batch-size",
            "2",
            "--threads",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "TORCH_LOADED=False" in proc.stderr
    out = json.loads(proc.stdout)
    assert [o["audio_path"] for o in out["output"]] == list(map(str, wavs))
    assert out["_meta"]["acoustic_model"]["format"] == "onnx"
    # the same text as PyTorch gives for each file alone
    torch_rec = TorchRecognizer(m, AudioConfig(), LABELS)
    from data.audio import load_audio

    for entry, wav in zip(out["output"], wavs):
        (want,) = transcribe_many(torch_rec, GreedyDecoder(LABELS), [load_audio(wav)], batch_size=1)
        assert entry["transcription"] == want["transcription"] and entry["words"] == want["words"]
        assert entry["duration"] == pytest.approx(len(load_audio(wav)) / 16000, abs=1e-3)


def test_transcribe_stream_onnx_never_imports_torch(tmp_path, capsys):
    """transcribe.py --stream with a streaming step graph: partial lines, then the transcription
    the checkpoint gives offline, with torch blocked."""
    import soundfile as sf
    from stream_models import LABELS as STREAM_LABELS
    from stream_models import save_model, speechlike, tiny_stream_model

    model, audio_config = tiny_stream_model(11, lookahead_context=4)
    ckpt = save_model(tmp_path / "s.pth", model, audio_config)
    path = onnx_export.export_streaming_onnx(model, audio_config, STREAM_LABELS, tmp_path / "s.onnx")
    wavs = []
    for i, (rate, seconds) in enumerate([(16000, 1.7), (44100, 1.1), (16000, 0.03)]):
        wavs.append(tmp_path / f"clip{i}.wav")
        sf.write(str(wavs[-1]), speechlike(seconds, rate, seed=20 + i), rate, subtype="PCM_16")
    argv = ["--audio-path", *map(str, wavs), "--offsets"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    stream_argv = ["--model-path", str(path), *argv, "--threads", "1", "--stream", "--chunk-ms", "37", "--stream-speed", "0"]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, *stream_argv], cwd=REPO, capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "TORCH_LOADED=False" in proc.stderr
    lines = proc.stdout.splitlines()
    partials = [json.loads(line) for line in lines[: lines.index("{")]]
    final = json.loads("\n".join(lines[lines.index("{") :]))
    assert final["_meta"]["acoustic_model"]["format"] == "onnx" and final["_meta"]["acoustic_model"]["streaming"]
    assert final["_meta"]["streaming"]["algorithmic_latency_ms"]["total_ms"] == 10 + 150 + 3 * 40
    assert partials and all(p["partial"] for p in partials)
    assert transcribe.main(["--model-path", str(ckpt), *argv, "--chunk-seconds", "0"]) == 0
    assert final["output"] == json.loads(capsys.readouterr().out)["output"]
    assert all(entry["transcription"] for entry in final["output"][:2])
    # an offline export is refused with the command that makes a streaming one
    offline = onnx_export.export_onnx(model, audio_config, STREAM_LABELS, tmp_path / "offline.onnx")
    assert transcribe.main(["--model-path", str(offline), "--audio-path", str(wavs[0]), "--stream"]) == 2
    assert "--export-onnx S.onnx --streaming" in capsys.readouterr().err


def test_blocked_torch_really_fails_to_import():
    """The guard of the test above works: a script that imports torch fails under it."""
    script = BLOCK_TORCH.replace('runpy.run_path("transcribe.py", run_name="__main__")', "import torch")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "blocked in this test" in proc.stderr


def test_transcribe_batches_give_the_results_of_one_at_a_time(exported, tmp_path, capsys):
    _, path = exported["ds2-uni-gru"]
    wavs = [write_tone(tmp_path / f"w{i}.wav", d, freq=200 + 70 * i, seed=i) for i, d in enumerate([1.3, 0.4, 2.2, 0.4, 0.9])]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....")
    outs = {}
    for bs in (1, 3, 16):
        code = transcribe.main(
            [
                "--model-path",
                str(path),
                "--audio-path",
                *map(str, wavs[:2]),
                str(broken),
                *map(str, wavs[2:]),
                "--offsets",
                "--batch-size",
                str(bs),
                "--chunk-seconds",
                "1",
            ]
        )
        assert code == 1  # the broken file
        outs[bs] = json.loads(capsys.readouterr().out)["output"]
    assert outs[1] == outs[3] == outs[16]
    assert [o["audio_path"] for o in outs[1]] == [str(p) for p in (*wavs[:2], broken, *wavs[2:])]
    assert "error" in outs[1][2] and all("transcription" in o for i, o in enumerate(outs[1]) if i != 2)


def test_test_py_on_onnx_matches_the_checkpoint(tiny_dataset, tmp_path, capsys):
    cfg = CONFIGS["ds2-bi-lstm"]
    m = random_model(cfg)
    ckpt = save_checkpoint(tmp_path / "tiny.pth", Checkpoint.from_model(m, AudioConfig(), LABELS))
    onnx_path = tmp_path / "tiny.onnx"
    assert model_cli.main(["--model-path", str(ckpt), "--export-onnx", str(onnx_path)]) == 0
    assert "fp32" in capsys.readouterr().out
    reports = {}
    for path in (ckpt, onnx_path):
        report = tmp_path / f"{path.suffix[1:]}.json"
        assert (
            test_cli.main(
                [
                    "--model-path",
                    str(path),
                    "--test-manifest",
                    str(tiny_dataset),
                    "--batch-size",
                    "4",
                    "--silent",
                    "--report",
                    str(report),
                ]
            )
            == 0
        )
        reports[path.suffix] = json.loads(report.read_text())
    pth, onnx_report = reports[".pth"], reports[".onnx"]
    assert onnx_report["wer"] == pth["wer"] and onnx_report["cer"] == pth["cer"]
    assert onnx_report["loss"] == pytest.approx(pth["loss"], rel=1e-4)
    assert [u["hypothesis"] for u in onnx_report["utterances"]] == [u["hypothesis"] for u in pth["utterances"]]
    # and an int8 export of the same checkpoint through the CLI
    int8 = tmp_path / "tiny_int8.onnx"
    assert model_cli.main(["--model-path", str(ckpt), "--export-onnx", str(int8), "--int8"]) == 0
    rec = load_recognizer(InferenceConfig(int8))
    assert rec.metadata["precision"] == "int8-dynamic"
    (lp,) = rec.log_probs([spectrogram(np.zeros(4000, np.float32))])
    assert lp.shape[1] == len(LABELS)


def test_model_cli_refuses_flags_that_do_nothing(tmp_path, capsys):
    for argv in (
        ["--int8"],
        ["--calibration-manifest", "x.csv"],
        ["--export-onnx", "x.onnx", "--calibration-manifest", "x.csv"],
        ["--export-onnx", "x.onnx", "--int8", "--calibration-utterances", "8"],
        ["--export-onnx", "x.onnx", "--int8", "--calibration-manifest", "x.csv", "--calibration-utterances", "0"],
    ):
        with pytest.raises(SystemExit) as info:
            model_cli.main(["--model-path", "models/an4.pth", *argv])
        assert info.value.code == 2
    capsys.readouterr()
    assert model_cli.main(["--model-path", str(tmp_path / "missing.pth"), "--export-onnx", str(tmp_path / "x.onnx")]) == 2
    assert model_cli.main(["--model-path", "models/an4.pth", "--export-onnx", str(tmp_path / "x.bin")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err) and ".onnx suffix" in err[1]


def test_model_cli_describes_an_onnx_file(exported, capsys):
    _, path = exported["ds2-uni-lstm"]
    assert model_cli.main(["--model-path", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ONNX (opset 17), float32" in out and "bidirectional=False" in out and "epochs 3" in out
    assert "frame shift:   20 ms" in out


def test_amp_is_refused_for_onnx(exported):
    _, path = exported["ds1-bi-rnn"]
    with pytest.raises(ValueError, match="--int8"):
        load_recognizer(InferenceConfig(path, amp=True))


@pytest.mark.slow  # three transcribe.py processes, one of them importing torch
def test_run_all_measures_every_runtime_side_by_side(tiny_dataset, tmp_path, monkeypatch, capsys):
    """bench/run_all.py --only infer cli with a tiny model and one repetition: every runtime's
    figures, the WERs, the CLI cold starts, and a docs section of its own."""
    from bench import run_all

    m = random_model(CONFIGS["ds2-bi-gru"])
    ckpt = save_checkpoint(tmp_path / "tiny.pth", Checkpoint.from_model(m, AudioConfig(), LABELS))
    tiny = dict(
        runs=1, warmup=0, infer_utterances=3, single_utterances=2, cli_runs=1, cli_warmup=0, batch_size=2, mean_seconds=0.5
    )
    for mode in ("quick", "full"):
        monkeypatch.setitem(run_all.PRESETS, mode, {**run_all.PRESETS[mode], **tiny})
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nhand-written notes\n")
    assert (
        run_all.main(
            [
                "--quick",
                "--only",
                "infer",
                "cli",
                "--model-path",
                str(ckpt),
                "--val-manifest",
                str(tiny_dataset),
                "--train-manifest",
                str(tiny_dataset),
                "--threads",
                "1",
                "--write-docs",
                str(docs),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for prefix, _ in run_all.RUNTIMES:
        assert summary[f"{prefix}_x_realtime"] > 0 and summary[f"{prefix}_single_x_realtime"] > 0, prefix
    for key in (
        "onnx_speedup",
        "onnx_int8_speedup",
        "onnx_single_speedup",
        "onnx_int8_single_speedup",
        "infer_int8_x_realtime",
        "cli_cold_start_s",
        "cli_onnx_cold_start_s",
        "cli_onnx_int8_cold_start_s",
    ):
        assert summary[key] > 0, key
    assert "train_x_realtime" not in summary and summary["phases"] == ["infer", "cli"]
    # the fp32 ONNX model transcribes the manifest exactly as PyTorch does
    assert summary["onnx_fp32_wer"] == summary["infer_fp32_wer"]
    for key in ("infer_bf16_wer", "onnx_int8_wer", "onnx_int8_static_wer", "infer_int8_wer"):
        assert 0 <= summary[key] <= 200, key
    text = docs.read_text()
    assert "hand-written notes" in text and "(only infer, cli) -->" in text
    assert "| transcribe ONNX int8 dynamic | `onnx_int8_x_realtime` |" in text and "load average" in text


def test_transcribe_many_batches_by_length_within_the_size_and_audio_budget():
    """Chunks go through the model sorted by length, at most batch_size at a time and at most
    max_batch_seconds of padded audio per batch; results come back in input order."""
    from inference import Recognizer

    class Spy(Recognizer):
        audio_config, labels, frame_shift, info = AudioConfig(), list(LABELS), 0.02, {}

        def __init__(self) -> None:
            self.batches: list[list[int]] = []

        def forward_padded(self, features, lengths):
            self.batches.append(list(lengths))
            out = np.full((len(lengths), features.shape[2], len(LABELS)), -10.0, np.float32)
            out[:, :, 0] = 0.0  # all blank
            for i, n in enumerate(lengths):
                out[i, : n // 50, 2] = 1.0  # "A" repeated: one A per utterance with at least 50 frames
            return out, np.asarray(lengths)

    seconds = [0.3, 2.0, 1.0, 5.0, 0.5, 45.0, 1.0]
    audios = [np.zeros(int(s * 16000), np.float32) for s in seconds]
    spy = Spy()
    results = transcribe_many(spy, GreedyDecoder(LABELS), audios, chunk_seconds=20.0, batch_size=3, max_batch_seconds=30.0)
    frames = [n for b in spy.batches for n in b]
    assert frames == sorted(frames) and all(len(b) <= 3 for b in spy.batches)
    assert all(len(b) * max(b) <= 30 * 100 + len(b) for b in spy.batches)
    assert len(frames) == len(seconds) + 2  # the 45 s file is three chunks
    assert [r["transcription"] for r in results] == ["", "A", "A", "A", "A", "A A A", "A"]


def test_bench_onnx_compares_every_variant(tiny_dataset, tmp_path):
    from bench import bench_onnx

    m = random_model(CONFIGS["ds2-bi-lstm"])
    ckpt = save_checkpoint(tmp_path / "tiny.pth", Checkpoint.from_model(m, AudioConfig(), LABELS))
    result = bench_onnx.compare(ckpt, [tiny_dataset], tiny_dataset, threads=1, batch_size=4, out_dir=tmp_path)
    per_set = result["sets"][str(tiny_dataset)]
    assert set(per_set) == {"torch_fp32", "onnx_fp32", "onnx_int8", "onnx_int8_static"}
    assert per_set["onnx_fp32"]["max_abs_diff"] < 1e-4 and per_set["onnx_fp32"]["wer"] == per_set["torch_fp32"]["wer"]
    assert per_set["onnx_fp32"]["same_hypotheses"] == per_set["onnx_fp32"]["utterances"] == 6
    speed = bench_onnx.cpu_time_speed(ckpt, result["files"], runs=1, n_files=2, n_single=1)
    for name in ("torch_fp32", "torch_bf16", "onnx_fp32", "onnx_int8", "onnx_int8_static"):
        assert all(speed[name][k] > 0 for k in ("batched_cpu", "batched_wall", "single_cpu", "single_wall")), name


def test_calibration_utterances_reach_the_calibration(tmp_path, monkeypatch, capsys):
    """--calibration-utterances N: N utterances of --calibration-manifest calibrate the static int8 export."""
    from checkpoint import Checkpoint, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.pth", Checkpoint.from_model(random_model(CONFIGS["ds2-bi-lstm"]), AudioConfig(), LABELS))
    seen = {}

    def spy(manifest, audio_config, n):
        seen["n"], seen["manifest"] = n, str(manifest)
        return features_for([30, 50], seed=3)

    monkeypatch.setattr(onnx_export, "calibration_features", spy)
    argv = ["--model-path", str(ckpt), "--export-onnx", str(tmp_path / "m.onnx"), "--int8"]
    assert model_cli.main([*argv, "--calibration-manifest", "train.csv", "--calibration-utterances", "7"]) == 0
    assert seen == {"n": 7, "manifest": "train.csv"}
    assert "int8, static conv" in capsys.readouterr().out
