"""Checkpoints: one versioned, self-describing file of plain data.

A checkpoint loads with ``torch.load(path, weights_only=True)`` and holds::

    {"format": "deepspeech-ctc", "format_version": 2,
     "model_config": asdict(ModelConfig), "audio_config": AudioConfig.to_dict(),
     "labels": ["_", "'", "A", ...], "state_dict": {clean keys: tensors},
     "weights_dtype": "float32" | "float16",     # fp16 weights are fp32 again on load
     "training": {...},                          # optional: TrainingState fields
     "imported_from": {"toolkit": ..., ...}}     # optional: a model converted from another toolkit

In Python it is a :class:`Checkpoint`; :func:`load_checkpoint` validates a file and returns
one, :func:`save_checkpoint` writes one atomically. Format 1 files (training keys at the
top level) still load, and so do deepspeech.pytorch v2 model packages and V3 Lightning
checkpoints, converted in memory by dspt_import.py. ``python model.py --model-path M``
prints what a file holds (:func:`describe`) and ``--export`` writes a release copy
(:func:`export`).
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

import dspt_import
from data.audio import AudioConfig
from model import ABSENT_FIELDS, AcousticModel, ModelConfig, build_model, describe_architecture
from utils import FILE_LOAD_ERRORS, atomic_write, dataclass_from_dict

CHECKPOINT_FORMAT = "deepspeech-ctc"
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format", "format_version", "model_config", "audio_config", "labels", "state_dict")
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that cannot be saved or used; the message names the file and the fix."""


class PythonObjectsError(CheckpointError):
    """A file that holds Python objects other than plain data, which ``weights_only=True`` refuses."""


