"""transcribe.py --stream: partial lines, then the same JSON and text as the offline run."""

from __future__ import annotations

import json
import time

import pytest
import soundfile as sf
from conftest import REPO
from stream_models import save_model, speechlike, tiny_stream_model

import transcribe


@pytest.fixture(scope="module")
def stream_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("tstream")
    model, audio_config = tiny_stream_model(11, lookahead_context=4)
    path = save_model(root / "stream.pth", model, audio_config)
    wavs = []
    for i, (rate, seconds) in enumerate([(16000, 1.7), (44100, 1.1), (8000, 0.6)]):
        wav = root / f"clip{i}.wav"
        sf.write(str(wav), speechlike(seconds, rate, seed=20 + i), rate, subtype="PCM_16")
        wavs.append(wav)
    return path, wavs


def split_output(out: str) -> tuple[list[dict], dict]:
    """(partial lines, final JSON) of a --stream run."""
    lines = out.splitlines()
    first_final = lines.index("{")
    return [json.loads(line) for line in lines[:first_final]], json.loads("\n".join(lines[first_final:]))


def test_stream_prints_partials_then_the_offline_result(stream_model, capsys):
    path, wavs = stream_model
    files = [str(w) for w in wavs]
    assert transcribe.main(["--model-path", str(path), "--audio-path", *files, "--offsets", "--chunk-seconds", "0"]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert (
        transcribe.main(
            [
                "--model-path",
                str(path),
                "--audio-path",
                *files,
                "--offsets",
                "--stream",
                "--chunk-ms",
                "37",
                "--stream-speed",
                "0",
            ]
        )
        == 0
    )
    partials, final = split_output(capsys.readouterr().out)
    assert final["output"] == offline["output"]
    assert all(entry["transcription"] for entry in final["output"])
    meta = final["_meta"]["streaming"]
    assert meta["chunk_ms"] == 37 and meta["algorithmic_latency_ms"]["total_ms"] == 10 + 150 + 3 * 40
    assert meta["compute_ms_per_chunk"]["median"] > 0
    for entry in final["output"]:
        mine = [p for p in partials if p["audio_path"] == entry["audio_path"]]
        assert mine, entry["audio_path"]
        texts = [p["partial"] for p in mine]
        assert len(set(texts)) == len(texts)  # a line only when the text changes
        for before, after in zip(texts, texts[1:] + [entry["transcription"]]):
            assert after.startswith(before.rstrip())
        assert all(0 < p["audio_s"] <= entry["duration"] for p in mine)


def test_stream_paces_the_audio_in_real_time(stream_model, capsys):
    path, wavs = stream_model
    start = time.monotonic()
    assert transcribe.main(["--model-path", str(path), "--audio-path", str(wavs[0]), "--stream", "--stream-speed", "4"]) == 0
    assert time.monotonic() - start >= 1.7 / 4
    _, final = split_output(capsys.readouterr().out)
    assert final["_meta"]["streaming"]["chunk_ms"] == 100


def test_stream_refuses_the_bidirectional_shipped_model(capsys):
    clip = REPO / "examples" / "an421-menk-b.wav"
    assert transcribe.main(["--audio-path", str(clip), "--stream", "--stream-speed", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bidirectional" in err and "--normalize global" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--chunk-ms", "50"], "apply to --stream"),
        (["--stream-speed", "0"], "apply to --stream"),
        (["--stream", "--chunk-ms", "0"], "--chunk-ms must be > 0"),
        (["--stream", "--stream-speed", "-1"], "--stream-speed must be >= 0"),
        (["--stream", "--amp"], "--amp does not apply"),
    ],
)
def test_stream_flag_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        transcribe.main(["--audio-path", "x.wav", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_stream_reports_unreadable_files_and_goes_on(stream_model, tmp_path, capsys):
    path, wavs = stream_model
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert (
        transcribe.main(["--model-path", str(path), "--audio-path", str(bad), str(wavs[2]), "--stream", "--stream-speed", "0"])
        == 1
    )
    captured = capsys.readouterr()
    _, final = split_output(captured.out)
    assert "error" in final["output"][0] and final["output"][1]["transcription"]
    assert "bad.wav" in captured.err
