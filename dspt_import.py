"""Import deepspeech.pytorch checkpoints: v2 model packages and V3 Lightning checkpoints.

    python model.py --import-deepspeech-pytorch librispeech_pretrained_v2.pth --export models/librispeech.pth
    python model.py --import-deepspeech-pytorch an4_pretrained_v3.ckpt --export models/an4_v3.pth --pad-mode constant

``test.py``, ``transcribe.py`` and ``model.py --model-path`` also take such a file as it
is: :func:`checkpoint.load_checkpoint` reads it with :func:`load_restricted` where it holds
Python objects, and turns what :func:`convert` returns into a :class:`checkpoint.Checkpoint`
(with reflect padding, below). This module sits below checkpoint.py: it reads and
converts, and ``model.py --import-deepspeech-pytorch`` saves the result. Nothing of
deepspeech.pytorch is imported; its layouts were read from its sources.

**Files.** v2 (``DeepSpeech.serialize``, flat scripts): a dict of plain data with
``hidden_size``, ``hidden_layers``, ``rnn_type``, ``bidirectional``, ``audio_conf``,
``labels`` (a string, blank ``_`` first) and ``state_dict``; it loads with
``weights_only=True``. V3 (a Lightning ``.ckpt``): ``state_dict`` plus
``hyper_parameters = {"labels", "model_cfg", "precision", "optim_cfg", "spect_cfg"}``
(``save_hyperparameters()``), whose configs are OmegaConf DictConfigs of
``deepspeech_pytorch.configs.train_config`` dataclasses holding
``deepspeech_pytorch.enums`` members; the model is bidirectional when ``model_cfg``'s
dataclass is ``BiDirectionalConfig``.

**Model.** Both versions are our DeepSpeech2 with ``conv_bias=True``, 32 conv channels and
20 ms output frames (:data:`THEIR_FRONT_END`): conv + BatchNorm + Hardtanh(0, 20) twice, RNN
layers with bias whose two directions are summed and with a sequence-wise BatchNorm before
every layer but the first, a bias-free depthwise lookahead conv (right-padded with zeros) +
Hardtanh(0, 20) when unidirectional, then BatchNorm + Linear without bias. Their eval output is
``softmax``; ours is ``log_softmax`` of the same logits. Weight names:

    conv.seq_module.{0,3}.{weight,bias}     -> convs.{0,1}.*
    conv.seq_module.{1,4}.*                 -> conv_norms.{0,1}.*
    rnns.N.rnn.{w,b}_{ih,hh}_l0             -> rnns.N.rnn.*
    rnns.N.rnn.{w,b}_{ih,hh}_l0_reverse     -> rnns.N.rnn_reverse.{w,b}_{ih,hh}_l0
    rnns.N.batch_norm.module.*              -> rnns.N.batch_norm.*
    lookahead.0.conv.weight                 -> lookahead.conv.weight
    fc.0.module.0.*                         -> head_norm.*
    fc.0.module.1.weight                    -> head.weight

The architecture is read from the weights' shapes and must agree with what the file
declares.

**Features** (recorded in the converted audio config): |librosa.stft| with
``center=True``, ``log1p``, one scalar mean and unbiased std per utterance, as ours.
v2 passed ``scipy.signal.hamming`` (a function, called with N: a *symmetric* window)
and read 16-bit PCM as int / 32767; V3 passes the window's name (librosa makes it
*periodic*) and reads through torchaudio (int / 32768). librosa padded the STFT with
``reflect`` before 0.9 (2022), so the released models saw reflect-padded edges: that is
``--pad-mode``'s default; models trained with librosa >= 0.9 want ``constant``.

**Safety.** A V3 file is a pickle of Python objects. :func:`load_restricted` lists the
globals its pickle names (``torch.serialization.get_unsafe_globals_in_checkpoint``) and
checks each against an explicit allow-list: inert stand-ins (:class:`Stub`) for names in
the namespaces a deepspeech.pytorch checkpoint uses (omegaconf, deepspeech_pytorch,
pytorch_lightning, typing) and for torch's RNN classes (RNNType's values), which only
record the arguments and state the pickle gives them, a few builtin types, and checked
replacements for ``operator.getitem``, ``type(None)``, ``getattr`` on enums and
``defaultdict``. Any other name (``os.system``,
``builtins.eval``, a pickled module) stops with one :class:`UnsafeCheckpointError`
before the file is unpickled. The file is then read by ``torch.load(weights_only=True)``
with exactly those names allowed for the call, so torch's weights-only unpickler, which
imports nothing, is what runs the pickle.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from data.audio import PAD_MODES, WINDOWS, AudioConfig
from model import RNN_GATES, ModelConfig
from utils import FILE_LOAD_ERRORS

TOOLKIT = "deepspeech.pytorch"
THEIR_FRONT_END = {"conv_channels": 32, "conv_time_stride": 2, "conv_bias": True}
"""deepspeech.pytorch's DS2 conv front end as :class:`model.ModelConfig` fields."""
DEFAULT_PAD_MODE = "reflect"


