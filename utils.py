"""Helpers shared by train.py, test.py and transcribe.py.

Checkpoints: one versioned, self-describing format of plain data that loads with
``torch.load(path, weights_only=True)``::

    {"format": "deepspeech-ctc", "format_version": 1,
     "model_config": asdict(ModelConfig), "audio_config": AudioConfig.to_dict(),
     "labels": ["_", "'", "A", ...], "state_dict": {clean keys: tensors},
     # optional: "weights_dtype": "float16" (weights stored in fp16, fp32 again on load)
     # training only, passed as **extra: "optimizer", "scheduler", "sampler", "rng",
     # "epoch", "step", "history" (dict of per-epoch lists: epoch, wer, cer, ...), "args"
    }
"""
from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from data.data_loader import AudioConfig
from model import AcousticModel, ModelConfig, build_model

# ---------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "deepspeech-ctc"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model_config", "audio_config", "labels", "state_dict")
RESERVED_KEYS = REQUIRED_KEYS + ("weights_dtype",)
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that cannot be saved or used; the message names the file and the fix."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel (``.module``) and
    torch.compile (``._orig_mod``) wrappers, in any nesting."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def to_plain_data(obj: Any) -> Any:
    """Convert common non-plain values to plain data that loads with ``weights_only=True``:
    ``Path`` -> str, numpy arrays -> tensors, numpy scalars -> Python numbers, sets ->
    sorted lists, recursing through dicts, lists and tuples. Anything else is returned
    unchanged (and :func:`save_checkpoint` then names it)."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: to_plain_data(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain_data(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain_data(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(to_plain_data(v) for v in obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _non_plain(obj: Any, where: str) -> str | None:
    """Where in ``obj`` the first value that is not plain data sits, or None."""
    if type(obj) in _PLAIN_SCALARS or isinstance(obj, torch.Tensor):
        return None
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if type(k) not in _PLAIN_SCALARS:
                return f"{where} has a key of type {type(k).__qualname__}"
            found = _non_plain(v, f"{where}[{k!r}]")
            if found:
                return found
        return None
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            found = _non_plain(v, f"{where}[{i}]")
            if found:
                return found
        return None
    return f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}"


def save_checkpoint(path: str | Path, model: nn.Module, audio_cfg: AudioConfig, labels: Sequence[str],
                    *, half: bool = False, **extra: Any) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, fsync, ``os.replace``).

    Args:
        path: target file; parent folders are created.
        model: a model from :func:`model.build_model`, possibly wrapped in DDP,
            DataParallel or torch.compile (the saved keys are the bare model's).
        audio_cfg: the features the model was trained on.
        labels: the model's labels, blank first.
        half: store floating-point weights as fp16 (half the size, for shipping);
            :func:`load_checkpoint` restores them to fp32.
        **extra: plain data only (dict/list/tuple/str/int/float/bool/None/tensors),
            e.g. optimizer/scheduler state, epoch, step, history, args. See
            :func:`to_plain_data` for converting paths and numpy values.

    Raises:
        CheckpointError: ``extra`` holds non-plain data or a reserved key, or the
            model has no ``cfg``. Nothing is written then.
    """
    path = Path(path)
    bare = unwrap_model(model)
    cfg = getattr(bare, "cfg", None)
    if not isinstance(cfg, ModelConfig):
        raise CheckpointError(f"{path}: cannot save a {type(bare).__name__}; build the model with model.build_model")
    if len(labels) != cfg.n_classes:
        raise CheckpointError(f"{path}: {len(labels)} labels for a model with {cfg.n_classes} classes")
    reserved = sorted(set(extra) & set(RESERVED_KEYS))
    if reserved:
        raise CheckpointError(f"{path}: extra keys {reserved} are reserved by the checkpoint format; rename them")
    problem = _non_plain(extra, "extra")
    if problem:
        raise CheckpointError(
            f"{path}: {problem}, which torch.load(weights_only=True) refuses. Store only "
            "dict/list/tuple/str/int/float/bool/None/tensors (utils.to_plain_data converts paths and numpy values)."
        )
    state_dict = {}
    for key, value in bare.state_dict().items():
        value = value.detach().to("cpu")
        if half and value.is_floating_point():
            value = value.half()
        state_dict[key] = value
    package = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": asdict(cfg),
        "audio_config": audio_cfg.to_dict(),
        "labels": list(labels),
        "state_dict": state_dict,
        **extra,
    }
    if half:
        package["weights_dtype"] = "float16"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden *.tmp name in the target folder: same filesystem for os.replace, and never
    # mistaken for a checkpoint if the process dies mid-write.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(package, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: not every OS lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe_foreign(obj: dict) -> str:
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "a bare state_dict (weights without model config, audio config or labels)"
    if "hidden_size" in obj and "state_dict" in obj:
        return "a deepspeech.pytorch model package (its format is not supported)"
    if "hyper_parameters" in obj and "state_dict" in obj:
        return "a PyTorch Lightning checkpoint"
    return f"a dict with keys {sorted(map(str, obj))[:8]} but no 'format' key"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    Loads with ``torch.load(..., weights_only=True)``; fp16-stored weights come back
    as fp32. The weights are checked against the model config (names and shapes).

    Returns:
        The package dict (see the module docstring).

    Raises:
        CheckpointError: missing, empty, truncated, corrupt or foreign file; an
            unknown or newer format version; missing keys; a model/audio config or
            labels that do not make sense; weights that do not match the config.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found; check the path (train.py writes --model-path)")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file; give the path of a checkpoint (.pth) file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes), probably an interrupted copy; copy or train it again")
    with open(path, "rb") as f:
        looks_zip = f.read(4) == b"PK\x03\x04"  # torch.save's zip container
    try:
        with warnings.catch_warnings():
            # A foreign pickle makes torch warn about its protocol before failing; the error says it all.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e) and zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path}: holds Python objects other than plain data (a pickled model or another toolkit's "
                "file?); checkpoints are only loaded with weights_only=True. Re-save it with utils.save_checkpoint"
            ) from None
        if looks_zip:
            raise CheckpointError(
                f"{path}: truncated or corrupt checkpoint (an incomplete or damaged zip archive); "
                "copy it again or use an earlier checkpoint"
            ) from None
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (torch.load cannot read it); use a file written by train.py"
        ) from None
    return validate_package(obj, path)


