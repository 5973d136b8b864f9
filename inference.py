"""Running a trained model: the inference flags, loading a recognizer, transcribing audio
and evaluating on a manifest.

This module imports no PyTorch at load time: :class:`TorchRecognizer` and :func:`evaluate`
import it when used, so a deployment that runs an exported model needs no torch.

* :class:`InferenceConfig` owns the flags test.py, transcribe.py and the server share.
* :func:`load_recognizer` returns a :class:`Recognizer`: audio config, labels, frame
  shift, and ``log_probs(features)`` from spectrograms. A ``.onnx`` model path gives an
  ONNX :class:`OnnxRecognizer` (onnxruntime, no torch), anything else a
  :class:`TorchRecognizer` (a checkpoint).
* :func:`transcribe_audio` turns a waveform into text and word times (long audio in
  chunks cut at quiet points); :func:`transcribe_many` does the same for many waveforms,
  running their chunks through the model in length-sorted batches.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from data.audio import AudioConfig, spectrogram

DEFAULT_MODEL = "models/an4.pth"
MAX_BATCH_SECONDS = 120.0  # padded audio per batch in transcribe_many


@dataclass(frozen=True)
class InferenceConfig:
    """Which model and how to run it."""

    model_path: Path = Path(DEFAULT_MODEL)
    cuda: bool = False
    amp: bool = False  # autocast: fp16 on CUDA, bf16 on CPU
    threads: int | None = None  # torch CPU threads, or onnxruntime intra-op threads

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser, default_model: str = DEFAULT_MODEL) -> None:
        g = parser.add_argument_group("model")
        g.add_argument(
            "--model-path",
            type=Path,
            default=Path(default_model),
            help="checkpoint written by train.py, or an .onnx file from model.py --export-onnx (run by onnxruntime)",
        )
        g.add_argument("--cuda", action="store_true", help="run on the GPU")
        g.add_argument(
            "--amp",
            "--half",
            dest="amp",
            action="store_true",
            help="reduced-precision compute: fp16 autocast on CUDA, bf16 autocast on CPU "
            "(--half is deepspeech.pytorch's name for it)",
        )
        g.add_argument(
            "--threads",
            type=int,
            default=None,
            help="CPU threads: torch's, or onnxruntime's intra-op threads for an .onnx model (default: the library's choice)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "InferenceConfig":
        if args.threads is not None and args.threads < 1:
            raise ValueError("--threads must be >= 1")
        return cls(Path(args.model_path), args.cuda, args.amp, args.threads)


class Recognizer:
    """An acoustic model ready for inference, whatever runs it."""

    audio_config: AudioConfig
    labels: list[str]
    frame_shift: float  # seconds per output frame
    info: dict  # plain data about the model, for ``_meta`` in outputs

    def forward_padded(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, F, T) zero-padded spectrograms and (B,) lengths -> (B, T', C) float32
        log-probabilities and (B,) output lengths."""
        raise NotImplementedError

    def log_probs(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(F, T_i) spectrograms -> (T_i', C) float32 log-probabilities, one per input."""
        features = list(features)
        if not features:
            return []
        x, lengths = pad_features(features)
        out, out_lengths = self.forward_padded(x, lengths)
        return [out[i, : int(n)] for i, n in enumerate(np.asarray(out_lengths).tolist())]


def pad_features(features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(F, T_i) spectrograms -> (B, F, max T_i) zero-padded float32 and (B,) int64 lengths."""
    lengths = np.array([f.shape[1] for f in features], dtype=np.int64)
    x = np.zeros((len(features), features[0].shape[0], int(lengths.max())), dtype=np.float32)
    for i, f in enumerate(features):
        x[i, :, : f.shape[1]] = f
    return x, lengths


class TorchRecognizer(Recognizer):
    """A PyTorch acoustic model (:meth:`load` reads a checkpoint)."""

    def __init__(
        self,
        model: Any,
        audio_config: AudioConfig,
        labels: Sequence[str],
        device: Any = "cpu",
        amp: bool = False,
        info: dict | None = None,
    ) -> None:
        import torch

        self.model = model.eval()
        self.device = torch.device(device)
        self.amp = amp
        self.audio_config = audio_config
        self.labels = list(labels)
        self.frame_shift = model.frame_shift(audio_config.hop_length / audio_config.sample_rate)
        self.info = info or {"architecture": model.cfg.arch}

    @classmethod
    def load(cls, cfg: InferenceConfig) -> "TorchRecognizer":
        import torch

        from checkpoint import load_model

        if cfg.cuda and not torch.cuda.is_available():
            raise ValueError("--cuda given but no CUDA device is available; drop --cuda to run on the CPU")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = torch.device("cuda" if cfg.cuda else "cpu")
        model, ckpt = load_model(cfg.model_path, device)
        info = {
            "path": str(cfg.model_path),
            "name": cfg.model_path.name,
            "epochs": ckpt.training.epoch if ckpt.training else None,
            "architecture": model.cfg.arch,
        }
        return cls(model, ckpt.audio_config, ckpt.labels, device, cfg.amp, info)

    def forward_padded(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))[:, None]  # (B, F, T) -> (B, 1, F, T)
        amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        with torch.no_grad(), torch.autocast(self.device.type, dtype=amp_dtype, enabled=self.amp):
            out, out_lengths = self.model(x.to(self.device), torch.as_tensor(lengths, device=self.device))
        return out.float().cpu().numpy(), out_lengths.cpu().numpy()


class OnnxRecognizer(Recognizer):
    """An exported model run by onnxruntime on the CPU (or CUDA with onnxruntime-gpu)."""

    def __init__(self, path: str | Path, threads: int | None = None, cuda: bool = False) -> None:
        from onnx_runtime import INPUT_NAMES, OUTPUT_NAMES, STREAMING_FIELD, OnnxModelError, model_info, open_session

        path = Path(path)
        self.session, self.metadata = open_session(path, threads, cuda)
        if STREAMING_FIELD in self.metadata:
            raise OnnxModelError(
                f"{path}: a streaming step graph (exported with --streaming): run it with transcribe.py --stream, "
                "or export the checkpoint again without --streaming for offline use"
            )
        inputs = tuple(i.name for i in self.session.get_inputs())
        outputs = tuple(o.name for o in self.session.get_outputs())
        if inputs != INPUT_NAMES or outputs != OUTPUT_NAMES:
            raise OnnxModelError(
                f"{path}: graph inputs {inputs} / outputs {outputs}, expected {INPUT_NAMES} / "
                f"{OUTPUT_NAMES}; export the model again"
            )
        self.path = path
        self.audio_config: AudioConfig = self.metadata["audio_config"]
        self.labels = list(self.metadata["labels"])
        self.frame_shift = float(self.metadata["frame_shift"])
        self.info = model_info(path, self.metadata)

    @classmethod
    def load(cls, cfg: InferenceConfig) -> "OnnxRecognizer":
        if cfg.amp:
            raise ValueError("--half/--amp applies to PyTorch models; for a faster ONNX model export with --int8")
        return cls(cfg.model_path, cfg.threads, cfg.cuda)

    def forward_padded(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_probs, out_lengths = self.session.run(
            None,
            {
                "features": np.ascontiguousarray(features, dtype=np.float32),
                "lengths": np.asarray(lengths, dtype=np.int64).reshape(-1),
            },
        )
        return log_probs, out_lengths


def describe_onnx(path: str | Path) -> list[str]:
    """Human-readable lines about an exported file (``python model.py --model-path M.onnx``)."""
    from onnx_runtime import STREAMING_FIELD, open_session

    _, meta = open_session(path, threads=1)
    labels = meta["labels"]
    audio = meta["audio_config"].to_dict()
    if audio.get("feature_mean") is not None:
        audio["feature_mean"] = audio["feature_std"] = f"<{meta['audio_config'].n_freq} values>"
    cfg = meta["model_config"]
    arch = ", ".join(f"{k}={v}" for k, v in cfg.items()) if isinstance(cfg, dict) else str(cfg)
    lines = [
        f"format:        ONNX (opset {meta['opset']}), {meta['precision']}, {Path(path).stat().st_size / 2**20:.1f} MiB",
        f"architecture:  {arch}",
        f"labels ({len(labels)}):   {''.join(labels)!r}",
        "audio:         " + ", ".join(f"{k}={v}" for k, v in audio.items()),
        f"frame shift:   {float(meta['frame_shift']) * 1000:g} ms",
    ]
    stream = meta.get(STREAMING_FIELD)
    if isinstance(stream, dict) and isinstance(stream.get("states"), list):
        states = ", ".join(f"{s.get('input')} {tuple(s.get('shape', ()))}" for s in stream["states"] if isinstance(s, dict))
        lines.append(f"streaming:     step graph (transcribe.py --stream); states {states}")
    if meta["info"]:
        lines.append("exported from: " + ", ".join(f"{k} {v}" for k, v in meta["info"].items()))
    return lines


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of an exported file (loads the file into onnxruntime)."""
    from onnx_runtime import open_session

    return open_session(path, threads=1)[1]


def is_onnx_path(path: str | Path) -> bool:
    """Whether ``path`` names an exported ONNX model (by its suffix)."""
    return Path(path).suffix.lower() == ".onnx"


def load_recognizer(cfg: InferenceConfig) -> Recognizer:
    """The recognizer for ``cfg.model_path``: onnxruntime for ``.onnx`` files (torch is not
    imported then), PyTorch for checkpoints."""
    if is_onnx_path(cfg.model_path):
        return OnnxRecognizer.load(cfg)
    return TorchRecognizer.load(cfg)


# ---------------------------------------------------------------------------- transcription


def chunk_bounds(audio: np.ndarray, sample_rate: int, chunk_seconds: float) -> list[tuple[int, int]]:
    """Sample ranges covering ``audio``, each about ``chunk_seconds`` long, cut at the
    quietest 20 ms window within the last quarter of each chunk."""
    n = len(audio)
    size = int(chunk_seconds * sample_rate)
    if chunk_seconds <= 0 or n <= size:
        return [(0, n)]
    win = max(1, int(0.02 * sample_rate))
    bounds, start = [], 0
    while n - start > size:
        lo, hi = start + (3 * size) // 4, start + size
        frames = audio[lo:hi][: (hi - lo) // win * win].reshape(-1, win)
        cut = lo + int(np.argmin((frames**2).sum(axis=1))) * win + win // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


def transcribe_audio(recognizer: Recognizer, decoder: Any, audio: np.ndarray, chunk_seconds: float = 30.0) -> dict:
    """Transcribe one waveform (mono, at the recognizer's sample rate).

    Returns ``{"transcription", "words": [{"word", "start", "end"}], "alternatives": [...]}``
    with times in seconds from the start of the audio.
    """
    return transcribe_many(recognizer, decoder, [audio], chunk_seconds, batch_size=1)[0]


def transcribe_many(
    recognizer: Recognizer,
    decoder: Any,
    audios: Sequence[np.ndarray],
    chunk_seconds: float = 30.0,
    batch_size: int = 16,
    max_batch_seconds: float = MAX_BATCH_SECONDS,
) -> list[dict]:
    """:func:`transcribe_audio` for each waveform, with the model run on batches.

    Every waveform is cut into chunks (:func:`chunk_bounds`); the chunks of all waveforms
    are sorted by length and run through the model up to ``batch_size`` at a time, so
    padding stays small. A batch holds at most ``max_batch_seconds`` of padded audio (but
    always one chunk), which bounds memory for long recordings: onnxruntime's int8
    convolution needs about 7 MB per second of audio in a batch. Padding is masked by the
    model, so the results are those of one chunk at a time. Returns one result per
    waveform, in order.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    cfg = recognizer.audio_config
    chunks = [
        (i, start, end) for i, audio in enumerate(audios) for start, end in chunk_bounds(audio, cfg.sample_rate, chunk_seconds)
    ]
    order = sorted(range(len(chunks)), key=lambda k: chunks[k][2] - chunks[k][1])  # stable: ties keep file order
    groups: list[list[int]] = []
    budget = max_batch_seconds * cfg.sample_rate
    for k in order:  # ascending length: the chunk being added is the longest of its batch
        if groups and len(groups[-1]) < batch_size and (len(groups[-1]) + 1) * (chunks[k][2] - chunks[k][1]) <= budget:
            groups[-1].append(k)
        else:
            groups.append([k])
    paths: list[Any] = [None] * len(chunks)
    for group in groups:
        features = [spectrogram(audios[chunks[k][0]][chunks[k][1] : chunks[k][2]], cfg) for k in group]
        x, lengths = pad_features(features)
        log_probs, out_lengths = recognizer.forward_padded(x, lengths)
        for k, hyps in zip(group, decoder.decode(log_probs, out_lengths)):
            paths[k] = hyps
    by_audio: list[list[int]] = [[] for _ in audios]
    for k, (i, _, _) in enumerate(chunks):
        by_audio[i].append(k)
    results: list[dict] = []
    for ks in by_audio:
        texts, words, alternatives = [], [], []
        for k in ks:
            best = paths[k][0]
            offset = chunks[k][1] / cfg.sample_rate
            length = (chunks[k][2] - chunks[k][1]) / cfg.sample_rate
            if best.text:
                texts.append(best.text)
            words.extend(
                {"word": w["word"], "start": round(w["start"] + offset, 3), "end": round(w["end"] + offset, 3)}
                for w in best.words(recognizer.frame_shift, length)
            )
            alternatives.append([h.text for h in paths[k][1:]])
        result = {"transcription": " ".join(texts), "words": words}
        if any(alternatives):
            # alternatives of a single-chunk file; for long audio each chunk's list in order
            result["alternatives"] = alternatives[0] if len(alternatives) == 1 else alternatives
        results.append(result)
    return results


# ---------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Corpus-level results of :func:`evaluate`. ``wer``/``cer`` are percentages."""

    loss: float
    wer: float
    cer: float
    n_utterances: int
    utterances: list[dict] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)


def evaluate(
    model: Any,
    loader: Any,
    decoder: Any,
    device: Any = "cpu",
    amp: bool = False,
    keep_outputs: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Run a PyTorch ``model`` over ``loader``: mean CTC loss per utterance, corpus-level WER/CER.

    ``model`` may also be a :class:`Recognizer` (e.g. an ONNX model): its
    ``forward_padded`` gives the log-probs, and ``device``/``amp`` do not apply.

    Args:
        loader: yields ``data.data_loader.Batch`` objects.
        decoder: anything with ``decode(log_probs, lengths) -> list[list[Hypothesis]]``.
        amp: autocast (fp16 on CUDA, bf16 on CPU).
        keep_outputs: also return each utterance's log-probs, (T_i, C) fp16 tensors on CPU.
        progress: report progress (a bar on a terminal, lines in a log).

    Returns:
        EvalResult with per-utterance ``{"path", "reference", "hypothesis", "wer", "cer"}``.
    """
    import torch

    from decoder import ErrorRate, char_errors, word_errors
    from utils import Progress

    recognizer = model if isinstance(model, Recognizer) else None
    device = torch.device("cpu" if recognizer is not None else device)
    was_training = recognizer is None and model.training
    if recognizer is None:
        model.eval()
    total = ErrorRate()
    loss_sum, n = 0.0, 0
    utterances: list[dict] = []
    outputs: list[torch.Tensor] = []
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    with torch.no_grad():
        for batch in Progress(loader, desc="evaluating", unit="batch", disable=not progress):
            if not batch.paths:
                continue
            if recognizer is not None:
                out, out_lengths = recognizer.forward_padded(batch.inputs[:, 0].numpy(), batch.input_lengths.numpy())
                log_probs, out_lengths = torch.from_numpy(out), torch.from_numpy(out_lengths).long()
            else:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    log_probs, out_lengths = model(batch.inputs.to(device), batch.input_lengths.to(device))
            log_probs = log_probs.float()
            losses = torch.nn.functional.ctc_loss(
                log_probs.transpose(0, 1),
                batch.targets.to(device),
                out_lengths,
                batch.target_lengths.to(device),
                blank=0,
                reduction="none",
                zero_infinity=True,
            )
            loss_sum += float(losses.sum())
            n += len(batch.texts)
            hyps = decoder.decode(log_probs.cpu(), out_lengths.cpu())
            for i, (ref, paths) in enumerate(zip(batch.texts, hyps)):
                hyp = paths[0].text
                total.update([ref], [hyp])
                w_edits, w_n = word_errors(ref, hyp)
                c_edits, c_n = char_errors(ref, hyp)
                utterances.append(
                    {
                        "path": batch.paths[i],
                        "reference": ref,
                        "hypothesis": hyp,
                        "wer": 100.0 * w_edits / max(1, w_n),
                        "cer": 100.0 * c_edits / max(1, c_n),
                    }
                )
                if keep_outputs:
                    outputs.append(log_probs[i, : int(out_lengths[i])].to(torch.float16).cpu())
    if recognizer is None:
        model.train(was_training)
    return EvalResult(loss_sum / max(1, n), total.wer, total.cer, n, utterances, outputs)
