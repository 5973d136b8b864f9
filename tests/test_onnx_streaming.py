"""The ONNX streaming step graph and its torch-free runner: any chunking gives the offline
log-probs and text, and the PyTorch streaming engine's, frame for frame; metadata; refusals; int8."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stream_models import LABELS, random_chunks, save_model, speechlike, tiny_offline_model, tiny_stream_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import model as model_cli  # noqa: E402
import onnx_export  # noqa: E402
from data.audio import AudioConfig, spectrogram  # noqa: E402
from decoder import GreedyDecoder  # noqa: E402
from inference import OnnxRecognizer, TorchRecognizer, transcribe_audio  # noqa: E402
from model import ModelConfig, build_model  # noqa: E402
from onnx_runtime import OnnxModelError  # noqa: E402
from onnx_streaming import OnnxStreamingRecognizer, conv_delays  # noqa: E402
from streaming import StreamingRecognizer, algorithmic_latency  # noqa: E402

TOL = 1e-4  # against PyTorch, plus RTOL of |log-prob|: onnxruntime's kernels round differently
RTOL = 1e-5  # (the offline ONNX export differs from PyTorch as much, e.g. 1.3e-4 at a log-prob of -26.8)
EXACT = 1e-5  # against the offline ONNX export: the same kernels
MODELS = {  # name: (seed, overrides); LSTM and GRU, lookahead contexts 1 to 5, conv time strides 2 and 4
    "lstm-c1": (0, dict(rnn_type="lstm", hidden_layers=1, lookahead_context=1, conv_time_stride=2)),
    "gru-c2": (1, dict(rnn_type="gru", hidden_layers=2, lookahead_context=2, conv_time_stride=2)),
    "lstm-c3": (2, dict(rnn_type="lstm", hidden_layers=2, lookahead_context=3, conv_time_stride=2)),
    "gru-c4": (3, dict(rnn_type="gru", hidden_layers=1, lookahead_context=4, conv_time_stride=2)),
    "lstm-c5": (4, dict(rnn_type="lstm", hidden_layers=2, lookahead_context=5, conv_time_stride=2)),
    "lstm-c3-stride4": (5, dict(rnn_type="lstm", hidden_layers=2, lookahead_context=3, conv_time_stride=4)),
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The PyTorch references on one thread: with more, a busy machine slows them a hundredfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """{name: (model, audio config, step graph path, offline ONNX recognizer)}; "lstm-c5" with normalize none."""
    root = tmp_path_factory.mktemp("onnx_stream")
    out = {}
    for name, (seed, overrides) in MODELS.items():
        model, audio_config = tiny_stream_model(seed, normalize="none" if name == "lstm-c5" else "global", **overrides)
        path = onnx_export.export_streaming_onnx(model, audio_config, LABELS, root / f"{name}.onnx", info={"epochs": 2})
        offline_onnx = OnnxRecognizer(onnx_export.export_onnx(model, audio_config, LABELS, root / f"{name}_offline.onnx"), 1)
        out[name] = (model, audio_config, path, offline_onnx)
    return out


def offline(model, audio_config, audio: np.ndarray) -> tuple[np.ndarray, dict]:
    """(log-probs, transcribe_audio result) of the whole utterance with PyTorch."""
    feats = spectrogram(audio, audio_config)
    with torch.no_grad():
        lp, _ = model(torch.from_numpy(feats)[None, None], torch.tensor([feats.shape[1]]))
    rec = TorchRecognizer(model, audio_config, LABELS)
    return lp[0].numpy(), transcribe_audio(rec, GreedyDecoder(LABELS), audio, chunk_seconds=0)


def check_stream(onnx_rec, model, audio_config, audio: np.ndarray, bounds, where: str, offline_onnx=None) -> dict:
    """Feed ``bounds`` chunks to the ONNX runner and to the PyTorch engine side by side: the same
    final frames after every chunk, and at the end the offline log-probs (of PyTorch and of the
    offline ONNX export), text and word times."""
    onnx_rec.reset()
    torch_rec = StreamingRecognizer(model, audio_config, LABELS)
    for a, b in bounds:
        assert onnx_rec.accept(audio[a:b]) == torch_rec.accept(audio[a:b]), where
        assert onnx_rec.n_frames == torch_rec.n_frames, where
    result, torch_result = onnx_rec.finish(), torch_rec.finish()
    ref_lp, ref = offline(model, audio_config, audio)
    lp = onnx_rec.log_probs()
    assert lp.shape == ref_lp.shape == torch_rec.log_probs().shape, where
    assert np.allclose(lp, ref_lp, rtol=RTOL, atol=TOL), (where, np.abs(lp - ref_lp).max())
    assert np.allclose(lp, torch_rec.log_probs(), rtol=RTOL, atol=TOL), where
    if offline_onnx is not None:
        (onnx_lp,) = offline_onnx.log_probs([spectrogram(audio, audio_config)])
        assert np.abs(lp - onnx_lp).max() <= EXACT, (where, np.abs(lp - onnx_lp).max())
    assert result["text"] == ref["transcription"] == torch_result["text"], where
    assert result["words"] == ref["words"] == torch_result["words"], where
    assert result["duration"] == torch_result["duration"] == round(len(audio) / 16000, 3), where
    return result


@pytest.mark.parametrize("name", list(MODELS))
def test_random_chunkings_equal_offline_and_the_pytorch_stream(exported, name):
    model, audio_config, path, offline_onnx = exported[name]
    rec = OnnxStreamingRecognizer(path, threads=1)
    for seed in range(6):
        rng = np.random.default_rng(seed + 10 * list(MODELS).index(name))
        audio = speechlike(float(rng.uniform(0.01, 2.5)), seed=seed)
        check_stream(
            rec, model, audio_config, audio, random_chunks(rng, len(audio), "mixed"), f"{name} seed {seed}", offline_onnx
        )


def test_fixed_and_sub_hop_chunk_sizes(exported):
    model, audio_config, path, offline_onnx = exported["lstm-c3"]
    rec = OnnxStreamingRecognizer(path, threads=1)
    audio = speechlike(2.3, seed=4)
    for chunk_ms in (10, 20, 100, 500, 2000):
        bounds = [(a, a + 16 * chunk_ms) for a in range(0, len(audio), 16 * chunk_ms)]
        result = check_stream(rec, model, audio_config, audio, bounds, f"{chunk_ms} ms", offline_onnx)
        assert result["text"]  # the random model says something
    short = audio[:6000]
    check_stream(rec, model, audio_config, short, random_chunks(np.random.default_rng(1), len(short), "tiny"), "sub-hop chunks")


@pytest.mark.parametrize("name", ["lstm-c1", "gru-c4"])
def test_very_short_audio_and_odd_frame_counts(exported, name):
    """Down to no samples at all (one STFT frame); 1 + n // 160 input frames, odd and even."""
    model, audio_config, path, offline_onnx = exported[name]
    rec = OnnxStreamingRecognizer(path, threads=1)
    for n in (0, 1, 159, 160, 161, 300, 319, 320, 321, 480, 1000, 1761, 2560, 2720):
        audio = speechlike(n / 16000, seed=n) if n else np.zeros(0, dtype=np.float32)
        check_stream(rec, model, audio_config, audio, [(0, n)], f"{n} samples in one chunk", offline_onnx)
        assert rec.n_frames == model.output_lengths(audio_config.n_frames(n))
        if n > 600:
            check_stream(rec, model, audio_config, audio, [(a, a + 97) for a in range(0, n, 97)], f"{n} samples, 97 at a time")