@dataclass
class TrainingState:
    """What train.py stores beside the weights. ``epoch``..``args`` describe the run and stay
    in exported copies; the rest is needed to resume exactly and is dropped on export."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: dict = field(default_factory=dict)  # per-epoch lists, see logger.HISTORY_KEYS
    best_wer: float | None = None
    counters: dict = field(default_factory=dict)  # skipped utterances and steps
    args: dict = field(default_factory=dict)  # train.py's arguments
    optimizer: dict | None = None
    scheduler: dict | None = None
    scaler: dict | None = None
    sampler: dict | None = None
    rng: dict | None = None
    best_state_dict: dict | None = None  # weights of the best epoch so far, to write --model-path at the end

    RESUME_FIELDS = ("optimizer", "scheduler", "scaler", "sampler", "rng", "best_state_dict")

    @property
    def resumable(self) -> bool:
        return self.optimizer is not None and self.scheduler is not None and self.sampler is not None

    def run_info(self) -> "TrainingState":
        """A copy without the resume-only fields (what an exported model keeps)."""
        return TrainingState(**{f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RESUME_FIELDS})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Checkpoint:
    """A loaded or to-be-saved checkpoint."""

    model_config: ModelConfig
    audio_config: AudioConfig
    labels: list[str]
    state_dict: dict[str, torch.Tensor]
    training: TrainingState | None = None
    weights_dtype: str = "float32"  # how the weights are (or were) stored in the file
    path: Path | None = None
    imported_from: dict | None = None  # a converted model: the toolkit, its version and file (dspt_import)
    averaged_from: dict | None = None  # weights averaged over checkpoints: their files and epochs (average_checkpoints)

    @classmethod
    def from_model(
        cls, model: nn.Module, audio_config: AudioConfig, labels: Sequence[str], training: TrainingState | None = None
    ) -> "Checkpoint":
        """The weights of ``model`` (unwrapped from DDP / DataParallel / torch.compile), copied to CPU."""
        bare = unwrap_model(model)
        cfg = getattr(bare, "cfg", None)
        if not isinstance(cfg, ModelConfig):
            raise CheckpointError(f"cannot save a {type(bare).__name__}; build the model with model.build_model")
        state = {k: v.detach().to("cpu", copy=True) for k, v in bare.state_dict().items()}
        return cls(cfg, audio_config, list(labels), state, training)

    def build_model(self, device: str | torch.device = "cpu") -> AcousticModel:
        """The model this checkpoint describes, with its weights, in eval mode on ``device``."""
        model = build_model(self.model_config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{self.path}: weights do not load into the model ({str(e).splitlines()[0]})") from None
        return model.to(device).eval()

    @property
    def n_parameters(self) -> int:
        return sum(
            v.numel()
            for k, v in self.state_dict.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )


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


def save_checkpoint(path: str | Path, ckpt: Checkpoint, fp16_weights: bool = False) -> Path:
    """Write ``ckpt`` atomically (temp file in the same folder, fsync, ``os.replace``).

    ``fp16_weights`` stores floating-point weights as fp16 (half the size, for shipping);
    :func:`load_checkpoint` restores them to fp32.

    Raises:
        CheckpointError: the training state holds non-plain data, or the labels do not
            match the model. Nothing is written then.
    """
    path = Path(path)
    cfg = ckpt.model_config
    if len(ckpt.labels) != cfg.n_classes:
        raise CheckpointError(f"{path}: {len(ckpt.labels)} labels for a model with {cfg.n_classes} classes")
    training = ckpt.training.to_dict() if ckpt.training is not None else None
    problem = _non_plain(training, "training") if training is not None else None
    problem = problem or _non_plain(ckpt.imported_from, "imported_from") or _non_plain(ckpt.averaged_from, "averaged_from")
    if problem:
        raise CheckpointError(
            f"{path}: {problem}, which torch.load(weights_only=True) refuses. Store only "
            "dict/list/tuple/str/int/float/bool/None/tensors (checkpoint.to_plain_data converts paths and numpy)."
        )
    state_dict = {k: v.half() if fp16_weights and v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    package = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": asdict(cfg),
        "audio_config": ckpt.audio_config.to_dict(),
        "labels": list(ckpt.labels),
        "state_dict": state_dict,
        "weights_dtype": "float16" if fp16_weights else "float32",
    }
    if training is not None:
        if fp16_weights and training.get("best_state_dict"):
            training["best_state_dict"] = {
                k: v.half() if v.is_floating_point() else v for k, v in training["best_state_dict"].items()
            }
        package["training"] = training
    if ckpt.imported_from is not None:
        package["imported_from"] = ckpt.imported_from
    if ckpt.averaged_from is not None:
        package["averaged_from"] = ckpt.averaged_from
    with atomic_write(path, "wb") as f:
        torch.save(package, f)
    return path


def _describe_foreign(obj: dict) -> str:
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "a bare state_dict (weights without model config, audio config or labels)"
    if "hidden_size" in obj and "state_dict" in obj:
        return "a deepspeech.pytorch-like model package without its labels or audio_conf"
    if "hyper_parameters" in obj and "state_dict" in obj:
        return "a PyTorch Lightning checkpoint"
    return f"a dict with keys {sorted(map(str, obj))[:8]} but no 'format' key"


def read_package(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for every way a file can be unusable."""
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
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, *FILE_LOAD_ERRORS) as e:
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e) and zipfile.is_zipfile(path):
            raise PythonObjectsError(
                f"{path}: holds Python objects other than plain data (a pickled model or another toolkit's "
                "file?); checkpoints are only loaded with weights_only=True. Re-save it with checkpoint.save_checkpoint"
            ) from None
        if looks_zip:
            raise CheckpointError(
                f"{path}: truncated or corrupt checkpoint (an incomplete or damaged zip archive); "
                "copy it again or use an earlier checkpoint"
            ) from None
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (torch.load cannot read it); use a file written by train.py"
        ) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save_checkpoint` (format 1 or 2).

    deepspeech.pytorch v2 packages and V3 Lightning checkpoints are converted in memory
    (dspt_import.py, with reflect padding). A V3 file holds Python objects: it is read
    again by :func:`dspt_import.load_restricted`, also with ``weights_only=True``, with inert
    stand-ins for an allow-list of its config classes checked before unpickling.

    Raises:
        CheckpointError: missing, empty, truncated, corrupt or foreign file; a pickle payload
            or other Python objects; an unknown or newer format version; missing keys; a
            model/audio config or labels that do not make sense; weights that do not match
            the config; a deepspeech.pytorch file whose parts disagree.
    """
    python_objects: PythonObjectsError | None = None
    try:
        obj = read_package(path, map_location)
    except PythonObjectsError as e:
        python_objects = e
    try:
        if python_objects is not None:
            # A V3 .ckpt holds OmegaConf configs: loaded again with stand-ins for an allow-list
            # of names; anything else is refused, naming it, before unpickling.
            obj = dspt_import.load_restricted(path, map_location)
        if python_objects is not None or (isinstance(obj, dict) and "format" not in obj):
            if dspt_import.detect_version(obj):
                converted = dspt_import.convert(obj, path)
                return validate_package({"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **converted}, path)
            if python_objects is not None:
                raise python_objects
    except dspt_import.DeepSpeechPytorchError as e:
        raise CheckpointError(str(e)) from None
    return validate_package(obj, path)


def validate_package(obj: Any, path: str | Path) -> Checkpoint:
    """Check a loaded package (see :func:`load_checkpoint`) and build the :class:`Checkpoint`."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a deepspeech-ctc checkpoint (holds a {type(obj).__name__}, not a dict)")
    if obj.get("format") != CHECKPOINT_FORMAT:
        what = _describe_foreign(obj) if "format" not in obj else f"format {obj['format']!r}"
        raise CheckpointError(
            f"{path}: not a deepspeech-ctc checkpoint ({what}); train a model with train.py, "
            "or save one with checkpoint.save_checkpoint"
        )
    version = obj.get("format_version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path}: unknown checkpoint format_version {version!r}; the file is damaged or foreign")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version} is newer than this code reads ({FORMAT_VERSION}); update deepspeech-ctc"
        )
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; the file is damaged or was not written by train.py")
    try:
        cfg = dataclass_from_dict(ModelConfig, {**ABSENT_FIELDS, **obj["model_config"]})
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
        raise CheckpointError(f"{path}: audio config gives {audio_cfg.n_freq} features but the model expects {cfg.n_features}")
    state_dict = obj["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: state_dict must map names to tensors")
    check_state_dict(cfg, state_dict, path)
    weights_dtype = obj.get("weights_dtype", "float32")
    if weights_dtype not in ("float32", "float16"):
        raise CheckpointError(f"{path}: unknown weights_dtype {weights_dtype!r}; expected float32 or float16")

    def as_fp32(sd: dict) -> dict:
        return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}

    if version == 1:  # training keys were stored at the top level
        training_dict = {k: obj[k] for k in (f.name for f in fields(TrainingState)) if k in obj}
    else:
        training_dict = obj.get("training")
        if training_dict is not None and not isinstance(training_dict, dict):
            raise CheckpointError(f"{path}: 'training' must be a dict; the file is damaged")
    training = TrainingState.from_dict(training_dict) if training_dict else None
    if training is not None and training.best_state_dict:
        training.best_state_dict = as_fp32(training.best_state_dict)
    imported_from = obj.get("imported_from")
    if imported_from is not None and not isinstance(imported_from, dict):
        raise CheckpointError(f"{path}: 'imported_from' must be a dict; the file is damaged")
    averaged_from = obj.get("averaged_from")
    if averaged_from is not None and not isinstance(averaged_from, dict):
        raise CheckpointError(f"{path}: 'averaged_from' must be a dict; the file is damaged")
    return Checkpoint(
        cfg, audio_cfg, list(labels), as_fp32(state_dict), training, weights_dtype, Path(path), imported_from, averaged_from
    )


def check_state_dict(cfg: ModelConfig, state_dict: dict, path: str | Path) -> None:
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


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[AcousticModel, Checkpoint]:
    """Load a checkpoint and build its model: (model in eval mode on ``device``, checkpoint)."""
    ckpt = load_checkpoint(path)
    return ckpt.build_model(device), ckpt


# ---------------------------------------------------------------------------- describe / export


def _metric_line(entry: dict) -> str:
    parts = []
    for key in ("wer", "cer", "val_loss", "train_loss"):
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{key.upper() if key in ('wer', 'cer') else key} {value:.3f}")
    if "epoch" in entry:
        parts.append(f"(epoch {entry['epoch']})")
    return "  ".join(parts) if parts else "-"


def history_rows(history: object) -> list[dict]:
    """Per-epoch dicts from a history stored as a dict of equal-length lists (train.py's
    format, see logger.py) or as a list of per-epoch dicts."""
    if isinstance(history, dict):
        columns = {k: v for k, v in history.items() if isinstance(v, list)}
        n = max((len(v) for v in columns.values()), default=0)
        return [{k: v[i] for k, v in columns.items() if i < len(v)} for i in range(n)]
    if isinstance(history, list):
        return [row for row in history if isinstance(row, dict)]
    return []


def describe(ckpt: Checkpoint) -> list[str]:
    """Human-readable lines about a checkpoint: architecture, size, labels, audio, metrics."""
    audio = ckpt.audio_config.to_dict()
    if audio.get("feature_mean") is not None:
        audio["feature_mean"] = audio["feature_std"] = f"<{ckpt.audio_config.n_freq} values>"
    source = ckpt.imported_from
    lines = [
        *(
            [f"imported from: {source.get('toolkit')} {source.get('version')} ({source.get('file')})"]
            if source is not None
            else []
        ),
        f"architecture:  {describe_architecture(ckpt.model_config)}",
        f"parameters:    {ckpt.n_parameters:,}",
        *(
            [f"weights:       the average of {len(avg['files'])} checkpoints, epochs {avg['epochs']}"]
            if (avg := ckpt.averaged_from) is not None
            else []
        ),
        f"weights saved: {ckpt.weights_dtype}",
        f"labels ({len(ckpt.labels)}):   {''.join(ckpt.labels)!r}",
        "audio:         " + ", ".join(f"{k}={v}" for k, v in audio.items()),
    ]
    t = ckpt.training
    if t is None:
        lines.append("epochs:        unknown")
        lines.append("metrics:       none stored")
        lines.append("training state: none (inference only)")
        return lines
    rows = history_rows(t.history)
    lines.append(f"epochs:        {t.epoch} (step {t.step})")
    if rows:
        lines.append(f"last:          {_metric_line(rows[-1])}")
        scored = [row for row in rows if isinstance(row.get("wer"), (int, float)) and math.isfinite(row["wer"])]
        if scored:
            lines.append(f"best:          {_metric_line(min(scored, key=lambda row: row['wer']))}")
    else:
        lines.append("metrics:       none stored")
    resume = [k for k in ("optimizer", "scheduler", "sampler", "rng", "scaler") if getattr(t, k) is not None]
    lines.append(f"training state: {', '.join(resume) if resume else 'none (inference only)'}")
    return lines


def export(ckpt: Checkpoint, path: str | Path, fp16_weights: bool = False) -> Path:
    """A release copy of ``ckpt``: weights, configs, labels, the run's history and where an
    imported model came from, without the state needed only to resume training."""
    training = ckpt.training.run_info() if ckpt.training is not None else None
    release = Checkpoint(
        ckpt.model_config,
        ckpt.audio_config,
        ckpt.labels,
        ckpt.state_dict,
        training,
        imported_from=ckpt.imported_from,
        averaged_from=ckpt.averaged_from,
    )
    return save_checkpoint(path, release, fp16_weights=fp16_weights)


def average_checkpoints(paths: Sequence[str | Path]) -> Checkpoint:
    """The element-wise mean of the weights (and BatchNorm statistics) of checkpoints of one run,
    e.g. its last epochs (``train.py --checkpoint``): a release checkpoint with the configs, labels
    and history of the last one and ``averaged_from`` naming the files and their epochs.

    Raises:
        CheckpointError: no paths, an unreadable file, or checkpoints of different architectures,
            labels or audio configs.
    """
    if not paths:
        raise CheckpointError("no checkpoints to average")
    ckpts = [load_checkpoint(p) for p in paths]
    last = ckpts[-1]
    for c in ckpts[:-1]:
        for what in ("model_config", "labels", "audio_config"):
            if getattr(c, what) != getattr(last, what):
                raise CheckpointError(f"{c.path} and {last.path}: different {what}; only checkpoints of one model average")
    state = {}
    for name, tensor in last.state_dict.items():
        if tensor.is_floating_point():
            state[name] = torch.stack([c.state_dict[name].double() for c in ckpts]).mean(0).to(tensor.dtype)
        else:  # counters (BatchNorm's num_batches_tracked): the last one's
            state[name] = tensor
    epochs = [c.training.epoch if c.training is not None else None for c in ckpts]
    averaged_from = {"files": [Path(p).name for p in paths], "epochs": epochs}
    return Checkpoint(last.model_config, last.audio_config, last.labels, state, last.training, averaged_from=averaged_from)
