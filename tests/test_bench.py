"""bench/run_all.py with a tiny model and one repetition: every figure comes out finite, the
last stdout line is the JSON summary, and --write-docs keeps one section per machine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import write_tone

from bench import run_all
from checkpoint import Checkpoint, save_checkpoint
from data.audio import AudioConfig
from data.manifest import write_manifest
from data.text import LABELS
from model import ModelConfig, build_model

TINY = ModelConfig(hidden_size=8, hidden_layers=1, conv_channels=4, rnn_type="gru")
TINY_PRESET = dict(
    runs=1,
    warmup=0,
    infer_utterances=3,
    single_utterances=1,
    decode_utterances=2,
    feature_utterances=2,
    cli_runs=1,
    cli_warmup=0,
    matmul_sizes=(64,),
    batch_size=2,
    train_batch_size=2,
    mean_seconds=0.5,
)
REQUIRED = [
    "train_x_realtime",
    "train_mfu",
    "infer_x_realtime",
    "infer_int8_x_realtime",
    "decode_greedy_x_realtime",
    "decode_beam_x_realtime",
    "features_x_realtime",
    "cli_cold_start_s",
    "train_bf16_x_realtime",
    "infer_single_x_realtime",
    "train_gflops",
    "matmul_64_gflops",
]
CUDA_KEYS = ["train_cuda_x_realtime", "train_cuda_amp_x_realtime"]


@pytest.fixture
def tiny_run(monkeypatch, tmp_path: Path) -> dict:
    """A tiny checkpoint, a 3-utterance manifest and run_all shrunk to one repetition."""
    rows = []
    for i, text in enumerate(["YES", "NO", "GO UP"]):
        wav = write_tone(tmp_path / "wav" / f"u{i}.wav", 0.5 + 0.2 * i, freq=300 + 50 * i, seed=i)
        txt = tmp_path / "txt" / f"u{i}.txt"
        txt.parent.mkdir(exist_ok=True)
        txt.write_text(text + "\n")
        rows.append((wav, txt))
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, rows)
    torch.manual_seed(0)
    model_path = save_checkpoint(tmp_path / "tiny.pth", Checkpoint.from_model(build_model(TINY), AudioConfig(), LABELS))
    for mode in ("quick", "full"):
        monkeypatch.setitem(run_all.PRESETS, mode, TINY_PRESET)
    monkeypatch.setattr(run_all, "default_model_config", lambda: TINY)
    return {"manifest": manifest, "model": model_path, "tmp": tmp_path}


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_main_prints_every_figure_and_json_last(tiny_run, capsys):
    docs = tiny_run["tmp"] / "docs" / "benchmarks.md"
    argv = [
        "--quick",
        "--model-path",
        str(tiny_run["model"]),
        "--val-manifest",
        str(tiny_run["manifest"]),
        "--train-manifest",
        str(tiny_run["manifest"]),
        "--write-docs",
        str(docs),
        "--threads",
        "1",
    ]
    assert run_all.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    for key in REQUIRED:
        assert finite(summary[key]), key
        assert summary[f"{key}_min"] <= summary[key] <= summary[f"{key}_max"], key
    for key in CUDA_KEYS:
        assert summary[key] is None
    assert 0 < summary["train_mfu"] and summary["cli_cold_start_s"] > 0
    # matmul_gflops is the same median, kept to one decimal for the MFU line
    assert summary["matmul_gflops"] == pytest.approx(summary["matmul_64_gflops"], abs=0.05 + 1e-9)
    # WER of the fp32 and int8 models on the given manifest, and their difference
    assert finite(summary["infer_fp32_wer"]) and finite(summary["infer_int8_wer"])
    assert summary["infer_int8_wer_delta"] == pytest.approx(summary["infer_int8_wer"] - summary["infer_fp32_wer"], abs=2e-3)
    assert summary["threads"] == 1 and summary["runs"] == 1 and summary["quick"] is True
    assert summary["train_model"]["hidden_size"] == 8
    assert summary["decode_lm"].startswith("3-gram from") and str(tiny_run["manifest"]) in summary["decode_lm"]
    table = "\n".join(out[:-1])
    assert "train step fp32" in table and "beam 32 + LM" in table and "transcribe.py cold start" in table
    text = docs.read_text()
    assert "python bench/run_all.py --quick --model-path" in text
    assert summary["cpu"] in text and f"torch {torch.__version__}" in text
    assert "| train step fp32 | `train_x_realtime` |" in text


def test_defaults_without_model_or_lm(tiny_run, monkeypatch):
    """No --model-path: the default (here tiny) model with random weights, a temporary checkpoint
    for the CLI, no WER; no manifest at all: the LM comes from bench_decode's synthetic corpus."""
    monkeypatch.setattr(run_all, "DEFAULT_TRAIN_MANIFEST", tiny_run["tmp"] / "absent.csv")
    monkeypatch.setattr(run_all, "DEFAULT_VAL_MANIFEST", tiny_run["tmp"] / "absent.csv")
    settings = run_all.settings_from_args(run_all.build_parser().parse_args(["--threads", "1"]))
    assert settings.model_path is None and settings.train_manifest is None and settings.val_manifest is None
    report = run_all.run_benchmarks(settings)
    summary = run_all.summary(report)
    for key in REQUIRED:
        assert finite(summary[key]), key
    assert summary["infer_int8_wer_delta"] is None and summary["infer_fp32_wer"] is None
    assert summary["decode_lm"] == "3-gram from bench_decode synthetic corpus"
    notes = {f.key: f.note for f in report.figures}
    assert "n/a" in notes["infer_int8_x_realtime"]


