"""ONNX export against PyTorch on real audio: equivalence, WER of fp32 and int8, and where the
features should be computed.

    python bench/bench_onnx.py --model-path models/an4.pth \\
        --manifests data/an4_val_manifest.csv data/an4_test_manifest.csv \\
        --calibration-manifest data/an4_train_manifest.csv
    python bench/bench_onnx.py --front-end-only

For each manifest, every utterance goes through :func:`data.audio.spectrogram` once; the
same features then go through the PyTorch checkpoint (fp32), its fp32 ONNX export, its
dynamic int8 export and, with ``--calibration-manifest``, the int8 export whose convolutions
are statically quantized on that audio. Batches of ``--batch-size`` in manifest order
(AN4's manifests are sorted by duration), greedy decoding. Reported per variant: corpus
WER/CER, the largest absolute difference of any valid log-prob from PyTorch's, how many
hypotheses equal PyTorch's, and the model's wall time (``--threads`` threads).

Then every variant transcribes the same 32 AN4-like WAV files end to end (``transcribe_files``:
read, spectrogram, model, greedy), in batches of 16 and one file at a time, on **one thread**,
timed by the process's CPU time as well as the wall clock: x realtime per CPU-second is what
one core delivers, and stays meaningful when other processes share the machine (the wall
clock then does not). PyTorch under bf16 autocast is included.

The front-end part times the features three ways on the same 2.7 s utterances, one thread:
numpy (``data.audio.spectrogram``, what the runtime uses), and inside an ONNX graph run by
onnxruntime, as a strided convolution with a windowed DFT basis or with ONNX's ``STFT`` op.

The table goes to stdout; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data.audio import AudioConfig, _window, load_audio, spectrogram  # noqa: E402
from data.manifest import read_manifest  # noqa: E402
from data.text import normalize_text  # noqa: E402
from decoder import ErrorRate, GreedyDecoder  # noqa: E402
from inference import Recognizer, TorchRecognizer, pad_features  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_variant(recognizer: Recognizer, features: Sequence[np.ndarray], batch_size: int) -> tuple[list[np.ndarray], float]:
    """Log-probs of every utterance (batches in the given order) and the wall seconds."""
    out: list[np.ndarray] = []
    start = time.perf_counter()
    for b in range(0, len(features), batch_size):
        x, lengths = pad_features(features[b : b + batch_size])
        log_probs, out_lengths = recognizer.forward_padded(x, lengths)
        out += [log_probs[i, : int(n)] for i, n in enumerate(out_lengths)]
    return out, time.perf_counter() - start


def compare(
    model_path: Path, manifests: Sequence[Path], calibration: Path | None, threads: int, batch_size: int, out_dir: Path
) -> dict:
    from checkpoint import load_model
    from inference import OnnxRecognizer
    from onnx_export import calibration_features, export_onnx, quantize_onnx

    model, ckpt = load_model(model_path)
    cfg, labels = ckpt.audio_config, ckpt.labels
    log(f"export {model_path} -> {out_dir}")
    fp32 = export_onnx(model, cfg, labels, out_dir / "model.onnx", {"source": model_path.name})
    files = {"onnx_fp32": fp32, "onnx_int8": quantize_onnx(fp32, out_dir / "model_int8.onnx")}
    if calibration is not None:
        log(f"static int8: calibrating the convolutions on {calibration}")
        files["onnx_int8_static"] = quantize_onnx(
            fp32, out_dir / "model_int8_static.onnx", calibration_features(calibration, cfg)
        )
    variants: dict[str, Recognizer] = {"torch_fp32": TorchRecognizer(model, cfg, labels)}
    variants.update({name: OnnxRecognizer(path, threads=threads) for name, path in files.items()})
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _compare_sets(
            variants,
            files,
            manifests,
            cfg,
            labels,
            batch_size,
            {"model": str(model_path), "threads": threads, "batch_size": batch_size},
        )
    finally:
        torch.set_num_threads(torch_threads)


def _compare_sets(
    variants: dict,
    files: dict,
    manifests: Sequence[Path],
    cfg: AudioConfig,
    labels: Sequence[str],
    batch_size: int,
    results: dict,
) -> dict:
    decoder = GreedyDecoder(labels)
    results.update(sizes_mib={k: round(p.stat().st_size / 2**20, 1) for k, p in files.items()}, sets={})
    for manifest in manifests:
        rows = read_manifest(manifest)
        log(f"{manifest}: {len(rows)} utterances")
        features = [spectrogram(load_audio(u.wav, cfg.sample_rate), cfg) for u in rows]
        refs = [normalize_text(u.txt.read_text(encoding="utf-8"), labels) for u in rows]
        audio_s = sum(f.shape[1] for f in features) * cfg.hop_length / cfg.sample_rate
        outputs, per_set = {}, {}
        for name, recognizer in variants.items():
            run_variant(recognizer, features[:batch_size], batch_size)  # warm-up
            log_probs, seconds = run_variant(recognizer, features, batch_size)
            hyps = [paths[0].text for lp in log_probs for paths in decoder.decode(lp[None])]
            errors = ErrorRate()
            errors.update(refs, hyps)
            outputs[name] = (log_probs, hyps)
            ref_lp, ref_hyps = outputs["torch_fp32"]
            per_set[name] = {
                "wer": round(errors.wer, 3),
                "cer": round(errors.cer, 3),
                "max_abs_diff": float(max(np.abs(a - b).max() for a, b in zip(log_probs, ref_lp))),
                "same_hypotheses": sum(a == b for a, b in zip(hyps, ref_hyps)),
                "utterances": len(hyps),
                "model_x_realtime": round(audio_s / seconds, 1),
            }
        results["sets"][str(manifest)] = per_set
    results["files"] = {k: str(v) for k, v in files.items()}
    return results


def cpu_time_speed(model_path: Path, files: dict[str, str], runs: int = 3, n_files: int = 32, n_single: int = 8) -> dict:
    """x realtime per CPU-second and per wall second, one thread, WAV -> text, every variant in turn."""
    from bench.run_all import an4_like_durations, synthetic_audio, write_wavs
    from checkpoint import load_model
    from inference import OnnxRecognizer

    model, ckpt = load_model(model_path)
    cfg, labels = ckpt.audio_config, ckpt.labels
    durations = an4_like_durations(n_files)
    variants: dict[str, Recognizer] = {
        "torch_fp32": TorchRecognizer(model, cfg, labels),
        "torch_bf16": TorchRecognizer(model, cfg, labels, amp=True),
    }
    variants.update({name: OnnxRecognizer(path, threads=1) for name, path in files.items()})
    decoder = GreedyDecoder(labels)
    out: dict = {
        "threads": 1,
        "files": n_files,
        "single_files": n_single,
        "runs": runs,
        "audio_seconds": round(sum(durations), 1),
    }
    with tempfile.TemporaryDirectory(prefix="bench_onnx_wavs_") as tmp:
        wavs = write_wavs(Path(tmp), synthetic_audio(durations, cfg.sample_rate), cfg.sample_rate)
        modes = {"batched": (wavs, 16, sum(durations)), "single": (wavs[:n_single], 1, sum(durations[:n_single]))}
        samples: dict = {name: {mode: ([], []) for mode in modes} for name in variants}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _speed_rounds(variants, modes, decoder, runs, samples)
        finally:
            torch.set_num_threads(threads)
    for name, per_mode in samples.items():
        out[name] = {
            f"{mode}_{kind}": round(statistics.median(values), 1)
            for mode, (cpu, wall) in per_mode.items()
            for kind, values in (("cpu", cpu), ("wall", wall))
        }
    return out


def _speed_rounds(variants: dict, modes: dict, decoder: GreedyDecoder, runs: int, samples: dict) -> None:
    from transcribe import transcribe_files

    for r in range(runs + 1):  # the first round warms up
        for name, rec in variants.items():
            for mode, (paths, batch_size, seconds) in modes.items():
                wall, cpu = time.perf_counter(), time.process_time()
                transcribe_files(paths, rec, decoder, batch_size=batch_size)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                if r:
                    samples[name][mode][0].append(seconds / cpu)
                    samples[name][mode][1].append(seconds / wall)


def front_end(seconds: float = 2.7, n: int = 16, runs: int = 7) -> dict:
    """Features per second of audio on one thread: numpy vs two in-graph ONNX front ends."""
    import onnxruntime as ort

    cfg = AudioConfig()
    n_fft, hop, n_freq = cfg.n_fft, cfg.hop_length, cfg.n_freq

    class DFTConv(torch.nn.Module):
        """|STFT| as a strided Conv1d whose kernels are the windowed DFT basis, then log1p and
        the per-utterance normalisation over each utterance's valid frames."""

        def __init__(self) -> None:
            super().__init__()
            k = np.arange(n_fft)
            angle = 2 * np.pi * np.outer(np.arange(n_freq), k) / n_fft
            w = _window(cfg).astype(np.float64)
            basis = np.concatenate([np.cos(angle) * w, -np.sin(angle) * w])[:, None, :]
            self.conv = torch.nn.Conv1d(1, 2 * n_freq, n_fft, stride=hop, bias=False)
            self.conv.weight.data = torch.tensor(basis, dtype=torch.float32)

        def forward(self, audio: torch.Tensor, n_samples: torch.Tensor) -> torch.Tensor:
            y = self.conv(torch.nn.functional.pad(audio[:, None], (n_fft // 2, n_fft // 2)))
            spec = torch.log1p(torch.sqrt(y[:, :n_freq] ** 2 + y[:, n_freq:] ** 2))  # (B, F, T)
            lengths = n_samples // hop + 1
            mask = (torch.arange(spec.size(2))[None] < lengths[:, None]).float()[:, None]
            count = lengths.float() * n_freq
            mean = (spec * mask).sum((1, 2)) / count
            var = (((spec - mean[:, None, None]) * mask) ** 2).sum((1, 2)) / (count - 1)
            return (spec - mean[:, None, None]) / (var.sqrt()[:, None, None] + 1e-10) * mask

    class StftOp(torch.nn.Module):
        def forward(self, audio: torch.Tensor, n_samples: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.pad(audio, (n_fft // 2, n_fft // 2))
            st = torch.stft(x, n_fft, hop, window=torch.from_numpy(_window(cfg)), center=False, return_complex=False)
            return torch.log1p(torch.sqrt((st**2).sum(-1)))

    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(int(seconds * cfg.sample_rate))).astype(np.float32) for _ in range(n)]
    batch = np.stack(audio)

    def rate(fn, audio_s: float) -> float:
        fn()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return round(audio_s / statistics.median(times), 0)

    out: dict = {"seconds": seconds, "utterances": n, "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        for name, module in (("onnx_dft_conv", DFTConv()), ("onnx_stft_op", StftOp())):
            path = str(Path(tmp) / f"{name}.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (torch.zeros(2, 16000), torch.tensor([16000, 12000])),
                    path,
                    dynamo=False,
                    opset_version=17,
                    input_names=["audio", "n"],
                    output_names=["spec"],
                    dynamic_axes={"audio": {0: "B", 1: "N"}, "n": {0: "B"}},
                )
            session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            names = {i.name for i in session.get_inputs()}  # the STFT graph does not use the lengths
            one = {k: v for k, v in {"audio": batch[:1], "n": np.array([batch.shape[1]])}.items() if k in names}
            many = {k: v for k, v in {"audio": batch, "n": np.full(n, batch.shape[1])}.items() if k in names}
            out[name] = {
                "one_x_realtime": rate(lambda s=session, f=one: s.run(None, f), seconds),
                "batch_x_realtime": rate(lambda s=session, f=many: s.run(None, f), seconds * n),
            }
            if name == "onnx_dft_conv":
                out[name]["max_abs_diff_vs_numpy"] = float(
                    np.abs(session.run(None, one)[0][0] - spectrogram(audio[0], cfg)).max()
                )
    with torch.inference_mode():
        torch.set_num_threads(1)
        out["numpy"] = {
            "one_x_realtime": rate(lambda: spectrogram(audio[0], cfg), seconds),
            "batch_x_realtime": rate(lambda: [spectrogram(a, cfg) for a in audio], seconds * n),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", type=Path, default=REPO / "models" / "an4.pth")
    p.add_argument(
        "--manifests",
        type=Path,
        nargs="+",
        default=[REPO / "data" / "an4_val_manifest.csv", REPO / "data" / "an4_test_manifest.csv"],
    )
    p.add_argument(
        "--calibration-manifest",
        type=Path,
        default=None,
        help="also compare int8 with statically quantized convolutions, calibrated on this audio",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out-dir", type=Path, default=None, help="keep the exported files here")
    p.add_argument("--front-end-only", action="store_true", help="only time the feature front ends")
    args = p.parse_args(argv)
    results: dict = {"front_end": front_end()}
    fe = results["front_end"]
    print("features, 1 thread, x realtime     one utterance   16 utterances")
    for name in ("numpy", "onnx_dft_conv", "onnx_stft_op"):
        print(f"  {name:32s} {fe[name]['one_x_realtime']:13.0f} {fe[name]['batch_x_realtime']:15.0f}")
    if not args.front_end_only:
        missing = [str(m) for m in [args.model_path, *args.manifests] if not m.is_file()]
        if missing:
            print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
            out_dir = args.out_dir or Path(tmp)
            out_dir.mkdir(parents=True, exist_ok=True)
            results["compare"] = compare(
                args.model_path, args.manifests, args.calibration_manifest, args.threads, args.batch_size, out_dir
            )
            log("speed: one thread, CPU time and wall clock, WAV -> text")
            results["speed"] = cpu_time_speed(args.model_path, results["compare"]["files"])
        for manifest, per_set in results["compare"]["sets"].items():
            print(f"\n{manifest}")
            print(f"  {'variant':18s} {'WER':>7s} {'CER':>7s} {'max |diff|':>11s} {'same hyps':>10s} {'model x rt':>10s}")
            for name, r in per_set.items():
                print(
                    f"  {name:18s} {r['wer']:7.3f} {r['cer']:7.3f} {r['max_abs_diff']:11.2e} "
                    f"{r['same_hypotheses']:>4d}/{r['utterances']:<5d} {r['model_x_realtime']:10.1f}"
                )
        sp = results["speed"]
        print(
            f"\nWAV -> text, 1 thread, x realtime per CPU-second (per wall second), {sp['audio_seconds']} s in "
            f"{sp['files']} files"
        )
        print(f"  {'variant':18s} {'batches of 16':>22s} {'one file at a time':>22s}")
        for name, r in sp.items():
            if isinstance(r, dict):
                print(
                    f"  {name:18s} {r['batched_cpu']:12.1f} ({r['batched_wall']:6.1f}) "
                    f"{r['single_cpu']:13.1f} ({r['single_wall']:6.1f})"
                )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
