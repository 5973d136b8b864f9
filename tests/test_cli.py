"""test.py and transcribe.py through main(argv), on a tiny model trained in the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_tone

import inference
import test as evaluate_cli  # the project's test.py, not the standard library's test package
import train
import transcribe
from data.audio import AudioConfig
from data.manifest import read_manifest, write_manifest
from decoder import load_outputs


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(model path, manifest) for a tiny DS2 trained for two epochs on generated audio."""
    root = tmp_path_factory.mktemp("cli")
    rows = []
    for i, text in enumerate(["A", "AB", "YES", "NO", "HELLO", "GO UP"]):
        wav = write_tone(root / "wav" / f"u{i}.wav", 0.5 + 0.1 * i, freq=200 + 60 * i, seed=i)
        txt = root / "txt" / f"u{i}.txt"
        txt.parent.mkdir(exist_ok=True)
        txt.write_text(text)
        rows.append((wav, txt))
    manifest = root / "manifest.csv"
    write_manifest(manifest, rows)
    model = root / "model.pth"
    assert (
        train.main(
            [
                "--train-manifest",
                str(manifest),
                "--val-manifest",
                str(manifest),
                "--save-folder",
                str(root / "ckpt"),
                "--model-path",
                str(model),
                "--hidden-size",
                "8",
                "--hidden-layers",
                "1",
                "--conv-channels",
                "4",
                "--epochs",
                "2",
                "--batch-size",
                "3",
                "--silent",
            ]
        )
        == 0
    )
    return model, manifest


