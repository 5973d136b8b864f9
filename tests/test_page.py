"""The live page in real headless Chromium: a fake microphone fed from an AN4 clip streams to
/stream, and the final text shown equals transcribe.py on exactly the audio the page sent
(the server records it with --record-dir: Chromium loops the clip and starts it at an
arbitrary offset, so the original file is not what was sent). Uploads go through the page too.

Needs the playwright package and a Chromium binary (/usr/bin/chromium, or $CHROMIUM); playwright
never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

for _module in ("fastapi", "uvicorn", "websockets", "multipart"):  # pip install -r requirements-dev.txt
    pytest.importorskip(_module)
playwright_api = pytest.importorskip("playwright.sync_api")

from conftest import REPO  # noqa: E402
from serve import make_service, serve  # noqa: E402

import transcribe  # noqa: E402

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():
    if os.environ.get("CI"):  # .ci/run installs Debian's chromium: in CI this test must run
        raise RuntimeError(f"no Chromium at {CHROMIUM}: .ci/run installs Debian's chromium package")
    pytest.skip(f"no Chromium at {CHROMIUM} (set CHROMIUM)", allow_module_level=True)

CLIP = REPO / "examples" / "an421-menk-b.wav"  # 16 kHz mono 16-bit PCM: what Chromium's fake capture reads
SHIPPED = REPO / "models" / "an4.pth"
SHIPPED_STREAM = REPO / "models" / "an4_stream.pth"


def chromium_args(capture: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={capture}",
    ]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args(CLIP))
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(address, record folder, streaming model path): the shipped models, as `python server.py`
    serves them, recording what each stream received."""
    root = tmp_path_factory.mktemp("page")
    stream_model = SHIPPED_STREAM
    service = make_service(SHIPPED, stream_model, record_dir=root / "records")
    with serve(service) as address:
        yield address, root / "records", stream_model


def offline_text(model: Path, wav: Path, capsys) -> str:
    capsys.readouterr()
    assert transcribe.main(["--model-path", str(model), "--audio-path", str(wav), "--chunk-seconds", "0"]) == 0
    return json.loads(capsys.readouterr().out)["output"][0]["transcription"]


def best_match(recorded: np.ndarray, source: np.ndarray) -> float:
    """Normalised correlation of a stretch of the recording with the best-aligned stretch of the
    (looped) source clip."""
    seg = recorded[len(recorded) // 3 : len(recorded) // 3 + 8000]
    tiled = np.tile(source, len(recorded) // len(source) + 3)
    corr = np.correlate(tiled, seg, mode="valid")
    energy = np.sqrt(np.convolve(tiled**2, np.ones(len(seg)), mode="valid"))
    return float(np.max(corr / (energy * np.linalg.norm(seg) + 1e-9)))


def test_microphone_stream_shows_the_offline_text(browser, site, tmp_path, capsys):
    address, records, stream_model = site
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://{address}/")
    page.wait_for_function("!document.getElementById('start').disabled", timeout=20_000)
    assert "Streaming with an4_stream.pth" in page.text_content("#stream-status")
    source, _ = sf.read(str(CLIP), dtype="float32")
    for fmt in ("float32", "pcm16"):
        before = set(records.glob("stream-*.json"))
        page.select_option("#format", fmt)
        page.click("#start")
        # partial text appears while the microphone is still on
        page.wait_for_function("document.getElementById('partial').textContent.length > 0", timeout=20_000)
        assert page.get_attribute("#final", "data-state") == "recording"
        time.sleep(1.0)
        page.click("#stop")
        page.wait_for_function("document.getElementById('final').dataset.state !== 'recording'", timeout=30_000)
        assert page.get_attribute("#final", "data-state") == "done", page.text_content("#stream-info")
        shown = page.text_content("#final")
        new = sorted(set(records.glob("stream-*.json")) - before)
        assert len(new) == 1
        meta = json.loads(new[0].read_text())
        wav = new[0].with_suffix(".wav")
        assert meta["format"] == fmt and meta["samples"] > meta["sample_rate"]  # over a second was sent
        assert shown and shown == meta["result"]["text"] == offline_text(stream_model, wav, capsys)
        recorded, rate = sf.read(str(wav), dtype="float32")
        if rate == 16000:  # the page got a 16 kHz AudioContext: the audio sent is the looped clip
            assert best_match(recorded, source) > 0.9
    page.screenshot(path=str(tmp_path / "live-page.png"), full_page=True)
    assert (tmp_path / "live-page.png").stat().st_size > 10_000
    assert not errors
    page.close()


def test_upload_through_the_page(browser, site, tmp_path, capsys):
    address, _, _ = site
    page = browser.new_page()
    page.goto(f"http://{address}/")
    page.set_input_files("#file", str(CLIP))
    page.click("#upload-button")
    page.wait_for_function("document.getElementById('upload-result').dataset.state === 'done'", timeout=30_000)
    shown = page.text_content("#upload-result")
    assert shown == offline_text(SHIPPED, CLIP, capsys) == "ENTER TWENTY ONE"
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio")
    page.set_input_files("#file", str(bad))
    page.click("#upload-button")
    page.wait_for_function("document.getElementById('upload-result').dataset.state === 'error'", timeout=30_000)
    assert "cannot read audio" in page.text_content("#upload-info")
    page.screenshot(path=str(tmp_path / "upload.png"))
    page.close()


def test_page_says_when_streaming_is_unavailable(browser, tmp_path):
    service = make_service(SHIPPED, tmp_path / "an4_stream.pth")
    with serve(service) as address:
        page = browser.new_page()
        page.goto(f"http://{address}/")
        page.wait_for_function("document.getElementById('stream-status').dataset.unavailable === '1'", timeout=20_000)
        assert "streaming is unavailable" in page.text_content("#stream-status")
        assert page.is_disabled("#start")
        page.close()