def validate_package(obj: Any, path: str | Path) -> dict:
    """Check a loaded package (see :func:`load_checkpoint`) and restore fp16 weights to fp32."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a deepspeech-ctc checkpoint (holds a {type(obj).__name__}, not a dict)")
    if obj.get("format") != CHECKPOINT_FORMAT:
        what = _describe_foreign(obj) if "format" not in obj else f"format {obj['format']!r}"
        raise CheckpointError(
            f"{path}: not a deepspeech-ctc checkpoint ({what}); train a model with train.py, "
            "or save one with utils.save_checkpoint"
        )
    version = obj.get("format_version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path}: unknown checkpoint format_version {version!r}; the file is damaged or foreign")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version} is newer than this code reads ({FORMAT_VERSION}); "
            "update deepspeech-ctc"
        )
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; the file is damaged or was not written by train.py")
    try:
        cfg = ModelConfig.from_dict(obj["model_config"])
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: bad model_config ({e})") from None
    try:
        audio_cfg = AudioConfig.from_dict(obj["audio_config"])
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: bad audio_config ({e})") from None
    labels = obj["labels"]
    if not isinstance(labels, list) or not all(isinstance(c, str) and len(c) == 1 for c in labels):
        raise CheckpointError(f"{path}: labels must be a list of single characters")
    if len(labels) != cfg.n_classes:
        raise CheckpointError(f"{path}: {len(labels)} labels but the model has {cfg.n_classes} output classes")
    if audio_cfg.n_freq != cfg.n_features:
        raise CheckpointError(
            f"{path}: audio config gives {audio_cfg.n_freq} features but the model expects {cfg.n_features}"
        )
    state_dict = obj["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: state_dict must map names to tensors")
    _check_state_dict(cfg, state_dict, path)
    if obj.get("weights_dtype", "float32") not in ("float32", "float16"):
        raise CheckpointError(f"{path}: unknown weights_dtype {obj['weights_dtype']!r}; expected float32 or float16")
    if obj.get("weights_dtype") == "float16":
        obj["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    return obj


def _check_state_dict(cfg: ModelConfig, state_dict: dict, path: str | Path) -> None:
    """Names and shapes of the weights against a model built on the meta device (no memory)."""
    with torch.device("meta"):
        expected = build_model(cfg).state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        parts = []
        shapes = {k: f"{k} {list(state_dict[k].shape)} vs {list(expected[k].shape)}" for k in wrong}
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape (file vs config)", wrong)):
            if keys:
                shown = ", ".join(shapes.get(k, k) for k in keys[:3])
                parts.append(f"{label}: {shown}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else ""))
        raise CheckpointError(
            f"{path}: weights do not match the model config ({'; '.join(parts)}); the file is damaged "
            "or its model_config was edited"
        )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[AcousticModel, dict]:
    """Build the model a checkpoint describes and load its weights.

    Returns:
        (model in eval mode on ``device``, the package dict from :func:`load_checkpoint`).
    """
    pkg = load_checkpoint(path)
    model = build_model(ModelConfig.from_dict(pkg["model_config"]))
    try:
        model.load_state_dict(pkg["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not load into the model ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), pkg


def package_audio_config(pkg: dict) -> AudioConfig:
    """The AudioConfig stored in a checkpoint package."""
    return AudioConfig.from_dict(pkg["audio_config"])


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Corpus-level results of :func:`evaluate`. ``wer``/``cer`` are percentages."""

    loss: float
    wer: float
    cer: float
    n_utterances: int
    utterances: list[dict] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    decoder,
    device: torch.device | str = "cpu",
    amp: bool = False,
    half: bool = False,
    keep_outputs: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Run ``model`` over ``loader``: mean CTC loss per utterance, corpus-level WER/CER.

    Args:
        loader: yields ``data.data_loader.Batch`` objects.
        decoder: anything with ``decode(log_probs, lengths) -> list[list[Hypothesis]]``.
        amp: autocast (fp16 on CUDA, bf16 on CPU). ``half``: the model's weights are fp16.
        keep_outputs: also return each utterance's log-probs, (T_i, C) fp16 on CPU.
        progress: a tqdm bar over batches.

    Returns:
        EvalResult with per-utterance ``{"path", "reference", "hypothesis", "wer", "cer"}``.
    """
    from tqdm import tqdm

    from decoder import ErrorRate, char_errors, word_errors

    device = torch.device(device)
    was_training = model.training
    model.eval()
    total = ErrorRate()
    loss_sum, n = 0.0, 0
    utterances: list[dict] = []
    outputs: list[torch.Tensor] = []
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not progress, leave=False):
        inputs = batch.inputs.to(device)
        if half:
            inputs = inputs.half()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            log_probs, out_lengths = model(inputs, batch.input_lengths.to(device))
        log_probs = log_probs.float()
        losses = nn.functional.ctc_loss(
            log_probs.transpose(0, 1), batch.targets.to(device), out_lengths, batch.target_lengths.to(device),
            blank=0, reduction="none", zero_infinity=True,
        )
        loss_sum += float(losses.sum())
        n += len(batch.texts)
        hyps = decoder.decode(log_probs.cpu(), out_lengths.cpu())
        for i, (ref, paths) in enumerate(zip(batch.texts, hyps)):
            hyp = paths[0].text
            total.update([ref], [hyp])
            w_edits, w_n = word_errors(ref, hyp)
            c_edits, c_n = char_errors(ref, hyp)
            utterances.append({
                "path": batch.paths[i], "reference": ref, "hypothesis": hyp,
                "wer": 100.0 * w_edits / max(1, w_n), "cer": 100.0 * c_edits / max(1, c_n),
            })
            if keep_outputs:
                outputs.append(log_probs[i, : int(out_lengths[i])].to(torch.float16).cpu())
    model.train(was_training)
    return EvalResult(loss_sum / max(1, n), total.wer, total.cer, n, utterances, outputs)


# ----------------------------------------------------------------------------- inference CLI helpers


def add_inference_args(parser: argparse.ArgumentParser, default_model: str = "models/an4.pth") -> None:
    """Flags shared by test.py and transcribe.py. Audio settings and labels come from the model."""
    g = parser.add_argument_group("inference")
    g.add_argument("--model-path", default=default_model, help="checkpoint written by train.py")
    g.add_argument("--cuda", action="store_true", help="run on the GPU")
    g.add_argument("--half", action="store_true",
                   help="reduced precision: fp16 autocast on CUDA, bf16 autocast on CPU")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def inference_device(args: argparse.Namespace) -> torch.device:
    if args.cuda and not torch.cuda.is_available():
        raise ValueError("--cuda given but no CUDA device is available; drop --cuda to run on CPU")
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return torch.device("cuda" if args.cuda else "cpu")