def test_reset_replays_identically_and_finish_is_final(exported):
    from streaming_common import StreamingError

    _, _, path, _ = exported["gru-c2"]
    rec = OnnxStreamingRecognizer(path, threads=1)
    audio = speechlike(1.0, seed=8)
    rec.accept(audio)
    first, first_lp = rec.finish(), rec.log_probs().copy()
    with pytest.raises(StreamingError, match="reset"):
        rec.accept(audio)
    with pytest.raises(StreamingError, match="already"):
        rec.finish()
    rec.reset()
    assert rec.n_frames == 0 and rec.partial_text() == "" and rec.samples_received == 0
    rec.accept(audio[:5000])
    rec.accept(audio[5000:])
    assert rec.finish() == first and np.array_equal(rec.log_probs(), first_lp)
    with pytest.raises(StreamingError, match="NaN"):
        OnnxStreamingRecognizer(path).accept(np.array([0.0, np.nan], dtype=np.float32))


def test_metadata_describe_the_step_graph(exported, capsys):
    import onnx

    model, audio_config, path, _ = exported["lstm-c3"]
    rec = OnnxStreamingRecognizer(path, threads=1)
    assert rec.labels == LABELS and rec.audio_config == audio_config  # global statistics included
    assert rec.metadata["model_config"] == model.cfg.__dict__ and rec.metadata["precision"] == "float32"
    assert rec.frame_shift == pytest.approx(0.02) and rec.info["epochs"] == 2 and rec.info["streaming"]
    assert rec.latency == algorithmic_latency(model.cfg, audio_config)
    h, c, f1 = model.cfg.hidden_size, model.cfg.conv_channels, 81
    shapes = {
        "conv1_cache": (1, 1, 161, 9),
        "conv2_cache": (1, c, f1, 10),
        "rnn_h": (2, 1, h),
        "rnn_c": (2, 1, h),
        "lookahead_cache": (1, h, 2),
    }
    assert {s.name: s.shape for s in rec.spec.states} == shapes
    assert rec.spec.convs == ((11, 2, 5), (11, 1, 5)) and conv_delays(rec.spec.convs) == [2, 7]
    graph = onnx.load(str(path)).graph
    values = (*graph.input, *graph.output)
    dims = {v.name: tuple(d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim) for v in values}
    assert [i.name for i in graph.input] == ["features", "conv_valid", *shapes]
    assert [o.name for o in graph.output] == ["log_probs", *(f"{n}_out" for n in shapes)]
    assert dims["features"] == (1, 161, "time") and dims["conv_valid"] == (2, 2)
    for name, shape in shapes.items():
        assert dims[name] == dims[f"{name}_out"] == shape
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["streaming"])["states"][0] == {
        "input": "conv1_cache",
        "output": "conv1_cache_out",
        "shape": [1, 1, 161, 9],
        "initial": "zeros",
    }
    # context 1: no lookahead cache; a GRU: no cell state
    context1 = OnnxStreamingRecognizer(exported["lstm-c1"][2])
    assert [s.name for s in context1.spec.states] == ["conv1_cache", "conv2_cache", "rnn_h", "rnn_c"]
    assert [s.name for s in OnnxStreamingRecognizer(exported["gru-c4"][2]).spec.states][-2:] == ["rnn_h", "lookahead_cache"]
    assert model_cli.main(["--model-path", str(path)]) == 0
    out = capsys.readouterr().out
    assert "streaming:     step graph" in out and "rnn_c (2, 1, 16)" in out


