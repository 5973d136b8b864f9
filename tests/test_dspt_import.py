"""dspt_import.py: deepspeech.pytorch v2 packages and V3 Lightning checkpoints, imported exactly and safely.

* Real references: the v2 models and outputs in ../shared/fixtures/deepspeech_pytorch_v2 (made
  with deepspeech.pytorch's own code; see its README), or where DSPT_FIXTURES points.
* Other v2 architectures: a small re-implementation of v2's module structure, below, with
  random weights, against our converted model.
* V3: checkpoints built here in V3's layout (OmegaConf containers, deepspeech_pytorch enums
  and dataclasses, Lightning keys) from stand-in modules that are removed before loading,
  and copies carrying pickle payloads that must be refused without running.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import socket
import subprocess
import sys
import time
import types
import typing
from collections import OrderedDict, defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import dspt_import
import model as model_cli
import test as evaluate_cli  # the project's test.py, not the standard library's test package
import transcribe
from checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_model, save_checkpoint
from data.audio import AudioConfig, load_audio, spectrogram
from data.manifest import write_manifest
from decoder import GreedyDecoder
from model import ModelConfig, build_model, count_parameters
from utils import dataclass_from_dict

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("DSPT_FIXTURES") or REPO.parent / "shared" / "fixtures" / "deepspeech_pytorch_v2")
EXAMPLES = REPO / "examples"
TRANSCRIPTS = {"an421-menk-b.wav": "ENTER TWENTY ONE", "cen3-fvap-b.wav": "THREE ZERO TWO ONE", "cen2-marh-b.wav": "A L A N"}
LABELS = "_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "
TOL = 1e-4

needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "references.json").is_file(),
    reason=f"deepspeech.pytorch v2 fixtures not found at {FIXTURES} "
    "(../shared/fixtures/deepspeech_pytorch_v2 beside the repository, or set DSPT_FIXTURES)",
)


# ---------------------------------------------------------------------------- a v2-structured reference


class RefSequenceWise(nn.Module):
    """(T, N, H) -> module over (T*N, H) -> (T, N, H')."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        t, n = x.shape[:2]
        return self.module(x.reshape(t * n, -1)).reshape(t, n, -1)


class RefMaskConv(nn.Module):
    """Every layer's output zeroed from each utterance's (final) output length on."""

    def __init__(self, seq_module: nn.Sequential) -> None:
        super().__init__()
        self.seq_module = seq_module

    def forward(self, x, lengths):
        for layer in self.seq_module:
            x = layer(x)
            padded = torch.arange(x.size(3))[None, :] >= lengths[:, None]
            x = x.masked_fill(padded[:, None, None, :], 0)
        return x


class RefBatchRNN(nn.Module):
    def __init__(self, n_in: int, hidden: int, rnn_cls: type, bidirectional: bool, batch_norm: bool) -> None:
        super().__init__()
        self.batch_norm = RefSequenceWise(nn.BatchNorm1d(n_in)) if batch_norm else None
        self.rnn = rnn_cls(input_size=n_in, hidden_size=hidden, bidirectional=bidirectional, bias=True)
        self.bidirectional = bidirectional

    def forward(self, x, lengths):
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        x, _ = self.rnn(pack_padded_sequence(x, lengths))
        x, _ = pad_packed_sequence(x)
        if self.bidirectional:  # the two directions summed
            x = x.view(x.size(0), x.size(1), 2, -1).sum(2)
        return x


class RefLookahead(nn.Module):
    def __init__(self, n: int, context: int) -> None:
        super().__init__()
        self.context = context
        self.conv = nn.Conv1d(n, n, kernel_size=context, groups=n, bias=False)

    def forward(self, x):  # (T, N, H)
        x = F.pad(x.permute(1, 2, 0), (0, self.context - 1))
        return self.conv(x).permute(2, 0, 1)


class RefDeepSpeech(nn.Module):
    """deepspeech.pytorch v2's DeepSpeech module tree (so its state_dict has v2's names), eval forward only."""

    def __init__(
        self,
        rnn_type: str,
        hidden: int,
        layers: int,
        bidirectional: bool,
        n_freq: int = 161,
        n_classes: int = 29,
        context: int = 20,
    ) -> None:
        super().__init__()
        self.conv = RefMaskConv(
            nn.Sequential(
                nn.Conv2d(1, 32, kernel_size=(41, 11), stride=(2, 2), padding=(20, 5)),
                nn.BatchNorm2d(32),
                nn.Hardtanh(0, 20),
                nn.Conv2d(32, 32, kernel_size=(21, 11), stride=(2, 1), padding=(10, 5)),
                nn.BatchNorm2d(32),
                nn.Hardtanh(0, 20),
            )
        )
        f = ((n_freq + 40 - 41) // 2 + 1 + 20 - 21) // 2 + 1
        rnn_cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[rnn_type]
        self.rnns = nn.Sequential(
            *(RefBatchRNN(32 * f if i == 0 else hidden, hidden, rnn_cls, bidirectional, i > 0) for i in range(layers))
        )
        self.lookahead = None if bidirectional else nn.Sequential(RefLookahead(hidden, context), nn.Hardtanh(0, 20))
        self.fc = nn.Sequential(RefSequenceWise(nn.Sequential(nn.BatchNorm1d(hidden), nn.Linear(hidden, n_classes, bias=False))))

    def forward(self, x, lengths):
        """x: (N, 1, F, T); lengths sorted longest first. Returns (N, T', C) probabilities and lengths."""
        for kernel, stride, pad in ((11, 2, 5), (11, 1, 5)):
            lengths = (lengths + 2 * pad - (kernel - 1) - 1) // stride + 1
        x = self.conv(x, lengths)
        n, c, f, t = x.shape
        x = x.reshape(n, c * f, t).permute(2, 0, 1)  # (T, N, C*F)
        for rnn in self.rnns:
            x = rnn(x, lengths)
        if self.lookahead is not None:
            x = self.lookahead(x)
        return self.fc(x).transpose(0, 1).softmax(-1), lengths


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, BatchNorm statistics included; eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:  # conv, RNN, linear and lookahead weights
                p.normal_(0, p[0].numel() ** -0.5)
            elif isinstance(module.get_submodule(name.rpartition(".")[0]), nn.modules.batchnorm._BatchNorm) and name.endswith(
                "weight"
            ):
                p.uniform_(0.5, 1.5)
            else:  # biases
                p.normal_(0, 0.2)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return module.eval()


def v2_package(
    ref: RefDeepSpeech, rnn_type: str, hidden: int, layers: int, bidirectional: bool, sample_rate: int = 16000
) -> dict:
    """What v2's DeepSpeech.serialize writes (plus the training bookkeeping it adds)."""
    return {
        "version": "0.0.1",
        "hidden_size": hidden,
        "hidden_layers": layers,
        "rnn_type": rnn_type,
        "audio_conf": {
            "sample_rate": sample_rate,
            "window_size": 0.02,
            "window_stride": 0.01,
            "window": "hamming",
            "noise_dir": None,
            "noise_prob": 0.4,
            "noise_levels": (0.0, 0.5),
        },
        "labels": LABELS,
        "state_dict": ref.state_dict(),
        "bidirectional": bidirectional,
        "optim_dict": {"state": {}, "param_groups": [{"lr": 3e-4, "params": [0]}]},
        "epoch": 2,
        "loss_results": torch.tensor([50.0, 40.0, 0.0]),
        "wer_results": torch.tensor([90.0, 80.0, 0.0]),
        "cer_results": torch.tensor([60.0, 50.0, 0.0]),
    }


def compare(ref: RefDeepSpeech, ours: nn.Module, n_freq: int = 161, seed: int = 0) -> float:
    """Max |their probabilities - exp(our log-probs)| over the valid frames of a padded batch."""
    torch.manual_seed(seed)
    lengths = torch.tensor([64, 47, 30])
    x = torch.randn(3, 1, n_freq, 64) * (torch.arange(64)[None, :] < lengths[:, None])[:, None, None, :]
    with torch.no_grad():
        probs, ref_lengths = ref(x, lengths)
        log_probs, out_lengths = ours(x, lengths)
    assert out_lengths.tolist() == ref_lengths.tolist()
    return max(float((probs[b, :n] - log_probs[b, :n].exp()).abs().max()) for b, n in enumerate(out_lengths.tolist()))


ARCHITECTURES = [  # rnn type, bidirectional, layers, width
    ("rnn", True, 1, 16),
    ("gru", True, 3, 24),
    ("lstm", True, 2, 20),
    ("rnn", False, 2, 8),
    ("gru", False, 1, 12),
    ("lstm", False, 3, 16),
]


@pytest.mark.parametrize("rnn_type,bidirectional,layers,hidden", ARCHITECTURES)
def test_v2_architectures_match_the_reference_structure(tmp_path, rnn_type, bidirectional, layers, hidden):
    ref = randomised(RefDeepSpeech(rnn_type, hidden, layers, bidirectional), seed=layers * hidden)
    path = tmp_path / "v2.pth"
    torch.save(v2_package(ref, rnn_type, hidden, layers, bidirectional), path)
    ours, ckpt = load_model(path)  # converted in memory
    cfg = ours.cfg
    assert (cfg.rnn_type, cfg.bidirectional, cfg.hidden_layers, cfg.hidden_size, cfg.conv_bias) == (
        rnn_type,
        bidirectional,
        layers,
        hidden,
        True,
    )
    assert compare(ref, ours) < 1e-5
    # every tensor was used: the mapping is a bijection onto our state_dict
    assert len(ckpt.state_dict) == len(ref.state_dict()) == len(ours.state_dict())
    assert ckpt.training.epoch == 2 and ckpt.training.history == {
        "epoch": [1, 2],
        "train_loss": [50.0, 40.0],
        "wer": [90.0, 80.0],
        "cer": [60.0, 50.0],
    }


def test_v2_other_sample_rate_and_window(tmp_path):
    ref = randomised(RefDeepSpeech("gru", 8, 2, True, n_freq=81), seed=3)
    package = v2_package(ref, "gru", 8, 2, True, sample_rate=8000)
    package["audio_conf"]["window"] = "hann"
    torch.save(package, tmp_path / "v2.pth")
    ours, ckpt = load_model(tmp_path / "v2.pth")
    assert ours.cfg.n_features == 81
    assert ckpt.audio_config == AudioConfig(
        sample_rate=8000, window="hann", window_periodic=False, pad_mode="reflect", int16_divisor=32767
    )
    assert compare(ref, ours, n_freq=81) < 1e-5


@pytest.mark.parametrize("bidirectional", [True, False])
def test_our_weights_in_v2_layout_run_in_the_reference(bidirectional):
    """to_deepspeech_pytorch is the inverse of the import: our model's weights, renamed, load
    strictly into the v2 structure and compute the same function."""
    theirs = dict(dspt_import.THEIR_FRONT_END, lookahead_context=20)  # their unidirectional models' lookahead
    cfg = ModelConfig(hidden_size=12, hidden_layers=2, rnn_type="lstm", bidirectional=bidirectional, **theirs)
    ours = randomised(build_model(cfg), seed=5)
    ref = RefDeepSpeech("lstm", 12, 2, bidirectional).eval()
    ref.load_state_dict(dspt_import.to_deepspeech_pytorch(ours.state_dict()), strict=True)
    assert compare(ref, ours) < 1e-5
    back = {dspt_import.our_key(k): v for k, v in ref.state_dict().items()}
    assert back.keys() == ours.state_dict().keys()


# ---------------------------------------------------------------------------- the real v2 fixtures


def _references() -> dict:
    return json.loads((FIXTURES / "references.json").read_text())


def best_path(probs: np.ndarray, labels: list[str]) -> str:
    """v2's GreedyDecoder: argmax, repeats collapsed, blanks dropped, spaces kept as they are."""
    text, prev = "", -1
    for i in probs.argmax(-1).tolist():
        if i != prev and i != 0:
            text += labels[i]
        prev = i
    return text


@needs_fixtures
@pytest.mark.parametrize("name", ["dspt_v2_gru_bi.pth", "dspt_v2_lstm_uni.pth"])
def test_fixture_models_reproduce_their_references(tmp_path, capsys, name):
    out = tmp_path / "imported.pth"
    assert (
        model_cli.main(["--import-deepspeech-pytorch", str(FIXTURES / name), "--export", str(out), "--pad-mode", "constant"]) == 0
    )
    printed = capsys.readouterr().out
    for fragment in (
        "deepspeech.pytorch v2",
        "DeepSpeech 2 (ds2): 2 x 48",
        "conv channels 32 (with bias), conv time stride 2",
        "labels (29):",
        LABELS,
        "window_periodic=False",
        "pad_mode=constant",
        "int16_divisor=32767",
        f"exported:      {out}",
    ):
        assert fragment in printed, (fragment, printed)
    model, ckpt = load_model(out)
    assert ckpt.imported_from["version"] == "v2" and ckpt.labels == list(LABELS)
    cfg = ckpt.audio_config
    decoder = GreedyDecoder(ckpt.labels)
    for wav, ref in _references()[name].items():
        spect = spectrogram(load_audio(EXAMPLES / wav, cfg.sample_rate), cfg)
        spect_diff = np.abs(spect - np.load(FIXTURES / ref["spectrogram"])).max()
        assert spect_diff < TOL, (wav, spect_diff)
        with torch.no_grad():
            log_probs, out_lengths = model(torch.from_numpy(spect)[None, None], torch.tensor([spect.shape[1]]))
        assert int(out_lengths) == ref["output_frames"]
        probs = log_probs[0].exp().numpy()
        probs_diff = np.abs(probs - np.load(FIXTURES / ref["probs"])).max()
        assert probs_diff < TOL, (wav, probs_diff)
        assert best_path(probs, ckpt.labels) == ref["greedy"]
        assert decoder.decode(log_probs, out_lengths)[0][0].text == " ".join(ref["greedy"].split())


@needs_fixtures
def test_fixture_used_directly_by_transcribe_test_and_model_py(tmp_path, capsys):
    """The old file works as --model-path: converted in memory, with reflect padding (the
    default); the same as importing it with default options."""
    old = FIXTURES / "dspt_v2_gru_bi.pth"
    converted = tmp_path / "converted.pth"
    assert model_cli.main(["--import-deepspeech-pytorch", str(old), "--export", str(converted)]) == 0
    assert "pad_mode=reflect" in capsys.readouterr().out
    clips = [str(EXAMPLES / wav) for wav in TRANSCRIPTS]

    def transcribed(model_path: Path) -> list[str]:
        assert transcribe.main(["--model-path", str(model_path), "--audio-path", *clips]) == 0
        return [o["transcription"] for o in json.loads(capsys.readouterr().out)["output"]]

    assert transcribed(old) == transcribed(converted)

    rows = []
    for wav, text in TRANSCRIPTS.items():
        (tmp_path / wav).with_suffix(".txt").write_text(text)
        rows.append((EXAMPLES / wav, (tmp_path / wav).with_suffix(".txt")))
    manifest = tmp_path / "examples.csv"
    write_manifest(manifest, rows)
    reports = []
    for model_path in (old, converted):
        report = tmp_path / f"{model_path.stem}.json"
        assert (
            evaluate_cli.main(
                ["--model-path", str(model_path), "--test-manifest", str(manifest), "--silent", "--report", str(report)]
            )
            == 0
        )
        assert "Test Summary" in capsys.readouterr().out
        reports.append(json.loads(report.read_text()))
    assert [u["hypothesis"] for u in reports[0]["utterances"]] == [u["hypothesis"] for u in reports[1]["utterances"]]
    assert reports[0]["wer"] == reports[1]["wer"]

    assert model_cli.main(["--model-path", str(old)]) == 0
    assert "2 x 48 bidirectional GRU" in capsys.readouterr().out


@needs_fixtures
def test_fixture_constant_padding_through_test_py(tmp_path, capsys):
    """test.py with the file imported with --pad-mode constant gives the references' greedy text."""
    converted = tmp_path / "lstm.pth"
    assert (
        model_cli.main(
            [
                "--import-deepspeech-pytorch",
                str(FIXTURES / "dspt_v2_lstm_uni.pth"),
                "--export",
                str(converted),
                "--pad-mode",
                "constant",
            ]
        )
        == 0
    )
    rows = []
    for wav, text in TRANSCRIPTS.items():
        (tmp_path / wav).with_suffix(".txt").write_text(text)
        rows.append((EXAMPLES / wav, (tmp_path / wav).with_suffix(".txt")))
    write_manifest(tmp_path / "m.csv", rows)
    report = tmp_path / "r.json"
    assert (
        evaluate_cli.main(
            ["--model-path", str(converted), "--test-manifest", str(tmp_path / "m.csv"), "--silent", "--report", str(report)]
        )
        == 0
    )
    refs = _references()["dspt_v2_lstm_uni.pth"]
    for u in json.loads(report.read_text())["utterances"]:
        assert u["hypothesis"] == " ".join(refs[Path(u["path"]).name]["greedy"].split())


# ---------------------------------------------------------------------------- features


def test_new_audio_fields_keep_the_defaults(tmp_path):
    """Old checkpoints' configs (without the new fields) load as before, and the default
    features are unchanged."""
    old = {"sample_rate": 16000, "window_size": 0.02, "window_stride": 0.01, "window": "hamming", "normalize": True}
    assert AudioConfig.from_dict(old) == AudioConfig()
    assert (AudioConfig().window_periodic, AudioConfig().pad_mode, AudioConfig().int16_divisor) == (True, "constant", 32768)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(8000).astype(np.float32)) * 0.1
    stft = (
        torch.stft(x, 320, 160, 320, torch.hamming_window(320), center=True, pad_mode="constant", return_complex=True)
        .abs()
        .log1p()
    )
    expected = ((stft - stft.mean()) / (stft.std() + 1e-10)).numpy()
    assert np.abs(spectrogram(x.numpy(), AudioConfig()) - expected).max() < 1e-5
    assert dataclass_from_dict(ModelConfig, {"hidden_size": 8}).conv_bias is False
    for cfg in (AudioConfig(pad_mode="reflect"), AudioConfig(window_periodic=False, int16_divisor=32767)):
        assert AudioConfig.from_dict(cfg.to_dict()) == cfg
    assert "convs.0.bias" not in build_model(ModelConfig(hidden_size=8, hidden_layers=1)).state_dict()


def test_int16_divisor_is_exact_for_16_bit_pcm(tmp_path):
    ints = np.random.default_rng(1).integers(-32768, 32768, 4000).astype(np.int16)
    sf.write(tmp_path / "a.wav", ints, 16000, subtype="PCM_16")
    v2_style = ints.astype(np.float32) / 32767  # what v2's load_audio gives
    cfg = AudioConfig(int16_divisor=32767)
    assert np.array_equal(spectrogram(load_audio(tmp_path / "a.wav"), cfg), spectrogram(v2_style, AudioConfig()))


def test_symmetric_window_and_reflect_padding_match_numpy():
    from scipy.signal import windows

    x = np.random.default_rng(2).standard_normal(4000).astype(np.float32)
    cfg = AudioConfig(window_periodic=False, pad_mode="reflect", normalize=False)
    padded = np.pad(x.astype(np.float64), 160, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 320)[::160]
    expected = np.log1p(np.abs(np.fft.rfft(frames * windows.hamming(320, sym=True), axis=1))).T
    assert np.abs(spectrogram(x, cfg) - expected).max() < 1e-5
    with pytest.raises(ValueError, match="pad_mode"):
        AudioConfig(pad_mode="edge")
    with pytest.raises(ValueError, match="int16_divisor"):
        AudioConfig(int16_divisor=1)
    with pytest.raises(ValueError, match="reflect padding needs"):
        spectrogram(np.zeros(100, np.float32), cfg)


# ---------------------------------------------------------------------------- V3 checkpoints


@contextmanager
def v3_modules(omegaconf: bool = True):
    """Stand-ins for the modules a V3 checkpoint names (omegaconf 2.1's containers and
    nodes with their instance layout unless ``omegaconf`` is False, deepspeech_pytorch's
    enums and config dataclasses, Lightning's ModelCheckpoint), importable while the
    block runs, removed after it."""
    created = {}

    def module(name: str) -> types.ModuleType:
        created[name] = sys.modules[name] = types.ModuleType(name)
        return created[name]

    def put(mod: types.ModuleType, cls: type) -> type:
        cls.__module__, cls.__qualname__ = mod.__name__, cls.__name__
        setattr(mod, cls.__name__, cls)
        return cls

    names = {}
    try:
        for name in ("deepspeech_pytorch", "deepspeech_pytorch.configs", "pytorch_lightning", "pytorch_lightning.callbacks"):
            module(name)
        classes = {"pytorch_lightning.callbacks.model_checkpoint": ("ModelCheckpoint",)}
        if omegaconf:
            module("omegaconf")
            classes.update(
                {
                    "omegaconf.base": ("Metadata", "ContainerMetadata"),
                    "omegaconf.dictconfig": ("DictConfig",),
                    "omegaconf.listconfig": ("ListConfig",),
                    "omegaconf.nodes": ("AnyNode", "IntegerNode", "FloatNode", "StringNode", "BooleanNode", "EnumNode"),
                }
            )
        for mod_name, cls_names in classes.items():
            mod = module(mod_name)
            for cls_name in cls_names:
                names[cls_name] = put(mod, type(cls_name, (), {}))
        enums = module("deepspeech_pytorch.enums")
        names["SpectrogramWindow"] = put(
            enums,
            enum.Enum(
                "SpectrogramWindow", {"hamming": "hamming", "hann": "hann", "blackman": "blackman", "bartlett": "bartlett"}
            ),
        )
        names["RNNType"] = put(enums, enum.Enum("RNNType", {"lstm": nn.LSTM, "rnn": nn.RNN, "gru": nn.GRU}))
        train_config = module("deepspeech_pytorch.configs.train_config")
        fields = {
            "SpectConfig": [
                ("sample_rate", int, 16000),
                ("window_size", float, 0.02),
                ("window_stride", float, 0.01),
                ("window", names["SpectrogramWindow"], names["SpectrogramWindow"].hamming),
            ],
            "BiDirectionalConfig": [
                ("rnn_type", names["RNNType"], names["RNNType"].lstm),
                ("hidden_size", int, 1024),
                ("hidden_layers", int, 5),
            ],
            "AdamConfig": [
                ("learning_rate", float, 1.5e-4),
                ("learning_anneal", float, 0.99),
                ("weight_decay", float, 1e-5),
                ("max_norm", float, 400.0),
                ("eps", float, 1e-8),
                ("betas", tuple, (0.9, 0.999)),
            ],
            "ModelCheckpointConf": [
                ("dirpath", typing.Optional[str], None),  # noqa: UP045 (as in 2021)
                ("monitor", typing.Optional[str], "wer"),  # noqa: UP045
                ("save_top_k", int, 1),
            ],
        }
        fields["UniDirectionalConfig"] = fields["BiDirectionalConfig"] + [("lookahead_context", int, 20)]
        for cls_name, spec in fields.items():
            names[cls_name] = put(
                train_config, dataclasses.make_dataclass(cls_name, [(n, t, dataclasses.field(default=d)) for n, t, d in spec])
            )
        yield types.SimpleNamespace(**names)
    finally:
        for name in created:
            sys.modules.pop(name, None)


def _new(cls: type, **state) -> object:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def omegaconf_tree(m, value, parent=None, key=None, ref_type=typing.Any):
    """``value`` as OmegaConf 2.1 holds it: DictConfig/ListConfig with ``_metadata``,
    ``_parent`` and ``_content``, value nodes with ``_val``."""
    if dataclasses.is_dataclass(value):
        node = _new(
            m.DictConfig,
            _parent=parent,
            _metadata=_new(
                m.ContainerMetadata,
                ref_type=ref_type,
                object_type=type(value),
                optional=True,
                key=key,
                flags={},
                flags_root=False,
                resolver_cache=defaultdict(dict),
                key_type=typing.Any,
                element_type=typing.Any,
            ),
        )
        node._content = {
            f.name: omegaconf_tree(m, getattr(value, f.name), node, f.name, f.type) for f in dataclasses.fields(value)
        }
        return node
    if isinstance(value, (list, tuple)):
        node = _new(
            m.ListConfig,
            _parent=parent,
            _metadata=_new(
                m.ContainerMetadata,
                ref_type=typing.List[typing.Any],  # noqa: UP006 (pickled as in 2021)
                object_type=list,
                optional=True,
                key=key,
                flags={},
                flags_root=False,
                resolver_cache=defaultdict(dict),
                key_type=int,
                element_type=typing.Any,
            ),
        )
        node._content = [omegaconf_tree(m, v, node, i) for i, v in enumerate(value)]
        return node
    meta = _new(
        m.Metadata,
        ref_type=ref_type,
        object_type=None,
        optional=ref_type is not int,
        key=key,
        flags={},
        flags_root=False,
        resolver_cache=defaultdict(dict),
    )
    if isinstance(value, enum.Enum):
        return _new(
            m.EnumNode,
            _metadata=meta,
            _parent=parent,
            _val=value,
            enum_type=type(value),
            fields={e.name: e.value for e in type(value)},
        )
    cls = {bool: m.BooleanNode, int: m.IntegerNode, float: m.FloatNode, str: m.StringNode}.get(type(value), m.AnyNode)
    return _new(cls, _metadata=meta, _parent=parent, _val=value)


def write_v3(
    path: Path,
    state_dict: dict,
    *,
    rnn_type: str,
    hidden: int,
    layers: int,
    bidirectional: bool,
    context: int = 20,
    window: str = "hamming",
    extra_hparams: dict | None = None,
    load_with_modules: bool = False,
) -> Path | dict:
    """A V3 Lightning checkpoint of a model with these (deepspeech.pytorch-named) weights;
    with ``load_with_modules``, what load_checkpoint makes of it while the modules it names
    are still importable."""
    with v3_modules() as m:
        cls = m.BiDirectionalConfig if bidirectional else m.UniDirectionalConfig
        kwargs = {} if bidirectional else {"lookahead_context": context}
        model_cfg = cls(rnn_type=m.RNNType[rnn_type], hidden_size=hidden, hidden_layers=layers, **kwargs)
        root = _new(m.DictConfig, _parent=None, _metadata=None)
        hparams = {
            "labels": list(LABELS),
            "model_cfg": omegaconf_tree(m, model_cfg, root, "model"),
            "precision": 16,
            "optim_cfg": omegaconf_tree(m, m.AdamConfig(), root, "optim"),
            "spect_cfg": omegaconf_tree(m, m.SpectConfig(window=m.SpectrogramWindow[window]), root, "spect"),
        }
        root._content = {
            "model": hparams["model_cfg"],
            "optim": hparams["optim_cfg"],
            "checkpoint": omegaconf_tree(m, m.ModelCheckpointConf(), root, "checkpoint"),
        }
        hparams.update(extra_hparams or {})
        checkpoint = {
            "epoch": 69,
            "global_step": 12345,
            "pytorch-lightning_version": "1.2.6",
            "state_dict": OrderedDict(state_dict),
            "callbacks": {
                m.ModelCheckpoint: {
                    "monitor": "wer",
                    "best_model_score": torch.tensor(9.57),
                    "best_model_path": "/models/epoch=69.ckpt",
                }
            },
            "optimizer_states": [
                {
                    "state": {0: {"step": 10, "exp_avg": torch.zeros(3)}},
                    "param_groups": [{"lr": 1.5e-4, "betas": (0.9, 0.999), "params": [0]}],
                }
            ],
            "lr_schedulers": [{"gamma": 0.99, "base_lrs": [1.5e-4], "last_epoch": 69, "_step_count": 70}],
            "native_amp_scaling_state": {"scale": 65536.0, "_growth_factor": 2.0, "_growth_tracker": 12},
            "hparams_name": "kwargs",
            "hyper_parameters": hparams,
        }
        torch.save(checkpoint, path)
        if load_with_modules:
            return load_checkpoint(path)
    return path


def v3_reference(bidirectional: bool = False, seed: int = 11) -> RefDeepSpeech:
    return randomised(RefDeepSpeech("gru", 10, 2, bidirectional, context=5), seed=seed)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_v3_checkpoint_imports_exactly(tmp_path, capsys, bidirectional):
    ref = v3_reference(bidirectional)
    path = write_v3(
        tmp_path / "an4.ckpt",
        ref.state_dict(),
        rnn_type="gru",
        hidden=10,
        layers=2,
        bidirectional=bidirectional,
        context=5,
        window="hann",
    )
    assert not any(name.split(".")[0] in ("omegaconf", "deepspeech_pytorch", "pytorch_lightning") for name in sys.modules)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)  # it does hold Python objects
    ours, ckpt = load_model(path)
    assert not any(name.split(".")[0] in ("omegaconf", "deepspeech_pytorch", "pytorch_lightning") for name in sys.modules), (
        "the import loaded a module the file names"
    )
    assert ckpt.imported_from == {
        "toolkit": "deepspeech.pytorch",
        "version": "V3",
        "file": "an4.ckpt",
        "model_config_class": "BiDirectionalConfig" if bidirectional else "UniDirectionalConfig",
        "precision": 16,
        "epoch": 69,
        "global_step": 12345,
        "pytorch-lightning_version": "1.2.6",
    }
    assert ckpt.audio_config == AudioConfig(window="hann", window_periodic=True, pad_mode="reflect", int16_divisor=32768)
    assert (ours.cfg.rnn_type, ours.cfg.hidden_size, ours.cfg.hidden_layers, ours.cfg.bidirectional) == (
        "gru",
        10,
        2,
        bidirectional,
    )
    assert compare(ref, ours) < 1e-5

    out = tmp_path / "an4.pth"
    assert (
        model_cli.main(
            ["--import-deepspeech-pytorch", str(path), "--export", str(out), "--pad-mode", "constant", "--fp16-weights"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "deepspeech.pytorch V3 checkpoint" in printed and "window_periodic=True" in printed
    raw = torch.load(out, weights_only=True)  # the export is plain data
    assert AudioConfig.from_dict(raw["audio_config"]) == AudioConfig(window="hann", pad_mode="constant")
    assert raw["weights_dtype"] == "float16" and raw["model_config"]["conv_bias"] is True
    assert raw["imported_from"]["version"] == "V3"


def test_v3_real_omegaconf(tmp_path):
    """Where omegaconf is installed (it is no dependency): a checkpoint pickled from real
    OmegaConf structured configs imports the same way."""
    omegaconf = pytest.importorskip("omegaconf")
    ref = v3_reference(False, seed=4)
    with v3_modules(omegaconf=False) as m:
        cfg = omegaconf.OmegaConf.create(
            {
                "model": omegaconf.OmegaConf.structured(
                    m.UniDirectionalConfig(rnn_type=m.RNNType.gru, hidden_size=10, hidden_layers=2, lookahead_context=5)
                ),
                "optim": omegaconf.OmegaConf.structured(m.AdamConfig()),
                "spect": omegaconf.OmegaConf.structured(m.SpectConfig()),
            }
        )
        hparams = {
            "labels": list(LABELS),
            "model_cfg": cfg.model,
            "precision": 32,
            "optim_cfg": cfg.optim,
            "spect_cfg": cfg.spect,
        }
        torch.save({"state_dict": ref.state_dict(), "hyper_parameters": hparams, "epoch": 1}, tmp_path / "real.ckpt")
    ours, ckpt = load_model(tmp_path / "real.ckpt")
    assert ckpt.imported_from["model_config_class"] == "UniDirectionalConfig"
    assert compare(ref, ours) < 1e-5


class SystemCall:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class EvalCall:
    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return eval, (self.source,)


class PopenCall:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __reduce__(self):
        return subprocess.Popen, (self.argv,)


@pytest.mark.parametrize(
    "payload,refused",
    [
        (lambda marker: SystemCall(f"touch {marker}"), f"refused {os.system.__module__}.system"),
        (lambda marker: EvalCall(f"open({str(marker)!r}, 'w')"), "refused builtins.eval"),
        (lambda marker: PopenCall(["touch", str(marker)]), "refused subprocess.Popen"),
    ],
)
def test_v3_pickle_payloads_are_refused_without_running(tmp_path, capsys, payload, refused):
    marker = tmp_path / "payload_ran"
    path = write_v3(
        tmp_path / "evil.ckpt",
        v3_reference().state_dict(),
        rnn_type="gru",
        hidden=10,
        layers=2,
        bidirectional=False,
        context=5,
        extra_hparams={"note": payload(marker)},
    )
    with pytest.raises(dspt_import.UnsafeCheckpointError) as info:
        dspt_import.load_restricted(path)
    message = str(info.value)
    assert refused in message and str(path) in message and "nothing in it was run" in message
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == message
    assert transcribe.main(["--model-path", str(path), "--audio-path", str(EXAMPLES / "an421-menk-b.wav")]) == 2
    assert refused in capsys.readouterr().err
    assert model_cli.main(["--import-deepspeech-pytorch", str(path), "--export", str(tmp_path / "x.pth")]) == 2
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "x.pth").exists()


def test_v3_names_in_allowed_namespaces_never_run_their_code(tmp_path):
    """A class named inside an allowed namespace is only ever a stand-in: even with its real
    module importable during the load, neither its constructor nor its __setstate__ runs."""
    marker = tmp_path / "code_ran"
    evil = types.ModuleType("deepspeech_pytorch.evil")

    class Hook:
        def __init__(self, *args):
            marker.write_text("init")

        def __setstate__(self, state):
            marker.write_text("setstate")

        def __reduce__(self):
            return Hook, ("x",), {"a": 1}

    Hook.__module__, Hook.__qualname__ = evil.__name__, "Hook"
    evil.Hook = Hook
    sys.modules[evil.__name__] = evil
    try:
        ckpt = write_v3(
            tmp_path / "hook.ckpt",
            v3_reference().state_dict(),
            rnn_type="gru",
            hidden=10,
            layers=2,
            bidirectional=False,
            context=5,
            extra_hparams={"hook": object.__new__(Hook)},
            load_with_modules=True,
        )
    finally:
        sys.modules.pop(evil.__name__)
    assert not marker.exists(), marker.read_text()
    assert ckpt.imported_from["version"] == "V3"


def test_v3_inconsistent_files(tmp_path):
    ref = v3_reference()
    path = write_v3(tmp_path / "a.ckpt", ref.state_dict(), rnn_type="gru", hidden=12, layers=2, bidirectional=False, context=5)
    with pytest.raises(CheckpointError, match=r"declares hidden_size 12 \(weights: 10\)"):
        load_checkpoint(path)
    path = write_v3(tmp_path / "b.ckpt", ref.state_dict(), rnn_type="lstm", hidden=10, layers=2, bidirectional=True, context=5)
    with pytest.raises(CheckpointError, match="rnn_type 'lstm'.*bidirectional True"):
        load_checkpoint(path)
    stray = dict(ref.state_dict(), **{"decoder.extra.weight": torch.ones(2)})
    path = write_v3(tmp_path / "c.ckpt", stray, rnn_type="gru", hidden=10, layers=2, bidirectional=False, context=5)
    with pytest.raises(CheckpointError, match="not deepspeech.pytorch's DeepSpeech layout: decoder.extra.weight"):
        load_checkpoint(path)
    ok = dict(ref.state_dict(), **{"wer.wer": torch.tensor(0), "cer.n_chars": torch.tensor(0)})  # metric states
    path = write_v3(tmp_path / "d.ckpt", ok, rnn_type="gru", hidden=10, layers=2, bidirectional=False, context=5)
    assert load_checkpoint(path).model_config.hidden_size == 10


def test_import_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        model_cli.main(["--import-deepspeech-pytorch", "old.pth"])
    assert info.value.code == 2 and "needs --export" in capsys.readouterr().err
    ours = tmp_path / "ours.pth"
    model = build_model(ModelConfig(hidden_size=8, hidden_layers=1))
    save_checkpoint(ours, Checkpoint.from_model(model, AudioConfig(), list(LABELS)))
    with pytest.raises(SystemExit) as info:
        model_cli.main(["--model-path", str(ours), "--pad-mode", "constant"])
    assert info.value.code == 2 and "--pad-mode applies to --import-deepspeech-pytorch" in capsys.readouterr().err
    assert model_cli.main(["--import-deepspeech-pytorch", str(ours), "--export", str(tmp_path / "x.pth")]) == 2
    assert "nothing to import" in capsys.readouterr().err
    assert (
        model_cli.main(["--import-deepspeech-pytorch", str(tmp_path / "missing.pth"), "--export", str(tmp_path / "x.pth")]) == 2
    )
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        model_cli.main(["--model-path", str(ours), "--import-deepspeech-pytorch", str(ours)])


@pytest.mark.slow
def test_v3_size_checkpoint_imports_quickly_without_network(tmp_path, monkeypatch, capsys):
    """V3's default model (5 x 1024 BiLSTM, 86.6 M parameters) imports in <= 10 s, offline."""
    cfg = ModelConfig(hidden_size=1024, hidden_layers=5, rnn_type="lstm", bidirectional=True, **dspt_import.THEIR_FRONT_END)
    with torch.device("meta"):
        shapes = build_model(cfg).state_dict()
    torch.manual_seed(0)
    weights = {
        dspt_import.their_key(k): torch.randn(v.shape) if v.is_floating_point() else torch.zeros((), dtype=v.dtype)
        for k, v in shapes.items()
    }
    src = write_v3(tmp_path / "librispeech.ckpt", weights, rnn_type="lstm", hidden=1024, layers=5, bidirectional=True)
    del weights

    def no_network(*args, **kwargs):
        raise AssertionError("the import touched the network")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.perf_counter()
    assert model_cli.main(["--import-deepspeech-pytorch", str(src), "--export", str(tmp_path / "librispeech.pth")]) == 0
    seconds = time.perf_counter() - start
    assert "5 x 1024 bidirectional LSTM" in capsys.readouterr().out
    print(f"V3-size import: {seconds:.2f} s")
    assert seconds <= 10, seconds
    model, _ = load_model(tmp_path / "librispeech.pth")
    assert count_parameters(model) == 86_618_400  # V3's 86.6 M


@needs_fixtures
def test_imported_model_exports_to_onnx(tmp_path):
    """A converted model runs through the ONNX export (the torch-free runtime) with the reference's
    probabilities and text."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from inference import OnnxRecognizer

    out = tmp_path / "imported.pth"
    assert (
        model_cli.main(
            ["--import-deepspeech-pytorch", str(FIXTURES / "dspt_v2_gru_bi.pth"), "--export", str(out), "--pad-mode", "constant"]
        )
        == 0
    )
    onnx_path = tmp_path / "imported.onnx"
    assert model_cli.main(["--model-path", str(out), "--export-onnx", str(onnx_path)]) == 0
    rec = OnnxRecognizer(onnx_path, threads=1)
    for wav, ref in _references()["dspt_v2_gru_bi.pth"].items():
        spect = spectrogram(load_audio(EXAMPLES / wav, rec.audio_config.sample_rate), rec.audio_config)
        probs = np.exp(rec.log_probs([spect])[0])
        assert np.abs(probs - np.load(FIXTURES / ref["probs"])).max() < TOL
        assert best_path(probs, rec.labels) == ref["greedy"]


@needs_fixtures
def test_old_file_served_and_beam_decoded(tmp_path, capsys):
    """An old file given directly to the server's /transcribe and to transcribe.py with beam search + LM."""
    pytest.importorskip("fastapi")
    pytest.importorskip("flashlight.lib.text")
    import httpx
    from serve import make_service, serve

    old = FIXTURES / "dspt_v2_gru_bi.pth"
    clip = EXAMPLES / next(iter(TRANSCRIPTS))
    assert transcribe.main(["--model-path", str(old), "--audio-path", str(clip)]) == 0
    offline = json.loads(capsys.readouterr().out)["output"][0]["transcription"]
    limits = dict(
        max_upload_bytes=2_000_000,
        max_upload_seconds=30.0,
        max_stream_seconds=5.0,
        max_streams=1,
        max_pending=2,
        idle_timeout=5.0,
        max_message_bytes=64_000,
        workers=1,
        stream_workers=1,
    )
    with serve(make_service(old, None, **limits)) as address:
        r = httpx.post(f"http://{address}/transcribe", files={"file": (clip.name, clip.read_bytes())}, timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "OK"
    assert r.json()["transcription"] == offline
    lm = REPO / "models" / "an4_3gram.arpa"
    assert transcribe.main(["--model-path", str(old), "--audio-path", str(clip), "--decoder", "beam", "--lm-path", str(lm)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["_meta"]["decoder"]["type"] == "beam" and "transcription" in out["output"][0]