class DeepSpeechPytorchError(ValueError):
    """A deepspeech.pytorch file that cannot be converted; the message names the file.
    :func:`checkpoint.load_checkpoint` raises it as a ``CheckpointError``."""


class UnsafeCheckpointError(DeepSpeechPytorchError):
    """A checkpoint whose pickle asks for something outside the allow-list; nothing of it ran."""


# ---------------------------------------------------------------------------- restricted loading

# Names under these packages become inert stand-ins: the objects of a V3 checkpoint's configs
# (and, before Lightning 1.5, its callbacks' state was keyed by the callback class).
STUB_NAMESPACES = ("omegaconf", "deepspeech_pytorch", "pytorch_lightning", "typing")
# Single names that become stand-ins too: RNNType's values are the torch.nn RNN classes.
STUB_NAMES = frozenset({"torch.nn.modules.rnn.LSTM", "torch.nn.modules.rnn.GRU", "torch.nn.modules.rnn.RNN"})
# Types that appear as values in config metadata (key types, annotations); their constructors are harmless.
BUILTIN_TYPES = {f"builtins.{t.__name__}": t for t in (str, int, float, bool, dict, list, tuple)}


class Stub:
    """Inert stand-in for a class named in a checkpoint's pickle (``_path`` is its name).

    Creating one (``NEWOBJ``/``REDUCE``) records the arguments in ``args``; ``BUILD``
    stores the state in ``state``. An enum member pickled by name has ``member_name``.
    None of the real class's code exists here, so nothing of it can run.
    """

    _path = "?"

    def __new__(cls, *args: Any, **kwargs: Any):
        self = object.__new__(cls)
        self.args, self.kwargs, self.state, self.member_name = args, kwargs, None, None
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in {self._path}>"


def _is_stub_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Stub)


class _AllowList:
    """What each name a checkpoint's pickle asks for resolves to, or a refusal.

    Besides the stand-ins and builtin types, a few callables a config pickle uses are
    replaced by the methods below, which accept only stand-ins.
    """

    def __init__(self) -> None:
        self.stubs: dict[str, type] = {}
        self.callables = {
            "builtins.type": self.none_type,
            "builtins.getattr": self.enum_member_by_name,
            "operator.getitem": self.subscript,
            "_operator.getitem": self.subscript,
            "collections.defaultdict": self.plain_dict,
            "builtins.Ellipsis": Ellipsis,
        }

    def stub(self, path: str) -> type:
        if path not in self.stubs:
            self.stubs[path] = type(path.rpartition(".")[2] or path, (Stub,), {"_path": path, "__module__": __name__})
        return self.stubs[path]

    def resolve(self, path: str) -> Any:
        """The object for a global ``module.name``; raises UnsafeCheckpointError for anything else."""
        if path in BUILTIN_TYPES:
            return BUILTIN_TYPES[path]
        if path in self.callables:
            return self.callables[path]
        if path.split(".")[0] in STUB_NAMESPACES or path in STUB_NAMES:
            return self.stub(path)
        # Protocol-2 pickles name some modules as Python 2 did (subprocess as commands): say which is meant.
        module, _, name = path.rpartition(".")
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        raise UnsafeCheckpointError(f"refused {module}.{name}")

    def subscript(self, origin: Any, args: Any) -> type:
        """``typing.List[Any]`` and the like, pickled as ``operator.getitem(origin, args)``."""
        if not _is_stub_class(origin):
            raise pickle.UnpicklingError("operator.getitem applies only to typing stand-ins here")
        return self.stub(f"{origin._path}[{args!r}]")

    def none_type(self, obj: Any) -> type:
        """``type(None)``, pickled as ``builtins.type(None)``."""
        if obj is not None:
            raise pickle.UnpicklingError("builtins.type applies only to None here")
        return type(None)

    def enum_member_by_name(self, cls: Any, name: Any) -> Stub:
        """An enum member pickled by name (Python >= 3.12): ``getattr(EnumClass, 'name')``."""
        if not _is_stub_class(cls) or not isinstance(name, str):
            raise pickle.UnpicklingError("builtins.getattr applies only to stand-in enums here")
        member = cls()
        member.member_name = name
        return member

    def plain_dict(self, default_factory: Any = None) -> dict:
        """A ``defaultdict`` (OmegaConf's resolver cache) comes back as a plain dict."""
        return {}


