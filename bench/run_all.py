"""Run every benchmark and report each figure against the machine's limits.

    python bench/run_all.py --quick                      # < 5 minutes on the 2-core machine
    python bench/run_all.py --model-path models/an4.pth --lm-path models/an4_3gram.arpa
    python bench/run_all.py --quick --write-docs docs/benchmarks.md
    python bench/run_all.py --cuda                       # adds GPU training with and without AMP

Figures (each the median of ``--runs`` timed runs after warm-up, with min and max):

* ``train_x_realtime``: audio seconds trained per wall second: one optimizer step of
  train.py's ``Trainer.train_step`` (forward, CTC loss, backward, clipping, optimizer)
  on the default model of train.py (its parser defaults), fp32, ``--threads`` threads,
  on an AN4-like batch: train.py's default ``--batch-size`` (16) utterances of 2.4-3.0 s
  (mean 2.7 s, AN4's mean), zero-padded. Data loading is not included (see
  bench_features' dataset rows). ``train_bf16_x_realtime``: the same step under CPU bf16
  autocast (train.py ``--amp``).
* ``train_mfu``: 3 x ``model.forward_flops`` over each utterance's real frames per step
  second, over the fp32 ``torch.mm`` rate measured in this run (2048^2, and 4096^2 without
  ``--quick``; the higher median is the reference).
* Transcription end to end, WAV file to text, as ``transcribe.py`` does it
  (``transcribe.transcribe_files``: read the WAV, spectrogram, model, greedy decoding), on
  AN4-like utterances (0.7-6.4 s) written as 16-bit WAV files, ``--threads`` threads, for
  each runtime: PyTorch fp32 (``infer_*``), PyTorch under bf16 autocast (``infer_bf16_*``),
  the model exported to ONNX and run by onnxruntime in fp32 (``onnx_*``) and with dynamic
  int8 quantization (``onnx_int8_*``), and, with ``--model-path`` and a training manifest to
  calibrate on, int8 with statically quantized convolutions (``onnx_int8_static_*``);
  ``*_x_realtime`` in duration-sorted batches of
  ``--batch-size``, ``*_single_x_realtime`` one file at a time. All variants take turns in
  every timed round, on the same files. ``infer_int8_x_realtime``: PyTorch's
  ``quantize_dynamic`` (qint8 ``nn.Linear`` and RNNs), batched. The ``*_speedup`` figures
  are ratios within each round. With ``--model-path`` and a validation manifest the greedy
  WER of every variant on it is reported too.
* ``decode_greedy_x_realtime`` / ``decode_beam_x_realtime``: bench_decode's AN4-like
  log-probs, one thread; beam 32 with a 3-gram word LM (``--lm-path``, else built by
  data/build_lm.py's estimator from ``--train-manifest``, else from bench_decode's
  synthetic corpus).
* ``features_x_realtime``: :func:`data.data_loader.spectrogram` per core (bench_features).
* ``cli_cold_start_s``: wall time of ``python transcribe.py --model-path M --audio-path
  <3 s wav>`` as a new process (``--model-path``, else the default model with random
  weights saved to a temporary checkpoint); ``cli_onnx_cold_start_s`` and
  ``cli_onnx_int8_cold_start_s``: the same with the fp32 and int8 ONNX exports of that
  model (onnxruntime, no torch imported).

The table goes to stdout, progress to stderr; the last stdout line is one JSON object.
``--write-docs PATH`` puts the command, the machine and the table into a section of
PATH (one section per machine, replaced on each run, the rest of the file kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import train  # noqa: E402
from bench.bench_decode import build_parser as decode_parser  # noqa: E402
from bench.bench_decode import render, synthetic_corpus, time_decoder  # noqa: E402
from bench.bench_features import measure, synthetic  # noqa: E402
from bench.bench_model import make_batch, matmul_gflops  # noqa: E402
from checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_model, save_checkpoint  # noqa: E402
from data.audio import AudioConfig, AudioError, spectrogram  # noqa: E402
from data.build_lm import KneserNeyModel, LMError, read_sentences  # noqa: E402
from data.data_loader import AudioDataLoader, Batch, BucketingSampler, SpectrogramDataset  # noqa: E402
from data.manifest import ManifestError, read_manifest  # noqa: E402
from data.text import TranscriptError, load_labels  # noqa: E402
from decoder import BeamCTCDecoder, DecoderError, GreedyDecoder, lm_file_kind, load_lm_defaults  # noqa: E402
from inference import (  # noqa: E402
    OnnxRecognizer,  # noqa: E402
    Recognizer,
    TorchRecognizer,
    evaluate,
)
from model import AcousticModel, ModelConfig, build_model, count_parameters, forward_flops  # noqa: E402
from onnx_export import calibration_features, export_onnx, quantize_onnx  # noqa: E402
from transcribe import transcribe_files  # noqa: E402

DEFAULT_VAL_MANIFEST = REPO / "data" / "an4_val_manifest.csv"
DEFAULT_TRAIN_MANIFEST = REPO / "data" / "an4_train_manifest.csv"
DOCS_TITLE = "# Benchmarks\n\nWritten by `python bench/run_all.py --write-docs`; see bench/README.md.\n"

# Repetitions per mode; ``--runs`` overrides the timed runs of every figure.
PRESETS: dict[str, dict] = {
    "full": dict(
        runs=7,
        warmup=2,
        infer_utterances=64,
        single_utterances=16,
        decode_utterances=40,
        feature_utterances=50,
        cli_runs=5,
        cli_warmup=1,
        matmul_sizes=(2048, 4096),
    ),
    "quick": dict(
        runs=3,
        warmup=1,
        infer_utterances=32,
        single_utterances=8,
        decode_utterances=20,
        feature_utterances=20,
        cli_runs=3,
        cli_warmup=1,
        matmul_sizes=(2048,),
    ),
}


# ----------------------------------------------------------------------------- results


@dataclass
class Figure:
    """One row of the table: median, min and max of the timed runs (None: not measured)."""

    key: str
    label: str
    unit: str
    median: float | None
    min: float | None = None
    max: float | None = None
    note: str = ""


def figure(key: str, label: str, unit: str, values: Sequence[float], note: str = "") -> Figure:
    """A :class:`Figure` summarising ``values`` (one per timed run)."""
    return Figure(key, label, unit, statistics.median(values), min(values), max(values), note)


def missing(key: str, label: str, unit: str, note: str) -> Figure:
    return Figure(key, label, unit, None, None, None, note)


@dataclass
class Settings:
    """What :func:`run_benchmarks` measures and how often. ``train_cfg`` None means the
    default model of train.py; ``infer`` uses ``model_path`` when given, else ``train_cfg``."""

    runs: int = 7
    warmup: int = 2
    threads: int = 2
    quick: bool = False
    cuda: bool = False
    model_path: Path | None = None
    lm_path: Path | None = None
    val_manifest: Path | None = None
    train_manifest: Path | None = None
    train_cfg: ModelConfig | None = None
    train_batch_size: int | None = None  # None: train.py's --batch-size default
    batch_size: int = 16  # inference batches
    mean_seconds: float = 2.7
    infer_utterances: int = 64
    single_utterances: int = 16
    decode_utterances: int = 40
    feature_utterances: int = 50
    cli_runs: int = 5
    cli_warmup: int = 1
    matmul_sizes: tuple[int, ...] = (2048, 4096)
    phases: tuple[str, ...] = ()  # benchmarks to run (PHASES); empty: all


PHASES = ("matmul", "train", "infer", "decode", "features", "cli")


@dataclass
class Report:
    figures: list[Figure]
    info: dict = field(default_factory=dict)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def threads_note(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (what a reader of the docs can open)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# ----------------------------------------------------------------------------- machine


def lscpu() -> dict[str, str]:
    """``lscpu``'s fields ({} when lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def cpu_model() -> str:
    """``lscpu``'s model name with family/model numbers (``/proc/cpuinfo`` or ``platform``
    when lscpu is missing)."""
    fields = lscpu()
    if "Model name" in fields:
        numbers = ", ".join(f"{k.lower()} {fields[k]}" for k in ("CPU family", "Model") if k in fields)
        return fields["Model name"] + (f" ({numbers})" if numbers else "")
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD features that decide the CPU kernels (from /proc/cpuinfo; [] elsewhere)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    return []


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+changes" if dirty else "")


