"""streaming.py: any chunking gives the offline log-probs and text; refusals; latency; resampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO
from stream_models import LABELS, random_chunks, save_model, speechlike, tiny_offline_model, tiny_stream_model

from data.audio import AudioConfig, resample, spectrogram
from decoder import GreedyDecoder
from inference import TorchRecognizer, transcribe_audio
from model import ModelConfig, build_model
from streaming import (
    StreamingError,
    StreamingRecognizer,
    StreamResampler,
    accept_many,
    algorithmic_latency,
    load_streaming_recognizer,
)

TOL = 1e-4


def offline(model, audio_config, audio: np.ndarray) -> tuple[np.ndarray, dict]:
    """(log-probs, transcribe_audio result) of the whole utterance, as transcribe.py computes them."""
    feats = spectrogram(audio, audio_config)
    with torch.no_grad():
        lp, _ = model(torch.from_numpy(feats)[None, None], torch.tensor([feats.shape[1]]))
    rec = TorchRecognizer(model, audio_config, LABELS)
    return lp[0].numpy(), transcribe_audio(rec, GreedyDecoder(LABELS), audio, chunk_seconds=0)


def stream(rec: StreamingRecognizer, audio: np.ndarray, bounds: list[tuple[int, int]]) -> tuple[dict, list[str]]:
    partials = [rec.accept(audio[a:b]) for a, b in bounds]
    return rec.finish(), partials


def assert_same_as_offline(rec: StreamingRecognizer, model, audio_config, audio, result, where: str) -> None:
    ref_lp, ref = offline(model, audio_config, audio)
    lp = rec.log_probs()
    assert lp.shape == ref_lp.shape, where
    assert np.abs(lp - ref_lp).max() <= TOL, where
    assert result["text"] == ref["transcription"], where
    assert result["words"] == ref["words"], where


# ---------------------------------------------------------------------------- equality with offline


@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
def test_random_chunkings_equal_the_offline_forward(rnn_type):
    """Hypothesis-style: random models (layers, lookahead, conv time stride), lengths and chunkings per seed."""
    for seed in range(8):
        rng = np.random.default_rng(seed)
        model, audio_config = tiny_stream_model(
            seed,
            rnn_type=rnn_type,
            hidden_layers=int(rng.integers(1, 3)),
            lookahead_context=int(rng.integers(1, 6)),
            conv_time_stride=4 if seed % 2 else 2,
        )
        audio = speechlike(float(rng.uniform(0.01, 2.5)), seed=seed)
        rec = StreamingRecognizer(model, audio_config, LABELS)
        for trial in range(2):
            bounds = random_chunks(rng, len(audio), "mixed")
            result, _ = stream(rec, audio, bounds)
            assert_same_as_offline(rec, model, audio_config, audio, result, f"{rnn_type} seed {seed} trial {trial}")
            rec.reset()


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_streams_batched_together_equal_the_offline_forward(rnn_type):
    """accept_many: streams of different lengths fed random chunks in lockstep (some empty,
    some shorter than a hop, some finished early) each end with their own offline result."""
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        model, audio_config = tiny_stream_model(seed, rnn_type=rnn_type, hidden_layers=2, lookahead_context=3)
        audios = [speechlike(float(rng.uniform(0.05, 2.0)), seed=seed * 10 + k) for k in range(5)]
        recs = [StreamingRecognizer(model, audio_config, LABELS) for _ in audios]
        schedules = [random_chunks(rng, len(a), "mixed") for a in audios]
        partials: list[list[str]] = [[] for _ in audios]
        for step in range(max(len(b) for b in schedules)):
            live = [k for k in range(len(audios)) if step < len(schedules[k])]
            chunks = [audios[k][slice(*schedules[k][step])] for k in live]
            for k, text in zip(live, accept_many([recs[k] for k in live], chunks)):
                partials[k].append(text)
            for k in range(len(audios)):
                if step == len(schedules[k]) - 1:
                    result = recs[k].finish()
                    assert_same_as_offline(recs[k], model, audio_config, audios[k], result, f"{rnn_type} seed {seed} stream {k}")
                    assert result["text"].startswith(partials[k][-1].rstrip())


def test_accept_many_checks_its_arguments():
    model, audio_config = tiny_stream_model(0)
    other, _ = tiny_stream_model(1)
    a, b = StreamingRecognizer(model, audio_config, LABELS), StreamingRecognizer(other, audio_config, LABELS)
    chunk = speechlike(0.1)
    with pytest.raises(ValueError, match="share one model"):
        accept_many([a, b], [chunk, chunk])
    with pytest.raises(ValueError, match="appears twice"):
        accept_many([a, a], [chunk, chunk])
    with pytest.raises(ValueError, match="2 recognizers for 1 chunks"):
        accept_many([a, StreamingRecognizer(model, audio_config, LABELS)], [chunk])
    c = StreamingRecognizer(model, audio_config, LABELS)
    bad = chunk.copy()
    bad[3] = np.nan
    with pytest.raises(StreamingError):
        accept_many([a, c], [chunk, bad])
    assert a.samples_received == 0 and c.samples_received == 0  # nothing was fed
    c.finish()
    with pytest.raises(StreamingError, match="finish"):
        accept_many([a, c], [chunk, chunk])
    assert accept_many([], []) == []


def test_chunks_shorter_than_one_hop():
    model, audio_config = tiny_stream_model(3, lookahead_context=4)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        audio = speechlike(float(rng.uniform(0.2, 0.5)), seed=seed + 10)
        rec = StreamingRecognizer(model, audio_config, LABELS)
        result, _ = stream(rec, audio, random_chunks(rng, len(audio), "tiny"))
        assert_same_as_offline(rec, model, audio_config, audio, result, f"seed {seed}")


@pytest.mark.parametrize("chunk_ms", [10, 20, 100, 500, 2000])
def test_fixed_chunk_sizes(chunk_ms):
    model, audio_config = tiny_stream_model(4, lookahead_context=5)
    audio = speechlike(2.3, seed=4)
    rec = StreamingRecognizer(model, audio_config, LABELS)
    size = 16 * chunk_ms
    result, partials = stream(rec, audio, [(a, a + size) for a in range(0, len(audio), size)])
    assert_same_as_offline(rec, model, audio_config, audio, result, f"{chunk_ms} ms")
    assert result["text"]  # the random model says something
    assert result["duration"] == round(len(audio) / 16000, 3)


def test_whole_utterance_in_one_chunk_and_very_short_audio():
    model, audio_config = tiny_stream_model(5)
    for n in (0, 1, 159, 160, 161, 319, 320, 321, 1000, 1761):
        audio = speechlike(n / 16000, seed=n) if n else np.zeros(0, dtype=np.float32)
        rec = StreamingRecognizer(model, audio_config, LABELS)
        rec.accept(audio)
        result = rec.finish()
        assert_same_as_offline(rec, model, audio_config, audio, result, f"{n} samples")
        assert rec.n_frames == model.output_lengths(audio_config.n_frames(n))


def test_normalize_none_streams_too():
    model, audio_config = tiny_stream_model(6, normalize="none")
    audio = speechlike(1.2, seed=6)
    rec = StreamingRecognizer(model, audio_config, LABELS)
    result, _ = stream(rec, audio, random_chunks(np.random.default_rng(6), len(audio), "mixed"))
    assert_same_as_offline(rec, model, audio_config, audio, result, "normalize none")


def test_imported_feature_settings_stream_too():
    """A symmetric window and v2's int / 32767 scaling (deepspeech.pytorch imports) stream exactly;
    reflect padding is refused, and so is level normalisation."""
    import dataclasses

    from streaming import StreamingError

    model, base = tiny_stream_model(8)
    audio_config = dataclasses.replace(base, window_periodic=False, int16_divisor=32767)
    audio = speechlike(1.1, seed=8)
    rec = StreamingRecognizer(model, audio_config, LABELS)
    result, _ = stream(rec, audio, random_chunks(np.random.default_rng(8), len(audio), "mixed"))
    assert_same_as_offline(rec, model, audio_config, audio, result, "imported settings")
    with pytest.raises(StreamingError, match="reflect"):
        StreamingRecognizer(model, dataclasses.replace(base, pad_mode="reflect"), LABELS)
    with pytest.raises(StreamingError, match="level_db"):  # needs the whole utterance's level
        StreamingRecognizer(model, dataclasses.replace(base, level_db=-25.0), LABELS)
    with pytest.raises(StreamingError, match="remove_dc"):  # needs the whole utterance's mean
        StreamingRecognizer(model, dataclasses.replace(base, remove_dc=True), LABELS)


def test_partials_grow_into_the_final_text():
    model, audio_config = tiny_stream_model(7)
    audio = speechlike(3.0, seed=7)
    rec = StreamingRecognizer(model, audio_config, LABELS)
    result, partials = stream(rec, audio, [(a, a + 1600) for a in range(0, len(audio), 1600)])
    assert len(set(partials)) > 3
    for before, after in zip(partials, partials[1:] + [result["text"]]):
        assert after.startswith(before.rstrip()), (before, after)


def test_reset_replays_identically_and_finish_is_final():
    model, audio_config = tiny_stream_model(8)
    audio = speechlike(1.0, seed=8)
    rec = StreamingRecognizer(model, audio_config, LABELS)
    rec.accept(audio)
    first = rec.finish()
    with pytest.raises(StreamingError, match="reset"):
        rec.accept(audio)
    with pytest.raises(StreamingError, match="already"):
        rec.finish()
    rec.reset()
    assert rec.n_frames == 0 and rec.partial_text() == ""
    rec.accept(audio[:5000])
    rec.accept(audio[5000:])
    assert rec.finish() == first


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 100), dtype=np.float32), "shape"),
        (np.array([0.0, np.nan], dtype=np.float32), "NaN"),
        (np.array(["a"]), "dtype"),
    ],
)
def test_bad_samples_are_refused(bad, match):
    model, audio_config = tiny_stream_model(0)
    with pytest.raises(StreamingError, match=match):
        StreamingRecognizer(model, audio_config, LABELS).accept(bad)


def test_beam_decoder_final_equals_offline_beam():
    pytest.importorskip("flashlight.lib.text")
    from decoder import BeamCTCDecoder

    model, audio_config = tiny_stream_model(9)
    audio = speechlike(1.5, seed=9)
    beam = BeamCTCDecoder(LABELS, beam_width=8, top_paths=2)
    rec = StreamingRecognizer(model, audio_config, LABELS, decoder=beam)
    result, _ = stream(rec, audio, random_chunks(np.random.default_rng(9), len(audio), "mixed"))
    ref = transcribe_audio(TorchRecognizer(model, audio_config, LABELS), beam, audio, chunk_seconds=0)
    assert result["text"] == ref["transcription"]
    assert result["words"] == ref["words"]
    assert result["alternatives"] == ref["alternatives"]


# ---------------------------------------------------------------------------- refusals


def test_bidirectional_and_per_utterance_models_are_refused():
    model, audio_config = tiny_offline_model(0)
    with pytest.raises(StreamingError, match="bidirectional"):
        StreamingRecognizer(model, audio_config, LABELS)
    uni, _ = tiny_stream_model(0)
    with pytest.raises(StreamingError, match="per utterance"):
        StreamingRecognizer(uni, AudioConfig(normalize="utterance"), LABELS)
    ds1 = build_model(ModelConfig(arch="ds1", bidirectional=False, hidden_size=8, hidden_layers=1))
    with pytest.raises(StreamingError, match="DeepSpeech 2"):
        StreamingRecognizer(ds1, AudioConfig(normalize="none"), LABELS)
    with pytest.raises(StreamingError, match="labels"):
        StreamingRecognizer(uni, tiny_stream_model(0)[1], LABELS[:-1])


def test_shipped_bidirectional_model_is_refused():
    with pytest.raises(StreamingError, match="bidirectional.*--no-bidirectional --normalize global"):
        load_streaming_recognizer(REPO / "models" / "an4.pth")


def test_saved_streaming_checkpoint_loads(tmp_path):
    model, audio_config = tiny_stream_model(1)
    path = save_model(tmp_path / "s.pth", model, audio_config)
    rec = load_streaming_recognizer(path)
    audio = speechlike(0.7, seed=1)
    rec.accept(audio)
    assert rec.finish()["text"] == offline(model, audio_config, audio)[1]["transcription"]


# ---------------------------------------------------------------------------- latency


def test_algorithmic_latency_of_the_recipe():
    audio_config = AudioConfig(normalize="none")
    default = algorithmic_latency(ModelConfig(bidirectional=False), audio_config)
    assert ModelConfig().lookahead_context == 5 and ModelConfig().conv_time_stride == 4
    assert default.as_ms() == {"stft_ms": 10.0, "conv_ms": 150.0, "lookahead_ms": 160.0, "total_ms": 320.0}
    one = algorithmic_latency(ModelConfig(bidirectional=False, lookahead_context=1), audio_config)
    assert one.as_ms()["total_ms"] == 160.0
    theirs = algorithmic_latency(ModelConfig(bidirectional=False, lookahead_context=20, conv_time_stride=2), audio_config)
    assert theirs.as_ms() == {"stft_ms": 10.0, "conv_ms": 150.0, "lookahead_ms": 380.0, "total_ms": 540.0}


@pytest.mark.parametrize("context,stride", [(1, 2), (2, 2), (5, 2), (1, 4), (3, 4)])
def test_frames_are_final_as_soon_as_the_latency_allows(context, stride):
    """After n samples, exactly the output frames whose right context has arrived are final:
    frame j is centred at j * 10 ms * stride and needs `latency` seconds of audio after that."""
    model, audio_config = tiny_stream_model(2, lookahead_context=context, conv_time_stride=stride)
    rec = StreamingRecognizer(model, audio_config, LABELS)
    latency = round(algorithmic_latency(model.cfg, audio_config).total_s * 16000)
    if stride == 4:
        assert algorithmic_latency(model.cfg, audio_config).as_ms()["lookahead_ms"] == (context - 1) * 40.0
    step = 160 * stride  # samples per output frame
    audio = speechlike(1.5, seed=2)
    fed = 0
    for size in np.random.default_rng(context).integers(1, 700, size=60):
        rec.accept(audio[fed : fed + size])
        fed = min(len(audio), fed + int(size))
        expected = (fed - latency) // step + 1 if fed >= latency else 0
        assert rec.n_frames == expected, fed


# ---------------------------------------------------------------------------- resampling


@pytest.mark.parametrize(
    "rates", [(8000, 16000), (44100, 16000), (48000, 16000), (22050, 16000), (16000, 16000), (16000, 8000), (11025, 16000)]
)
def test_stream_resampler_equals_offline_resampling(rates):
    orig, target = rates
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(int(rng.integers(1, 20000))).astype(np.float32)
        rs = StreamResampler(orig, target)
        out = [rs.push(x[a:b]) for a, b in random_chunks(rng, len(x), "mixed")] + [rs.finish()]
        y = np.concatenate(out)
        ref = resample(x, orig, target)
        assert y.shape == ref.shape and np.abs(y - ref).max() <= 1e-6, (rates, seed)


def test_bench_streaming_reports_chunks_and_batched_streams(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_streaming", REPO / "bench" / "bench_streaming.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, audio_config = tiny_stream_model(5, lookahead_context=2)
    path = save_model(tmp_path / "s.pth", model, audio_config)
    argv = ["--model-path", str(path), "--chunk-ms", "50", "--seconds", "1.2", "--runs", "1", "--streams", "1", "3"]
    assert bench.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["chunk_ms"] for r in report["chunks"]] == [50]
    assert [r["streams"] for r in report["streams"]] == [1, 3]
    for row in report["streams"]:
        assert row["separate_median_ms"] > 0 and row["batched_median_ms"] > 0 and row["speedup"] > 0
    assert report["latency_ms"]["model"]["lookahead_ms"] == 40.0


def test_bench_streaming_refuses_too_little_audio_for_its_ticks(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_streaming", REPO / "bench" / "bench_streaming.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit):
        bench.main(["--seconds", "0.2", "--stream-chunk-ms", "100", "--streams", "2"])
    assert "at least 4 chunks" in capsys.readouterr().err