def load_restricted(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint that holds Python objects, such as a V3 ``.ckpt`` (see the module docstring).

    Every global the pickle names is checked against the allow-list first; the file is
    then read by ``torch.load(weights_only=True)`` with those names, and only those,
    added as safe globals for this load. torch's weights-only unpickler creates and
    calls nothing else.

    Raises:
        UnsafeCheckpointError: the pickle names something outside the allow-list.
        DeepSpeechPytorchError: the file cannot be read at all.
    """
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        raise DeepSpeechPytorchError(f"{path}: reading {TOOLKIT} V3 checkpoints needs torch >= 2.5")
    allow = _AllowList()
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        safe = [(allow.resolve(name), name) for name in names]
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (UnsafeCheckpointError, pickle.UnpicklingError) as e:
        reason = (
            str(e)
            if isinstance(e, UnsafeCheckpointError)
            else f"refused by torch's weights-only unpickler: {str(e).strip().splitlines()[-1]}"
        )
        raise UnsafeCheckpointError(
            f"{path}: {reason}: the file holds Python objects that are neither plain data nor part of a "
            f"{TOOLKIT} checkpoint, so it was not loaded and nothing in it was run. Checkpoints load with "
            f"torch.load(weights_only=True), {TOOLKIT} V3 files with stand-ins for their config classes; "
            "re-save it with checkpoint.save_checkpoint"
        ) from None
    except FILE_LOAD_ERRORS as e:
        raise DeepSpeechPytorchError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------- stand-ins -> plain data


def _class_name(obj: Any) -> str | None:
    """Last part of the dataclass name behind a config: an OmegaConf DictConfig's
    ``_metadata.object_type``, or a pickled dataclass instance's own class."""
    if not isinstance(obj, Stub):
        return None
    if type(obj)._path.endswith(".DictConfig") and isinstance(obj.state, dict):
        meta = obj.state.get("_metadata")
        object_type = meta.state.get("object_type") if isinstance(meta, Stub) and isinstance(meta.state, dict) else None
        return object_type._path.rpartition(".")[2] if _is_stub_class(object_type) else None
    return type(obj)._path.rpartition(".")[2]


def _child(obj: Any, key: str) -> Any:
    """``obj[key]`` as pickled, before :func:`to_plain`: of a dict, a DictConfig or a dict subclass."""
    if isinstance(obj, dict):
        return obj.get(key)
    if isinstance(obj, Stub) and isinstance(obj.state, dict):
        content = obj.state.get("_content", obj.state)
        return content.get(key) if isinstance(content, dict) else None
    return None


def to_plain(obj: Any, depth: int = 0) -> Any:
    """Plain data from what :func:`load_restricted` built: OmegaConf containers and
    nodes become dicts, lists and their values; enum members their value (a class value
    becomes its dotted name); dataclass instances a dict of their fields."""
    if depth > 100:
        raise DeepSpeechPytorchError("configuration nested too deeply (a reference cycle?)")
    depth += 1
    if _is_stub_class(obj):
        return obj._path
    if isinstance(obj, dict):
        return {to_plain(k, depth): to_plain(v, depth) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v, depth) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v, depth) for v in obj)
    if not isinstance(obj, Stub):
        return obj
    path, state = type(obj)._path, obj.state
    if path.startswith("omegaconf.") and isinstance(state, dict):
        if "_content" in state:  # DictConfig / ListConfig; None, '???' or an interpolation stay as they are
            return to_plain(state["_content"], depth)
        if "_val" in state:  # AnyNode, StringNode, IntegerNode, EnumNode, ...
            return to_plain(state["_val"], depth)
    if obj.member_name is not None:  # enum member pickled by name
        return obj.member_name
    if state is None and len(obj.args) == 1:  # enum member pickled by value
        return to_plain(obj.args[0], depth)
    if isinstance(state, dict):  # a dataclass or other plain object: its fields
        return to_plain({k: v for k, v in state.items() if not str(k).startswith("_")}, depth)
    return None