def test_given_lm_and_runs_flag(tiny_run, tmp_path):
    lm = tmp_path / "lm.arpa"
    run_all.KneserNeyModel([["YES"], ["NO"], ["GO", "UP"]], 3).write_arpa(lm)
    lm.with_suffix(".json").write_text(json.dumps({"alpha": 0.3, "beta": 0.7}))
    args = run_all.build_parser().parse_args(["--lm-path", str(lm), "--runs", "2", "--threads", "1"])
    settings = run_all.settings_from_args(args)
    assert settings.runs == 2 and settings.cli_runs == 2 and settings.lm_path == lm
    figs, info = run_all.decode_figures(settings, tmp_path)
    assert info["decode_lm"] == str(lm)
    beam = next(f for f in figs if f.key == "decode_beam_x_realtime")
    assert finite(beam.median) and "alpha 0.3, beta 0.7" in beam.note


def test_train_follows_train_py_defaults():
    a = run_all.train.build_parser().parse_args([])
    cfg = run_all.default_model_config()
    assert (cfg.hidden_size, cfg.rnn_type, cfg.arch, cfg.bidirectional) == (a.hidden_size, a.rnn_type, a.arch, a.bidirectional)
    assert cfg.hidden_layers == (a.hidden_layers or 3)
    batch = run_all.an4_like_batch(16, 2.7, cfg.n_features)
    assert batch.inputs.shape[0] == 16 and len(set(batch.input_lengths.tolist())) > 1  # mixed lengths
    assert run_all.batch_seconds(batch, AudioConfig()) / 16 == pytest.approx(2.7, abs=0.05)
    durations = run_all.an4_like_durations(200)
    assert min(durations) >= 0.7 and max(durations) <= 6.4 and 2.4 < sum(durations) / 200 < 3.0


def test_docs_keep_one_section_per_machine(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nHand-written speed-up notes.\n")
    run_all.update_docs(docs, "machine A", "## machine A\nfirst")
    run_all.update_docs(docs, "machine B", "## machine B\nother")
    run_all.update_docs(docs, "machine A", "## machine A\nsecond")
    text = docs.read_text()
    assert "Hand-written speed-up notes." in text
    assert "second" in text and "first" not in text and "other" in text
    assert text.count("## machine A") == 1 and text.index("machine A") < text.index("machine B")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model-path", "missing.pth"], "--model-path missing.pth: file not found"),
        (["--lm-path", "missing.arpa"], "--lm-path missing.arpa: file not found"),
        (["--val-manifest", "missing.csv"], "--val-manifest missing.csv: file not found"),
    ],
)
def test_bad_paths_give_one_error_line(argv, message, capsys):
    assert run_all.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {message}"]


@pytest.mark.parametrize(
    "flag, content, message",
    [
        ("--model-path", b"not a checkpoint", "not a PyTorch checkpoint"),
        ("--lm-path", b"\x00\x01binary", "lm.bin"),
        ("--val-manifest", b"only-one-column\n", "manifest.csv"),
    ],
)
def test_unusable_files_fail_before_measuring(flag, content, message, tmp_path, capsys):
    name = {"--model-path": "model.pth", "--lm-path": "lm.bin", "--val-manifest": "manifest.csv"}[flag]
    path = tmp_path / name
    path.write_bytes(content)
    assert run_all.main([flag, str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_write_docs_into_a_folder_is_refused(tmp_path, capsys):
    assert run_all.main(["--write-docs", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_bad_counts_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        run_all.main(["--runs", "0"])
    assert e.value.code == 2
    assert "--runs and --threads must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_gpu_is_refused(capsys):
    assert run_all.main(["--cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_figures(tiny_run):
    settings = run_all.Settings(cuda=True, train_cfg=TINY, **TINY_PRESET)
    figs = run_all.cuda_train_figures(settings)
    assert [f.key for f in figs] == CUDA_KEYS and all(finite(f.median) for f in figs)