def machine_info(cuda: bool) -> dict:
    """Plain-data description of where the figures were measured."""
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_revision(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }
    return info


def load_average() -> float | None:
    """The 1-minute load average (runnable processes; on a shared machine other users' work shows here)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def machine_key(info: dict) -> str:
    """One line naming the machine; the docs keep one section per distinct line."""
    key = f"{info['cpu']}, {info['cpus_usable']} CPUs"
    return key + (f", {info['gpu']}" if info.get("gpu") else "")


# ----------------------------------------------------------------------------- inputs


def train_defaults() -> argparse.Namespace:
    """train.py's flags with their defaults: the recipe the benchmark follows."""
    return train.build_parser().parse_args([])


def default_model_config() -> ModelConfig:
    """The model ``python train.py`` builds with its default flags."""
    a = train_defaults()
    return ModelConfig.from_args(a, AudioConfig.from_args(a).n_freq, len(load_labels(a.labels_path)))


def an4_like_batch(batch_size: int, mean_seconds: float, n_features: int, seed: int = 0) -> Batch:
    """bench_model's mixed-length batch as a :class:`data.data_loader.Batch`: lengths spread
    evenly over 0.8-1.0 of the longest (mean ``mean_seconds``), random features, about
    12 labels per second."""
    max_frames = max(2, round(mean_seconds * 100 / 0.9))
    x, lengths, targets, target_lengths = make_batch(batch_size, max_frames, n_features, equal=False, seed=seed)
    return Batch(x, lengths, targets, target_lengths, [f"synthetic-{i}" for i in range(batch_size)], [""] * batch_size)


def an4_like_durations(n: int, mean_seconds: float = 2.7, seed: int = 0) -> list[float]:
    """``n`` utterance lengths shaped like AN4's (gamma, 0.7-6.4 s, multiples of 0.1 s)."""
    rng = np.random.default_rng(seed)
    d = np.clip(rng.gamma(6.0, mean_seconds / 6.0, size=n), 0.7, 6.4)
    return [round(float(s), 1) for s in d]


def synthetic_audio(durations: Sequence[float], sample_rate: int, seed: int = 0) -> list[np.ndarray]:
    """One bench_features utterance (sine + noise) per duration."""
    return [synthetic(1, s, sample_rate, seed=seed + i)[0] for i, s in enumerate(durations)]