# ---------------------------------------------------------------------------- weight names

_MODULE_NAMES = {  # deepspeech.pytorch module -> ours
    "conv.seq_module.0": "convs.0",
    "conv.seq_module.1": "conv_norms.0",
    "conv.seq_module.3": "convs.1",
    "conv.seq_module.4": "conv_norms.1",
    "lookahead.0.conv": "lookahead.conv",
    "fc.0.module.0": "head_norm",
    "fc.0.module.1": "head",
}
_THEIR_MODULE_NAMES = {ours: theirs for theirs, ours in _MODULE_NAMES.items()}
_THEIR_RNN = re.compile(r"rnns\.(\d+)\.rnn\.((?:weight|bias)_(?:ih|hh)_l0)(_reverse)?")
_OUR_RNN = re.compile(r"rnns\.(\d+)\.(rnn|rnn_reverse)\.((?:weight|bias)_(?:ih|hh)_l0)")
_THEIR_BN = re.compile(r"rnns\.(\d+)\.batch_norm\.module\.(\w+)")
_OUR_BN = re.compile(r"rnns\.(\d+)\.batch_norm\.(\w+)")
# V3's LightningModule also holds the loss, the decoder and the WER/CER metrics' states.
_IGNORED_PREFIXES = ("criterion.", "evaluation_decoder.", "wer.", "cer.")


def our_key(key: str) -> str | None:
    """Our name for a deepspeech.pytorch weight, or None if it is not one of the model's."""
    if m := _THEIR_RNN.fullmatch(key):
        return f"rnns.{m[1]}.{'rnn_reverse' if m[3] else 'rnn'}.{m[2]}"
    if m := _THEIR_BN.fullmatch(key):
        return f"rnns.{m[1]}.batch_norm.{m[2]}"
    module, _, leaf = key.rpartition(".")
    return f"{_MODULE_NAMES[module]}.{leaf}" if module in _MODULE_NAMES else None


def their_key(key: str) -> str:
    """deepspeech.pytorch's name for one of our DeepSpeech2 weights (the inverse of :func:`our_key`)."""
    if m := _OUR_RNN.fullmatch(key):
        return f"rnns.{m[1]}.rnn.{m[3]}{'_reverse' if m[2] == 'rnn_reverse' else ''}"
    if m := _OUR_BN.fullmatch(key):
        return f"rnns.{m[1]}.batch_norm.module.{m[2]}"
    module, _, leaf = key.rpartition(".")
    if module not in _THEIR_MODULE_NAMES:
        raise KeyError(f"{key} has no deepspeech.pytorch counterpart")
    return f"{_THEIR_MODULE_NAMES[module]}.{leaf}"


def to_deepspeech_pytorch(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our DeepSpeech2 weights under deepspeech.pytorch's names (the model needs
    :data:`THEIR_FRONT_END` to be theirs)."""
    return {their_key(k): v for k, v in state_dict.items()}


def map_weights(state_dict: dict[str, Any], source: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Rename deepspeech.pytorch weights to ours and read the architecture off their shapes.

    Returns:
        (our state_dict, ModelConfig fields other than n_features).
    """
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise DeepSpeechPytorchError(f"{source}: its state_dict does not map names to tensors")
    ours, unknown = {}, []
    for key, value in state_dict.items():
        new = our_key(key)
        if new is not None:
            ours[new] = value
        elif not key.startswith(_IGNORED_PREFIXES):
            unknown.append(key)
    if unknown:
        raise DeepSpeechPytorchError(
            f"{source}: weights that are not {TOOLKIT}'s DeepSpeech layout: {', '.join(unknown[:4])}"
            + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        )
    try:
        hidden_size = ours["rnns.0.rnn.weight_hh_l0"].shape[1]
        gates = ours["rnns.0.rnn.weight_hh_l0"].shape[0] // hidden_size
        arch = {
            "arch": "ds2",
            "n_classes": ours["head.weight"].shape[0],
            "hidden_size": hidden_size,
            "hidden_layers": 1 + max(int(k.split(".")[1]) for k in ours if k.startswith("rnns.")),
            "rnn_type": {g: name for name, g in RNN_GATES.items()}[gates],
            "bidirectional": "rnns.0.rnn_reverse.weight_hh_l0" in ours,
            "conv_channels": ours["convs.0.weight"].shape[0],
            "conv_bias": "convs.0.bias" in ours,
            "conv_time_stride": THEIR_FRONT_END["conv_time_stride"],
        }
    except (KeyError, IndexError, ZeroDivisionError) as e:
        raise DeepSpeechPytorchError(f"{source}: its weights lack a part of the DeepSpeech model ({e})") from None
    if "lookahead.conv.weight" in ours:
        arch["lookahead_context"] = ours["lookahead.conv.weight"].shape[-1]
    elif not arch["bidirectional"]:
        raise DeepSpeechPytorchError(f"{source}: a unidirectional model without its lookahead weights")
    for key in [k for k in ours if k.endswith("running_var")]:  # files from before torch 0.4.1 lack the counter
        ours.setdefault(key.replace("running_var", "num_batches_tracked"), torch.tensor(0))
    return ours, arch