def test_offline_and_streaming_files_are_not_mixed_up(exported, tmp_path):
    model, audio_config, path, _ = exported["gru-c2"]
    with pytest.raises(OnnxModelError, match="streaming step graph.*--stream"):
        OnnxRecognizer(path)
    offline_path = onnx_export.export_onnx(model, audio_config, LABELS, tmp_path / "offline.onnx")
    with pytest.raises(OnnxModelError, match="offline ONNX export.*--streaming"):
        OnnxStreamingRecognizer(offline_path)
    import onnx

    damaged = onnx.load(str(path))
    onnx_export.set_metadata(damaged, {"streaming": json.dumps({"version": 99})})
    onnx.save(damaged, str(tmp_path / "newer.onnx"))
    with pytest.raises(OnnxModelError, match="version 99"):
        OnnxStreamingRecognizer(tmp_path / "newer.onnx")


def test_models_that_cannot_stream_are_refused(tmp_path, capsys):
    bi, bi_audio = tiny_offline_model(0)
    uni, uni_audio = tiny_stream_model(0)
    ds1 = build_model(ModelConfig(arch="ds1", bidirectional=False, hidden_size=8, hidden_layers=1))
    cases = {
        "bidirectional": (bi, uni_audio),
        "per utterance": (uni, AudioConfig(normalize="utterance")),
        "DeepSpeech 2": (ds1, AudioConfig(normalize="none")),
    }
    for message, (model, audio_config) in cases.items():
        with pytest.raises(onnx_export.NotStreamableError, match=message):
            onnx_export.export_streaming_onnx(model, audio_config, LABELS, tmp_path / "x.onnx")
        ckpt = save_model(tmp_path / "m.pth", model, audio_config)
        with pytest.raises(SystemExit) as info:
            model_cli.main(["--model-path", str(ckpt), "--export-onnx", str(tmp_path / "x.onnx"), "--streaming"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "error: --streaming: " in err and message in err
    assert not (tmp_path / "x.onnx").exists()
    for argv, message in (
        (["--streaming"], "--streaming applies to --export-onnx"),
        (["--export-onnx", "x.onnx", "--streaming", "--int8", "--calibration-manifest", "t.csv"], "not apply to --streaming"),
    ):
        with pytest.raises(SystemExit):
            model_cli.main(["--model-path", "m.pth", *argv])
        assert message in capsys.readouterr().err


def test_cli_export_and_int8_step_graph(exported, tmp_path, capsys):
    """model.py --export-onnx --streaming [--int8] on a checkpoint; int8 stays close to fp32, as
    the offline int8 export does."""
    model, audio_config, _, _ = exported["lstm-c3"]
    ckpt = save_model(tmp_path / "s.pth", model, audio_config)
    fp32, int8 = tmp_path / "s.onnx", tmp_path / "s_int8.onnx"
    assert model_cli.main(["--model-path", str(ckpt), "--export-onnx", str(fp32), "--streaming"]) == 0
    assert "fp32, streaming step graph" in capsys.readouterr().out
    assert model_cli.main(["--model-path", str(ckpt), "--export-onnx", str(int8), "--streaming", "--int8"]) == 0
    assert "int8 dynamic, streaming step graph" in capsys.readouterr().out
    import onnx

    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(str(int8)).graph.node}
    rec8 = OnnxStreamingRecognizer(int8, threads=1)
    assert rec8.metadata["precision"] == "int8-dynamic" and rec8.spec == OnnxStreamingRecognizer(fp32).spec
    offline_fp32 = onnx_export.export_onnx(model, audio_config, LABELS, tmp_path / "o.onnx")
    offline8 = onnx_export.quantize_onnx(offline_fp32, tmp_path / "o8.onnx")
    audio = speechlike(2.0, seed=3)
    ref_lp, _ = offline(model, audio_config, audio)
    (off8_lp,) = OnnxRecognizer(offline8, threads=1).log_probs([spectrogram(audio, audio_config)])
    for size in (320, 1600, 32000):
        rec8.reset()
        for a in range(0, len(audio), size):
            rec8.accept(audio[a : a + size])
        rec8.finish()
        lp = rec8.log_probs()
        assert lp.shape == ref_lp.shape and np.allclose(np.exp(lp).sum(-1), 1.0, atol=1e-4)
        assert np.abs(lp - ref_lp).max() <= 2 * np.abs(off8_lp - ref_lp).max() + 0.05, size
    with pytest.raises(onnx_export.OnnxExportError, match="dynamic int8 only"):
        onnx_export.quantize_onnx(fp32, tmp_path / "static.onnx", [spectrogram(audio, audio_config)])