def test_test_py_prints_summary_and_writes_report(trained, tmp_path, capsys):
    model, manifest = trained
    report = tmp_path / "report.json"
    assert (
        evaluate_cli.main(
            [
                "--model-path",
                str(model),
                "--test-manifest",
                str(manifest),
                "--report",
                str(report),
                "--verbose",
                "--silent",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("Ref: ") == 6 and "Hyp: " in out
    summary = [line for line in out.splitlines() if line.startswith("Test Summary")]
    assert len(summary) == 1
    data = json.loads(report.read_text())
    assert f"Average WER {data['wer']:.3f}\tAverage CER {data['cer']:.3f}" in summary[0]
    assert data["n_utterances"] == 6 and len(data["utterances"]) == 6
    assert {u["reference"] for u in data["utterances"]} == {"A", "AB", "YES", "NO", "HELLO", "GO UP"}
    assert data["decoder"] == {"type": "greedy"}


def test_test_py_greedy_numbers_match_a_manual_evaluation(trained, capsys):
    """The reported WER is corpus-level: total word edits over total reference words."""
    import Levenshtein

    from checkpoint import load_model
    from data.audio import load_audio, spectrogram
    from decoder import GreedyDecoder

    model_path, manifest = trained
    model, pkg = load_model(model_path)
    cfg = pkg.audio_config
    edits = words = 0
    for wav, txt, _ in read_manifest(manifest):
        spect = torch.from_numpy(spectrogram(load_audio(wav, cfg.sample_rate), cfg))
        with torch.no_grad():
            lp, lens = model(spect[None, None], torch.tensor([spect.shape[1]]))
        hyp = GreedyDecoder(pkg.labels).decode(lp, lens)[0][0].text
        ref = txt.read_text().strip()
        edits += Levenshtein.distance(ref.split(), hyp.split())
        words += len(ref.split())
    assert evaluate_cli.main(["--model-path", str(model_path), "--test-manifest", str(manifest), "--silent"]) == 0
    assert f"Average WER {100 * edits / words:.3f}" in capsys.readouterr().out


def test_test_py_beam_with_lm_and_saved_outputs(trained, tmp_path, capsys):
    pytest.importorskip("flashlight.lib.text")
    from data import build_lm

    model, manifest = trained
    lm = tmp_path / "lm.arpa"
    assert build_lm.main(["--manifest", str(manifest), "--order", "2", "--out", str(lm)]) == 0
    saved = tmp_path / "out.pt"
    report = tmp_path / "r.json"
    assert (
        evaluate_cli.main(
            [
                "--model-path",
                str(model),
                "--test-manifest",
                str(manifest),
                "--decoder",
                "beam",
                "--lm-path",
                str(lm),
                "--alpha",
                "0.5",
                "--beta",
                "1.0",
                "--beam-width",
                "8",
                "--save-output",
                str(saved),
                "--report",
                str(report),
                "--silent",
            ]
        )
        == 0
    )
    assert "Test Summary" in capsys.readouterr().out
    assert json.loads(report.read_text())["decoder"]["type"] == "beam"
    outputs = load_outputs(saved)
    assert len(outputs["log_probs"]) == 6 and sorted(outputs["references"])[0] == "A"
    assert outputs["frame_shift"] == pytest.approx(0.04)  # the default 40 ms output frames


def test_test_py_half_runs(trained, capsys):
    model, manifest = trained
    assert evaluate_cli.main(["--model-path", str(model), "--test-manifest", str(manifest), "--half", "--silent"]) == 0
    assert "Test Summary" in capsys.readouterr().out


def test_test_py_errors_name_the_file(trained, tmp_path, capsys):
    model, manifest = trained
    assert evaluate_cli.main(["--model-path", str(tmp_path / "nope.pth"), "--test-manifest", str(manifest)]) == 2
    assert "nope.pth" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    rows = read_manifest(manifest)
    odd = tmp_path / "odd.txt"
    odd.write_text("NAÏVE")
    write_manifest(bad, [(rows[0][0], odd)])
    assert evaluate_cli.main(["--model-path", str(model), "--test-manifest", str(bad), "--silent"]) == 2
    err = capsys.readouterr().err
    assert "odd.txt" in err and "Ï" in err
    assert evaluate_cli.main(["--model-path", str(model), "--test-manifest", str(manifest), "--alpha", "1"]) == 2
    assert "--decoder beam" in capsys.readouterr().err


def run_transcribe(capsys, *argv: str) -> tuple[int, dict]:
    rc = transcribe.main(list(argv))
    return rc, json.loads(capsys.readouterr().out)


def test_transcribe_json_offsets_and_resampled_stereo(trained, tmp_path, capsys):
    model, manifest = trained
    wav = read_manifest(manifest)[3][0]
    audio, sr = sf.read(wav)
    from scipy.signal import resample_poly

    stereo = tmp_path / "stereo8k.wav"
    sf.write(stereo, np.stack([resample_poly(audio, 1, 2)] * 2, axis=1), 8000)
    rc, out = run_transcribe(capsys, "--model-path", str(model), "--audio-path", str(wav), str(stereo), "--offsets")
    assert rc == 0
    assert [Path(o["audio_path"]).name for o in out["output"]] == [wav.name, "stereo8k.wav"]
    for entry in out["output"]:
        assert isinstance(entry["transcription"], str)
        assert entry["duration"] == pytest.approx(len(audio) / sr, abs=0.01)
        for w in entry["words"]:
            assert 0 <= w["start"] < w["end"] <= entry["duration"] + 0.02
            assert w["word"] in entry["transcription"].split()
    assert out["_meta"]["acoustic_model"]["path"] == str(model)
    assert out["_meta"]["decoder"]["type"] == "greedy" and out["_meta"]["language_model"] is None


def test_transcribe_folder_and_bad_files(trained, tmp_path, capsys):
    model, manifest = trained
    folder = tmp_path / "clips"
    folder.mkdir()
    write_tone(folder / "a.wav", 0.6)
    write_tone(folder / "sub" / "b.flac", 0.6, subtype="PCM_16")
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    (folder / "notes.txt").write_text("ignored")
    rc, out = run_transcribe(capsys, "--model-path", str(model), "--audio-path", str(folder), str(tmp_path / "missing.wav"))
    assert rc == 1  # something failed, the rest was transcribed
    by_name = {Path(o["audio_path"]).name: o for o in out["output"]}
    assert set(by_name) == {"a.wav", "b.flac", "broken.wav", "missing.wav"}
    assert "transcription" in by_name["a.wav"] and "transcription" in by_name["b.flac"]
    assert "broken.wav" in by_name["broken.wav"]["error"]
    assert "not found" in by_name["missing.wav"]["error"]


def test_transcribe_model_errors(tmp_path, capsys):
    assert transcribe.main(["--model-path", str(tmp_path / "none.pth"), "--audio-path", "x.wav"]) == 2
    assert "none.pth" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "foreign.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    assert transcribe.main(["--model-path", str(bad), "--audio-path", str(empty)]) == 2
    assert "foreign.pth" in capsys.readouterr().err


def test_chunk_bounds_cut_at_silence_and_cover_the_audio():
    cfg = AudioConfig()
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(16000 * 70).astype(np.float32)
    audio[16000 * 27 : 16000 * 27 + 800] = 0.0  # a silent 50 ms inside the first chunk's last quarter
    bounds = inference.chunk_bounds(audio, cfg.sample_rate, 30.0)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert 16000 * 27 <= bounds[0][1] <= 16000 * 27 + 800
    assert all(e - s <= 30 * 16000 for s, e in bounds)
    assert inference.chunk_bounds(audio[:16000], cfg.sample_rate, 30.0) == [(0, 16000)]
    assert inference.chunk_bounds(audio, cfg.sample_rate, 0) == [(0, len(audio))]


def test_long_audio_is_transcribed_in_chunks_with_bounded_memory(trained, monkeypatch):
    from checkpoint import load_model
    from decoder import GreedyDecoder

    model, pkg = load_model(trained[0])
    cfg = pkg.audio_config
    audio = np.tile(sf.read(read_manifest(trained[1])[5][0], dtype="float32")[0], 70)  # ~77 s
    seen = []
    real_forward = model.forward

    def spy(x, lengths):
        seen.append(x.shape[-1])
        return real_forward(x, lengths)

    monkeypatch.setattr(model, "forward", spy)
    recognizer = inference.TorchRecognizer(model, cfg, pkg.labels)
    result = inference.transcribe_audio(recognizer, GreedyDecoder(pkg.labels), audio, chunk_seconds=20.0)
    # chunks end in the last quarter of each 20 s window (they run shortest first)
    assert max(seen) <= 20 * 100 + 1 and sorted(seen)[1] >= 15 * 100  # all but the last chunk: 15-20 s
    assert sum(seen) == pytest.approx(len(audio) / 160, abs=len(seen))
    times = [w["start"] for w in result["words"]]
    assert times == sorted(times)
    assert not times or times[-1] <= len(audio) / cfg.sample_rate


@pytest.mark.an4
def test_real_an4_clips_including_8khz_stereo(trained, an4_dir, tmp_path, capsys):
    from scipy.signal import resample_poly

    model, _ = trained
    clips = [wav for wav, *_ in read_manifest(an4_dir / "an4_test_manifest.csv")[:3]]
    audio, sr = sf.read(clips[0])
    assert sr == 16000
    stereo = tmp_path / "an4_8k_stereo.wav"
    sf.write(stereo, np.stack([resample_poly(audio, 1, 2), resample_poly(audio, 1, 2)], axis=1), 8000)
    rc, out = run_transcribe(capsys, "--model-path", str(model), "--audio-path", *map(str, clips), str(stereo))
    assert rc == 0 and len(out["output"]) == 4
    assert all("transcription" in o for o in out["output"])
    rc = evaluate_cli.main(
        ["--model-path", str(model), "--test-manifest", str(an4_dir / "an4_val_manifest.csv"), "--silent", "--batch-size", "32"]
    )
    assert rc == 0 and "Test Summary" in capsys.readouterr().out


def test_test_py_workers_give_the_same_numbers_and_cuda_is_checked(trained, capsys):
    model, manifest = trained
    base = ["--model-path", str(model), "--test-manifest", str(manifest), "--silent"]
    assert evaluate_cli.main(base) == 0
    single = capsys.readouterr().out
    assert evaluate_cli.main(base + ["--num-workers", "2"]) == 0
    assert capsys.readouterr().out == single
    if not torch.cuda.is_available():
        assert evaluate_cli.main(base + ["--cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
        assert transcribe.main(["--model-path", str(model), "--audio-path", "x.wav", "--cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_transcribe_half_and_chunk_flag(trained, capsys):
    model, manifest = trained
    wav = str(read_manifest(manifest)[5][0])
    rc, full = run_transcribe(capsys, "--model-path", str(model), "--audio-path", wav)
    rc_half, half = run_transcribe(capsys, "--model-path", str(model), "--audio-path", wav, "--half")
    assert rc == rc_half == 0 and isinstance(half["output"][0]["transcription"], str)
    rc, chunked = run_transcribe(capsys, "--model-path", str(model), "--audio-path", wav, "--chunk-seconds", "0.5")
    assert rc == 0 and chunked["output"][0]["duration"] == full["output"][0]["duration"]
    with pytest.raises(SystemExit):
        transcribe.main(["--model-path", str(model), "--audio-path", wav, "--chunk-seconds", "-1"])


def test_transcribe_beam_top_paths_lists_alternatives(trained, capsys):
    pytest.importorskip("flashlight.lib.text")
    model, manifest = trained
    wav = str(read_manifest(manifest)[4][0])
    rc, out = run_transcribe(
        capsys, "--model-path", str(model), "--audio-path", wav, "--decoder", "beam", "--beam-width", "8", "--top-paths", "3"
    )
    assert rc == 0
    entry = out["output"][0]
    assert isinstance(entry["alternatives"], list) and len(entry["alternatives"]) <= 2
    assert entry["transcription"] not in entry["alternatives"]
    assert out["_meta"]["decoder"]["type"] == "beam" and out["_meta"]["decoder"]["top_paths"] == 3