# ---------------------------------------------------------------------------- formats


def detect_version(obj: Any) -> str | None:
    """``"v2"`` for a v2 model package, ``"V3"`` for a V3 Lightning checkpoint, else None."""
    if not isinstance(obj, dict) or "state_dict" not in obj:
        return None
    if "hyper_parameters" in obj:
        return "V3"
    if {"hidden_size", "hidden_layers", "labels", "audio_conf"} <= obj.keys():
        return "v2"
    return None


def _labels(labels: Any, source: str | Path) -> list[str]:
    labels = list(labels) if isinstance(labels, (str, list, tuple)) else labels
    if not isinstance(labels, list) or not all(isinstance(c, str) and len(c) == 1 for c in labels):
        raise DeepSpeechPytorchError(f"{source}: labels must be single characters, got {labels!r}")
    if labels[:1] != ["_"]:
        raise DeepSpeechPytorchError(f"{source}: the CTC blank '_' must be the first label, got {''.join(labels)!r}")
    return labels


def _check_declared(declared: dict, arch: dict, source: str | Path) -> None:
    wrong = [
        f"{k} {declared[k]!r} (weights: {arch.get(k)!r})"
        for k in declared
        if declared[k] is not None and declared[k] != arch.get(k)
    ]
    if wrong:
        raise DeepSpeechPytorchError(f"{source}: the file declares {', '.join(wrong)}; it is inconsistent or damaged")


def _v2_parts(obj: dict, source: str | Path, pad_mode: str) -> tuple[dict, AudioConfig, list[str], dict, dict]:
    """(declared architecture, audio config, labels, training run info, provenance) of a v2 package."""
    conf = obj["audio_conf"] if isinstance(obj["audio_conf"], dict) else {}
    window = conf.get("window", "hamming")
    audio = AudioConfig(
        sample_rate=int(conf.get("sample_rate", 16000)),
        window_size=float(conf.get("window_size", 0.02)),
        window_stride=float(conf.get("window_stride", 0.01)),
        window=window if window in WINDOWS else "hamming",  # v2 fell back to hamming for unknown names
        normalize="utterance",
        window_periodic=False,
        pad_mode=pad_mode,
        int16_divisor=32767,
    )
    declared = {
        "hidden_size": obj.get("hidden_size"),
        "hidden_layers": obj.get("hidden_layers"),
        "rnn_type": obj.get("rnn_type"),
        "bidirectional": obj.get("bidirectional", True),
    }
    training: dict = {}
    epochs = obj.get("epoch")
    if type(epochs) is int and epochs > 0:
        training["epoch"] = epochs
        history: dict = {"epoch": list(range(1, epochs + 1))}
        for theirs, ours in (("loss_results", "train_loss"), ("wer_results", "wer"), ("cer_results", "cer")):
            values = obj.get(theirs)
            if isinstance(values, torch.Tensor) and values.numel() >= epochs:
                history[ours] = [float(v) for v in values.flatten()[:epochs]]  # later slots are uninitialised
        training["history"] = history
    info = {"package_version": obj["version"]} if type(obj.get("version")) is str else {}
    return declared, audio, _labels(obj["labels"], source), training, info