def batch_seconds(batch: Batch, audio_cfg: AudioConfig) -> float:
    """Audio seconds in a batch (real frames x hop)."""
    return float(batch.input_lengths.sum()) * audio_cfg.hop_length / audio_cfg.sample_rate


# ----------------------------------------------------------------------------- timing


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def timed(fn: Callable[[], object], runs: int, warmup: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Wall seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return times


def timed_in_turns(fns: Sequence[Callable[[], object]], runs: int, warmup: int) -> list[list[float]]:
    """Like :func:`timed` for several functions that take turns in every round, so load
    drift on a shared machine hits them alike. Returns one list of seconds per function."""
    times: list[list[float]] = [[] for _ in fns]
    for i in range(warmup + runs):
        for j, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[j].append(time.perf_counter() - start)
    return times


def matmul_rates(n: int, runs: int, warmup: int) -> list[float]:
    """fp32 ``torch.mm`` GFLOP/s of n x n matrices, one value per run (bench_model.matmul_gflops)."""
    for _ in range(warmup):
        matmul_gflops(n, reps=1)
    return [matmul_gflops(n, reps=1) for _ in range(runs)]


# ----------------------------------------------------------------------------- training


def make_trainer(cfg: ModelConfig, device: str, amp: bool, seed: int = 0) -> train.Trainer:
    """A train.py Trainer holding a fresh ``cfg`` model and the recipe's optimizer, ready
    for :meth:`train.Trainer.train_step` (no data set: batches are passed in)."""
    args = train_defaults()
    args.cuda = device == "cuda"
    args.amp = amp
    trainer = train.Trainer(args)
    torch.manual_seed(seed)
    trainer.attach_model(build_model(cfg).to(trainer.device).train())
    return trainer


def train_step_times(trainers: Sequence[train.Trainer], batch: Batch, runs: int, warmup: int) -> list[list[float]]:
    """Seconds per ``train_step`` of each trainer, the trainers taking turns. ``batch`` stays
    on the CPU, as the data loader gives it: ``train_step`` copies it to the trainer's device
    (that copy is timed too)."""

    def step(trainer: train.Trainer) -> Callable[[], None]:
        def run() -> None:
            trainer.train_step(batch)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()

        return run

    return timed_in_turns([step(t) for t in trainers], runs, warmup)


def skipped_note(trainer: train.Trainer) -> str:
    """A note when some steps skipped the optimizer (non-finite loss or gradients, e.g. while
    GradScaler finds its scale): those steps did less work than a real one."""
    n = trainer.counters["skipped_nonfinite"]
    return f"; {n} steps skipped the optimizer (non-finite)" if n else ""


def train_figures(s: Settings, mm_gflops: float) -> tuple[list[Figure], dict]:
    cfg = s.train_cfg or default_model_config()
    audio_cfg = AudioConfig()
    batch_size = s.train_batch_size or train_defaults().batch_size
    batch = an4_like_batch(batch_size, s.mean_seconds, cfg.n_features)
    audio_s = batch_seconds(batch, audio_cfg)
    flops = 3 * sum(forward_flops(cfg, int(n)) for n in batch.input_lengths)
    with torch_threads(s.threads):
        log(f"train: {cfg.hidden_layers}x{cfg.hidden_size} {cfg.rnn_type}, batch {batch_size}, fp32 + bf16")
        trainers = [make_trainer(cfg, "cpu", False), make_trainer(cfg, "cpu", True)]
        fp32, bf16 = train_step_times(trainers, batch, s.runs, s.warmup)
    gflops = [flops / t / 1e9 for t in fp32]
    where = f"{threads_note(s.threads)}, batch {batch_size} x {audio_s / batch_size:.2f} s"
    figs = [
        figure(
            "train_x_realtime", "train step fp32", "x realtime", [audio_s / t for t in fp32], where + skipped_note(trainers[0])
        ),
        figure("train_gflops", "train step fp32", "GFLOP/s", gflops, "3 x forward_flops over real frames"),
        figure(
            "train_mfu",
            "train step fp32 MFU",
            "ratio",
            [g / mm_gflops for g in gflops],
            f"train GFLOP/s over {mm_gflops:.0f} GFLOP/s fp32 matmul",
        ),
        figure(
            "train_bf16_x_realtime",
            "train step bf16 autocast",
            "x realtime",
            [audio_s / t for t in bf16],
            where + skipped_note(trainers[1]),
        ),
    ]
    info = {
        "train_model": asdict(cfg),
        "train_params": count_parameters(build_model(cfg)),
        "train_batch": {"size": batch_size, "audio_seconds": round(audio_s, 2), "frames": batch.input_lengths.tolist()},
        "train_step_flops": flops,
    }
    return figs, info


def cuda_train_figures(s: Settings) -> list[Figure]:
    cfg = s.train_cfg or default_model_config()
    batch_size = s.train_batch_size or train_defaults().batch_size
    batch = an4_like_batch(batch_size, s.mean_seconds, cfg.n_features)
    audio_s = batch_seconds(batch, AudioConfig())
    log("train on CUDA: fp32 and AMP (fp16 + GradScaler)")
    trainers = [make_trainer(cfg, "cuda", False), make_trainer(cfg, "cuda", True)]
    fp32, amp = train_step_times(trainers, batch, s.runs, max(s.warmup, 2))
    note = f"{torch.cuda.get_device_name(0)}, batch {batch_size}"
    return [
        figure(
            "train_cuda_x_realtime",
            "train step CUDA fp32",
            "x realtime",
            [audio_s / t for t in fp32],
            note + skipped_note(trainers[0]),
        ),
        figure(
            "train_cuda_amp_x_realtime",
            "train step CUDA AMP",
            "x realtime",
            [audio_s / t for t in amp],
            note + skipped_note(trainers[1]),
        ),
    ]


# ----------------------------------------------------------------------------- inference


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the Linear and recurrent layers (weights qint8,
    activations quantized per batch), for CPU inference."""
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager API still works here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.GRU, nn.LSTM, nn.RNN}, dtype=torch.qint8)


def greedy_wer(
    model: nn.Module | Recognizer, manifest: Path, audio_cfg: AudioConfig, labels: Sequence[str], amp: bool = False
) -> float:
    """Corpus WER (%) with greedy decoding on ``manifest`` (inference.evaluate) of a PyTorch
    model (``amp``: bf16 autocast) or any recognizer (e.g. ONNX)."""
    data = SpectrogramDataset(manifest, audio_cfg, labels, on_error="skip")
    loader = AudioDataLoader(data, batch_sampler=BucketingSampler(len(data), batch_size=16, shuffle=False))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        return evaluate(model, loader, GreedyDecoder(labels), amp=amp).wer


# (key prefix, label) of each inference runtime; the order of the table rows
RUNTIMES = (
    ("infer", "PyTorch fp32"),
    ("infer_bf16", "PyTorch bf16 autocast"),
    ("onnx", "ONNX fp32"),
    ("onnx_int8", "ONNX int8 dynamic"),
    ("onnx_int8_static", "ONNX int8, static conv"),
)


def write_wavs(folder: Path, audio: Sequence[np.ndarray], sample_rate: int) -> list[Path]:
    """Each waveform as a 16-bit mono WAV file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(audio):
        path = folder / f"u{i:03d}.wav"
        sf.write(str(path), a, sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def export_for_bench(
    model: AcousticModel, audio_cfg: AudioConfig, labels: Sequence[str], tmp: Path, calibration_manifest: Path | None = None
) -> dict[str, Path]:
    """The fp32 and dynamic int8 ONNX exports of ``model`` ({"onnx": path, "onnx_int8": path}),
    and with a calibration manifest the int8 export with static conv quantization ("onnx_int8_static")."""
    fp32 = export_onnx(model, audio_cfg, labels, tmp / "model.onnx")
    files = {"onnx": fp32, "onnx_int8": quantize_onnx(fp32, tmp / "model_int8.onnx")}
    if calibration_manifest is not None:
        files["onnx_int8_static"] = quantize_onnx(
            fp32, tmp / "model_int8_static.onnx", calibration_features(calibration_manifest, audio_cfg)
        )
    return files


def infer_figures(
    s: Settings, model: AcousticModel, audio_cfg: AudioConfig, labels: Sequence[str], onnx_files: dict[str, Path], tmp: Path
) -> tuple[list[Figure], dict]:
    durations = an4_like_durations(s.infer_utterances, s.mean_seconds)
    audio = synthetic_audio(durations, audio_cfg.sample_rate)
    files = write_wavs(tmp / "infer_wavs", audio, audio_cfg.sample_rate)
    total = sum(len(a) for a in audio) / audio_cfg.sample_rate
    single = files[: s.single_utterances]
    single_s = sum(len(a) for a in audio[: s.single_utterances]) / audio_cfg.sample_rate
    decoder = GreedyDecoder(labels)
    int8 = quantize_int8(model)
    recognizers: dict[str, Recognizer] = {
        "infer": TorchRecognizer(model, audio_cfg, labels),
        "infer_bf16": TorchRecognizer(model, audio_cfg, labels, amp=True),
    }
    recognizers.update({name: OnnxRecognizer(path, threads=s.threads) for name, path in onnx_files.items()})
    runtimes = [(name, label) for name, label in RUNTIMES if name in recognizers]
    torch_int8 = TorchRecognizer(int8, audio_cfg, labels)

    def batched(rec: Recognizer) -> Callable[[], object]:
        return lambda: transcribe_files(files, rec, decoder, batch_size=s.batch_size)

    def one_at_a_time(rec: Recognizer) -> Callable[[], object]:
        return lambda: transcribe_files(single, rec, decoder, batch_size=1)

    names = [name for name, _ in runtimes]
    fns = [batched(recognizers[n]) for n in names] + [one_at_a_time(recognizers[n]) for n in names]
    fns.append(batched(torch_int8))
    with torch_threads(s.threads):
        log(
            f"infer: {len(audio)} WAV files ({total:.0f} s) in batches of {s.batch_size} and {len(single)} one at a "
            f"time; {', '.join(label for _, label in runtimes)} and PyTorch int8, taking turns"
        )
        times = timed_in_turns(fns, s.runs, s.warmup)
        wers: dict[str, float | None] = dict.fromkeys([*names, "torch_int8"])
        manifest = s.val_manifest if s.model_path is not None else None
        if manifest is not None:
            log(f"infer: greedy WER of every variant on {shown(manifest)}")
            wers.update(
                infer=greedy_wer(model, manifest, audio_cfg, labels),
                infer_bf16=greedy_wer(model, manifest, audio_cfg, labels, amp=True),
                torch_int8=greedy_wer(int8, manifest, audio_cfg, labels),
            )
            wers.update({name: greedy_wer(recognizers[name], manifest, audio_cfg, labels) for name in onnx_files})
    batch_times = dict(zip(names, times[: len(names)]))
    single_times = dict(zip(names, times[len(names) : 2 * len(names)]))
    where = f"{threads_note(s.threads)}, WAV -> text"

    def wer_note(name: str) -> str:
        if wers[name] is None:
            return ""
        base = f"; greedy WER {wers[name]:.2f}"
        return base + (f" ({wers[name] - wers['infer']:+.2f})" if name != "infer" else "")

    figs: list[Figure] = []
    for name, label in runtimes:
        figs.append(
            figure(
                f"{name}_x_realtime",
                f"transcribe {label}",
                "x realtime",
                [total / t for t in batch_times[name]],
                f"{where}, batches of {s.batch_size}{wer_note(name)}",
            )
        )
        figs.append(
            figure(
                f"{name}_single_x_realtime",
                f"transcribe {label}, 1 at a time",
                "x realtime",
                [single_s / t for t in single_times[name]],
                f"{where}, one file at a time",
            )
        )

    def ratio(key: str, label: str, num: list[float], den: list[float], note: str) -> Figure:
        return figure(key, label, "ratio", [d / n for n, d in zip(num, den)], note)  # time ratio = speed ratio

    figs += [
        ratio(
            "onnx_speedup",
            "ONNX fp32 vs PyTorch fp32",
            batch_times["onnx"],
            batch_times["infer"],
            "speed ratio, batched, per round",
        ),
        ratio(
            "onnx_single_speedup",
            "ONNX fp32 vs PyTorch fp32, 1 at a time",
            single_times["onnx"],
            single_times["infer"],
            "speed ratio, per round",
        ),
        ratio(
            "onnx_int8_speedup",
            "ONNX int8 vs ONNX fp32",
            batch_times["onnx_int8"],
            batch_times["onnx"],
            "speed ratio, batched, per round",
        ),
        ratio(
            "onnx_int8_single_speedup",
            "ONNX int8 vs ONNX fp32, 1 at a time",
            single_times["onnx_int8"],
            single_times["onnx"],
            "speed ratio, per round",
        ),
    ]
    if wers["infer"] is not None:
        delta = wers["torch_int8"] - wers["infer"]
        int8_note = (
            f"PyTorch quantize_dynamic, batched; greedy WER {wers['infer']:.2f} -> {wers['torch_int8']:.2f} "
            f"({delta:+.2f}) on {shown(manifest)}"
        )
    else:
        delta = None
        int8_note = "PyTorch quantize_dynamic, batched; WER change: n/a (needs --model-path and a validation manifest)"
    figs.append(
        figure(
            "infer_int8_x_realtime", "transcribe PyTorch int8 dynamic", "x realtime", [total / t for t in times[-1]], int8_note
        )
    )
    info = {
        "infer_fp32_wer": wers["infer"],
        "infer_int8_wer": wers["torch_int8"],
        "infer_int8_wer_delta": delta,
        "infer_bf16_wer": wers["infer_bf16"],
        "onnx_fp32_wer": wers["onnx"],
        "onnx_int8_wer": wers["onnx_int8"],
        "onnx_int8_static_wer": wers.get("onnx_int8_static"),
        "infer_wer_manifest": shown(manifest) if manifest is not None else None,
        "infer_audio_seconds": round(total, 1),
        "infer_single_audio_seconds": round(single_s, 1),
        "infer_model": asdict(model.cfg),
        "onnx_sizes_mib": {k: round(p.stat().st_size / 2**20, 2) for k, p in onnx_files.items()},
    }
    return figs, info


# ----------------------------------------------------------------------------- decoding and features


def lm_corpus(train_manifest: Path | None) -> tuple[list[list[str]], str]:
    """Sentences for the LM and the synthetic log-probs: the manifest's, else bench_decode's."""
    if train_manifest is not None:
        return [w for w in read_sentences([train_manifest], load_labels(None)) if w], shown(train_manifest)
    return synthetic_corpus(1000, random.Random(0)), "bench_decode synthetic corpus"


def decode_figures(s: Settings, tmp: Path) -> tuple[list[Figure], dict]:
    defaults = decode_parser().parse_args([])
    corpus, source = lm_corpus(s.train_manifest)
    if s.lm_path is not None:
        lm_path, lm_note = s.lm_path, shown(s.lm_path)
    else:
        lm_path, lm_note = tmp / "bench_3gram.arpa", f"3-gram from {source}"
        KneserNeyModel(corpus, 3).write_arpa(lm_path)
    tuned = load_lm_defaults(lm_path)
    alpha, beta = tuned.get("alpha", defaults.alpha), tuned.get("beta", defaults.beta)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    n_frames = round(defaults.seconds * 50)
    rendered = [render(rng.choice(corpus), n_frames, defaults.confusion, rng, gen) for _ in range(s.decode_utterances)]
    log_probs = torch.stack([lp for lp, _ in rendered])  # (B, T, C)
    audio_s = s.decode_utterances * defaults.seconds
    labels = load_labels(None)
    with torch_threads(1):
        log(f"decode: {s.decode_utterances} x {defaults.seconds:g} s, greedy and beam {defaults.beam_width} + LM")
        greedy_t, _ = time_decoder(GreedyDecoder(labels), log_probs, s.runs)
        figs = [figure("decode_greedy_x_realtime", "greedy decode", "x realtime", [audio_s / t for t in greedy_t], "1 thread")]
        try:
            with BeamCTCDecoder(labels, beam_width=defaults.beam_width, lm_path=lm_path, alpha=alpha, beta=beta) as beam:
                beam_t, _ = time_decoder(beam, log_probs, s.runs)
            figs.append(
                figure(
                    "decode_beam_x_realtime",
                    f"beam {defaults.beam_width} + LM",
                    "x realtime",
                    [audio_s / t for t in beam_t],
                    f"1 thread, {lm_note}, alpha {alpha:g}, beta {beta:g}",
                )
            )
        except ImportError as e:  # flashlight-text not installed
            figs.append(missing("decode_beam_x_realtime", f"beam {defaults.beam_width} + LM", "x realtime", str(e)))
    return figs, {"decode_lm": lm_note}


def feature_figures(s: Settings) -> list[Figure]:
    cfg = AudioConfig()
    seconds = 3.0
    audio = synthetic(s.feature_utterances, seconds, cfg.sample_rate, seed=0)
    with torch_threads(1):
        log(f"features: {s.feature_utterances} x {seconds:g} s")
        for _ in range(max(0, s.warmup - 1)):  # bench_features.measure warms up once itself
            [spectrogram(x, cfg) for x in audio]
        r = measure(lambda: [spectrogram(x, cfg) for x in audio], s.feature_utterances * seconds, s.runs)
    return [
        Figure("features_x_realtime", "spectrogram", "x realtime", r["median"], r["min"], r["max"], "1 thread, normalised (F, T)")
    ]


# ----------------------------------------------------------------------------- CLI cold start


def cli_cold_start(model_path: Path, wav_path: Path, runs: int, warmup: int) -> list[float]:
    """Wall seconds of whole ``python transcribe.py`` processes on one file."""
    cmd = [sys.executable, str(REPO / "transcribe.py"), "--model-path", str(model_path), "--audio-path", str(wav_path)]

    def once() -> None:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"transcribe.py exited with {proc.returncode}: {tail}")

    return timed(once, runs, warmup)


def cli_figures(s: Settings, model_path: Path, onnx_files: dict[str, Path], tmp: Path) -> list[Figure]:
    wav = tmp / "three_seconds.wav"
    sf.write(str(wav), synthetic(1, 3.0, 16000, seed=7)[0], 16000, subtype="PCM_16")
    log(f"cli: python transcribe.py on a 3 s wav, PyTorch, ONNX fp32 and ONNX int8 models, {s.cli_runs} runs each")
    figs = []
    for key, label, path in (
        ("cli_cold_start_s", "transcribe.py cold start", model_path),
        ("cli_onnx_cold_start_s", "transcribe.py cold start, ONNX fp32", onnx_files["onnx"]),
        ("cli_onnx_int8_cold_start_s", "transcribe.py cold start, ONNX int8", onnx_files["onnx_int8"]),
    ):
        times = cli_cold_start(path, wav, s.cli_runs, s.cli_warmup)
        figs.append(figure(key, label, "s", times, f"whole process, 3 s wav, greedy, {path.suffix} model"))
    return figs


# ----------------------------------------------------------------------------- driver


def run_benchmarks(s: Settings) -> Report:
    """Every benchmark in turn; returns the figures and a description of what ran
    (``info["phase_seconds"]``: wall seconds each benchmark took, warm-up included)."""
    started = time.perf_counter()
    info = machine_info(s.cuda)
    wanted = s.phases or PHASES
    info.update(threads=s.threads, runs=s.runs, warmup=s.warmup, quick=s.quick, phases=list(wanted))
    load_start = load_average()
    phases: dict[str, float] = {}
    figs: list[Figure] = []

    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        phases[name] = round(time.perf_counter() - t0, 1)
        log(f"  {name}: {phases[name]:.1f} s")

    if "matmul" in wanted or "train" in wanted:  # training MFU is relative to the matmul rate
        with phase("matmul"), torch_threads(s.threads):
            log(f"matmul: fp32 {', '.join(f'{n}^2' for n in s.matmul_sizes)}, {threads_note(s.threads)}")
            rates = {n: matmul_rates(n, max(3, s.runs), max(1, s.warmup)) for n in s.matmul_sizes}
        for n, values in rates.items():
            figs.append(figure(f"matmul_{n}_gflops", f"torch.mm fp32 {n}^2", "GFLOP/s", values, threads_note(s.threads)))
        mm = max(statistics.median(v) for v in rates.values())
        info["matmul_gflops"] = round(mm, 1)

    if "train" in wanted:
        with phase("train"):
            train_figs, train_info = train_figures(s, mm)
        figs += train_figs
        info.update(train_info)
        if s.cuda:
            with phase("train_cuda"):
                figs += cuda_train_figures(s)
        else:
            figs += [
                missing("train_cuda_x_realtime", "train step CUDA fp32", "x realtime", "run with --cuda on a GPU"),
                missing("train_cuda_amp_x_realtime", "train step CUDA AMP", "x realtime", "run with --cuda on a GPU"),
            ]

    with tempfile.TemporaryDirectory(prefix="run_all_") as tmp_name:
        tmp = Path(tmp_name)
        if "infer" in wanted or "cli" in wanted:
            if s.model_path is not None:
                model, ckpt = load_model(s.model_path)
                audio_cfg, labels, model_path = ckpt.audio_config, ckpt.labels, s.model_path
                info["infer_checkpoint"] = shown(s.model_path)
            else:
                torch.manual_seed(0)
                model = build_model(s.train_cfg or default_model_config()).eval()
                audio_cfg, labels = AudioConfig(), load_labels(None)
                model_path = save_checkpoint(tmp / "random_default.pth", Checkpoint.from_model(model, audio_cfg, labels))
                info["infer_checkpoint"] = None
            with phase("export"):
                calibration = s.train_manifest if s.model_path is not None else None
                log(
                    "export: ONNX fp32 and dynamic int8"
                    + (f", int8 with static conv calibrated on {shown(calibration)}" if calibration else "")
                )
                onnx_files = export_for_bench(model, audio_cfg, labels, tmp, calibration)
            info["infer_model"] = asdict(model.cfg)
        if "infer" in wanted:
            with phase("infer"):
                infer_figs, infer_info = infer_figures(s, model, audio_cfg, labels, onnx_files, tmp)
            figs += infer_figs
            info.update(infer_info)
        if "decode" in wanted:
            with phase("decode"):
                decode_figs, decode_info = decode_figures(s, tmp)
            figs += decode_figs
            info.update(decode_info)
        if "features" in wanted:
            with phase("features"):
                figs += feature_figures(s)
        if "cli" in wanted:
            with phase("cli"):
                figs += cli_figures(s, model_path, onnx_files, tmp)
    info["phase_seconds"] = phases
    info["elapsed_s"] = round(time.perf_counter() - started, 1)
    info["load_average"] = {"start": load_start, "end": load_average()}
    return Report(figs, info)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def format_table(figs: Sequence[Figure]) -> str:
    """A plain-text table: figure, unit, median, min, max, notes."""
    rows = [(f.label, f.unit, _fmt(f.median), _fmt(f.min), _fmt(f.max), f.note) for f in figs]
    head = ("figure", "unit", "median", "min", "max", "notes")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    lines = []
    for r in [head] + rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [r[i].rjust(widths[i]) for i in (2, 3, 4)]
        lines.append("  ".join(cells + [r[5]]).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown_table(figs: Sequence[Figure]) -> str:
    lines = ["| figure | key | median | min | max | unit | notes |", "|---|---|---:|---:|---:|---|---|"]
    for f in figs:
        lines.append(
            f"| {f.label} | `{f.key}` | {_fmt(f.median)} | {_fmt(f.min)} | {_fmt(f.max)} | {f.unit} | "
            f"{f.note.replace('|', '/')} |"
        )
    return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summary(report: Report) -> dict:
    """The JSON object: every figure's median under its key, min and max as ``key_min``/``key_max``,
    then the description of the run."""
    out: dict = {}
    for f in report.figures:
        out[f.key] = _round(f.median)
        out[f"{f.key}_min"] = _round(f.min)
        out[f"{f.key}_max"] = _round(f.max)
    for key in (
        "infer_fp32_wer",
        "infer_int8_wer",
        "infer_int8_wer_delta",
        "infer_bf16_wer",
        "onnx_fp32_wer",
        "onnx_int8_wer",
        "onnx_int8_static_wer",
    ):
        out[key] = _round(report.info.get(key))
    out.update({k: v for k, v in report.info.items() if k not in out})
    return out


def _describe(cfg: dict) -> str:
    """``ds2 3x384 bilstm`` for a ModelConfig dict."""
    return f"{cfg['arch']} {cfg['hidden_layers']}x{cfg['hidden_size']} {'bi' if cfg['bidirectional'] else 'uni'}{cfg['rnn_type']}"


def docs_section(report: Report, command: str) -> tuple[str, str]:
    """(key, markdown) of this run's section in the benchmarks document."""
    info = report.info
    key = machine_key(info)
    if info.get("phases") and set(info["phases"]) != set(PHASES):
        key += f" (only {', '.join(info['phases'])})"
    body: list[str] = [
        f"## {key}",
        "",
        f"- command: `{command}`",
        f"- date: {info['date']}, commit {info['git'] or 'unknown'}",
        f"- machine: {info['cpu']}, {info['cpus_usable']} usable CPUs of {info['cpu_count']}, "
        f"flags {', '.join(info['cpu_flags']) or 'not read'}" + (f", GPU {info['gpu']}" if info.get("gpu") else ""),
        f"- torch {info['torch']}, Python {info['python']}; {threads_note(info['threads'])} for matmul, training "
        "and inference, 1 for decoding and features",
        *(
            [
                f"- training model (train.py defaults): {_describe(info['train_model'])}, {info['train_params']:,} "
                f"parameters; batch {info['train_batch']['size']} utterances, {info['train_batch']['audio_seconds']} s "
                "of audio"
            ]
            if "train_model" in info
            else []
        ),
        *(
            [
                "- inference and CLI model: "
                + (f"`{info['infer_checkpoint']}`" if info.get("infer_checkpoint") else "train.py's default, random weights")
                + f" ({_describe(info['infer_model'])})"
            ]
            if "infer_model" in info
            else []
        ),
        f"- each figure: median, min and max of {info['runs']} timed runs after {info['warmup']} warm-up "
        f"(CLI: whole processes); the run took {info['elapsed_s']:.0f} s",
        f"- 1-minute load average at the start and end of the run: {info['load_average']['start']} / "
        f"{info['load_average']['end']} (above 0 means other processes shared the CPUs)",
        "",
        markdown_table(report.figures),
        "",
        "<details><summary>JSON</summary>",
        "",
        "```json",
        json.dumps(summary(report)),
        "```",
        "",
        "</details>",
    ]
    return key, "\n".join(body)


def update_docs(path: Path, key: str, section: str) -> None:
    """Put ``section`` between markers for ``key`` in ``path``: replace that machine's previous
    section, or append; everything else in the file stays."""
    begin, end = f"<!-- run_all begin: {key} -->", f"<!-- run_all end: {key} -->"
    block = f"{begin}\n{section}\n{end}\n"
    text = path.read_text() if path.exists() else DOCS_TITLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 timed runs per figure and smaller inputs (< 5 minutes)")
    p.add_argument("--cuda", action="store_true", help="also time training on the GPU, fp32 and AMP")
    p.add_argument(
        "--model-path",
        type=Path,
        default=None,
        help="checkpoint for inference, int8 WER and the CLI cold start (default: train.py's default model with random weights)",
    )
    p.add_argument(
        "--lm-path", type=Path, default=None, help="ARPA LM for beam decoding (default: a 3-gram built from --train-manifest)"
    )
    p.add_argument(
        "--val-manifest",
        type=Path,
        default=None,
        help="manifest for the fp32 vs int8 WER (default: data/an4_val_manifest.csv when present; needs --model-path)",
    )
    p.add_argument(
        "--train-manifest",
        type=Path,
        default=None,
        help="transcripts for the LM and the decoding inputs, and audio to calibrate the static int8 "
        "ONNX export on (with --model-path) (default: data/an4_train_manifest.csv when present, "
        "else a synthetic AN4-like corpus and no static int8)",
    )
    p.add_argument(
        "--write-docs",
        type=Path,
        default=None,
        metavar="PATH",
        help="write or update this machine's section in a markdown file (e.g. docs/benchmarks.md)",
    )
    p.add_argument("--runs", type=int, default=None, help="timed runs per figure (default 7, 3 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for matmul, training and inference")
    p.add_argument(
        "--only",
        nargs="+",
        choices=PHASES,
        default=None,
        metavar="PHASE",
        help=f"run only these benchmarks ({', '.join(PHASES)}); with --write-docs they get a section of their own",
    )
    return p


def _existing(path: Path | None, flag: str, default: Path | None = None) -> Path | None:
    """A given path must be a file; without one, ``default`` is used when it is a file."""
    if path is None:
        return default if default is not None and default.is_file() else None
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: file not found")
    return path


class UserError(ValueError):
    """A flag that cannot work as given; the message names it and the fix."""


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings for parsed flags; raises FileNotFoundError/UserError naming a bad flag."""
    if args.cuda and not torch.cuda.is_available():
        raise UserError("--cuda given but no CUDA device is available; drop --cuda to benchmark the CPU only")
    if args.write_docs is not None and args.write_docs.is_dir():
        raise UserError(f"--write-docs {args.write_docs}: is a folder; give a markdown file such as docs/benchmarks.md")
    preset = dict(PRESETS["quick" if args.quick else "full"])
    if args.runs is not None:
        preset["runs"] = preset["cli_runs"] = args.runs
    settings = Settings(
        threads=args.threads,
        quick=args.quick,
        cuda=args.cuda,
        phases=tuple(args.only or ()),
        model_path=_existing(args.model_path, "--model-path"),
        lm_path=_existing(args.lm_path, "--lm-path"),
        val_manifest=_existing(args.val_manifest, "--val-manifest", DEFAULT_VAL_MANIFEST),
        train_manifest=_existing(args.train_manifest, "--train-manifest", DEFAULT_TRAIN_MANIFEST),
        **preset,
    )
    # Bad files fail here, in one line, not after minutes of measuring.
    if settings.model_path is not None:
        load_checkpoint(settings.model_path)
    if settings.lm_path is not None:
        lm_file_kind(settings.lm_path)
    for manifest in (settings.val_manifest, settings.train_manifest):
        if manifest is not None:
            read_manifest(manifest)
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.runs is not None and args.runs < 1) or args.threads < 1:
        parser.error("--runs and --threads must be at least 1")
    command = shlex.join(["python", "bench/run_all.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        settings = settings_from_args(args)
        report = run_benchmarks(settings)
    except (
        FileNotFoundError,
        CheckpointError,
        DecoderError,
        LMError,
        AudioError,
        ManifestError,
        TranscriptError,
        UserError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.write_docs is not None:
        key, section = docs_section(report, command)
        update_docs(args.write_docs, key, section)
        log(f"wrote section '{key}' of {args.write_docs}")
    print(format_table(report.figures))
    print(json.dumps(summary(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