def _v3_parts(obj: dict, source: str | Path, pad_mode: str) -> tuple[dict, AudioConfig, list[str], dict, dict]:
    """(declared architecture, audio config, labels, training run info, provenance) of a V3 checkpoint."""
    raw = obj["hyper_parameters"]
    hparams = to_plain(raw)
    if not isinstance(hparams, dict) or not {"labels", "model_cfg", "spect_cfg"} <= hparams.keys():
        raise DeepSpeechPytorchError(
            f"{source}: a Lightning checkpoint without {TOOLKIT} V3's hyper-parameters (labels, model_cfg, spect_cfg)"
        )
    model_cfg, spect = hparams["model_cfg"], hparams["spect_cfg"]
    if not isinstance(model_cfg, dict) or not isinstance(spect, dict):
        raise DeepSpeechPytorchError(f"{source}: model_cfg and spect_cfg must be configs, got {model_cfg!r}, {spect!r}")
    config_class = _class_name(_child(raw, "model_cfg"))
    window = str(spect.get("window", "hamming")).rpartition(".")[2]
    if window not in WINDOWS:
        raise DeepSpeechPytorchError(f"{source}: spectrogram window {window!r} is not one of {sorted(WINDOWS)}")
    audio = AudioConfig(
        sample_rate=int(spect.get("sample_rate", 16000)),
        window_size=float(spect.get("window_size", 0.02)),
        window_stride=float(spect.get("window_stride", 0.01)),
        window=window,
        normalize="utterance",
        window_periodic=True,
        pad_mode=pad_mode,
        int16_divisor=32768,
    )
    rnn_type = model_cfg.get("rnn_type")
    declared = {
        "hidden_size": model_cfg.get("hidden_size"),
        "hidden_layers": model_cfg.get("hidden_layers"),
        "rnn_type": str(rnn_type).rpartition(".")[2].lower() if rnn_type is not None else None,
        "bidirectional": {"BiDirectionalConfig": True, "UniDirectionalConfig": False}.get(config_class),
        "lookahead_context": model_cfg.get("lookahead_context"),
    }
    info = {"model_config_class": config_class, "precision": hparams.get("precision")}
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if type(obj.get(key)) in (int, str):
            info[key] = obj[key]
    return declared, audio, _labels(hparams["labels"], source), {}, info


def convert(obj: Any, source: str | Path, pad_mode: str = DEFAULT_PAD_MODE) -> dict:
    """The contents of a deepspeech-ctc checkpoint package from a loaded deepspeech.pytorch file:
    ``model_config``, ``audio_config``, ``labels``, ``state_dict``, ``imported_from`` and, for
    a v2 package that counted its epochs, ``training`` (epoch and metric history).
    :func:`checkpoint.load_checkpoint` adds the format header and validates it.

    Args:
        obj: what ``torch.load`` (v2) or :func:`load_restricted` (V3) returned.
        source: the file, for messages.
        pad_mode: STFT centre padding the model was trained with ("reflect" or "constant").

    Raises:
        DeepSpeechPytorchError: not a deepspeech.pytorch file, or one whose parts disagree.
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {list(PAD_MODES)}, got {pad_mode!r}")
    version = detect_version(obj)
    if version is None:
        raise DeepSpeechPytorchError(f"{source}: not a {TOOLKIT} v2 model package or V3 Lightning checkpoint")
    try:
        declared, audio, labels, training, info = (_v2_parts if version == "v2" else _v3_parts)(obj, source, pad_mode)
        state_dict, arch = map_weights(obj["state_dict"], f"{source} ({TOOLKIT} {version})")
        _check_declared(declared, arch, source)
        model_cfg = ModelConfig(n_features=audio.n_freq, **arch)
    except DeepSpeechPytorchError:
        raise
    except (TypeError, ValueError, AttributeError) as e:
        raise DeepSpeechPytorchError(f"{source}: a {TOOLKIT} {version} file with settings this cannot read ({e})") from None
    package = {
        "model_config": asdict(model_cfg),
        "audio_config": audio.to_dict(),
        "labels": labels,
        "state_dict": state_dict,
        "imported_from": {"toolkit": TOOLKIT, "version": version, "file": Path(source).name, **info},
    }
    if training:
        package["training"] = training
    return package


__all__ = [
    "DeepSpeechPytorchError",
    "Stub",
    "UnsafeCheckpointError",
    "convert",
    "detect_version",
    "load_restricted",
    "map_weights",
    "our_key",
    "their_key",
    "to_deepspeech_pytorch",
    "to_plain",
]
