"""robustness.py end to end on generated utterances with a tiny random model."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO

import robustness
from checkpoint import Checkpoint, save_checkpoint
from data.audio import AudioConfig
from data.manifest import write_manifest
from data.text import LABELS
from model import ModelConfig, build_model

SR = 16000
TINY = ModelConfig(hidden_size=8, hidden_layers=1, conv_channels=4, rnn_type="gru")


def utterance(path: Path, text: str, seconds: float, seed: int) -> tuple[Path, Path]:
    """Background noise with a harmonic "word" in the middle, and its transcript."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    audio = 3e-4 * rng.standard_normal(n)
    t = np.arange(n // 2) / SR
    f0 = rng.uniform(100, 220)
    audio[n // 4 : n // 4 + t.size] += 0.05 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), SR, subtype="PCM_16")
    txt = path.with_suffix(".txt")
    txt.write_text(text + "\n")
    return path, txt


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("robustness")
    rows = [
        utterance(root / "val" / f"v{i}.wav", text, 0.8 + 0.3 * i, i) for i, text in enumerate(["YES", "NO", "STOP", "GO UP"])
    ]
    write_manifest(root / "val.csv", rows)
    talkers = [utterance(root / "train" / f"t{i}.wav", "A", 0.6 + 0.4 * i, 10 + i) for i in range(5)]
    write_manifest(root / "train.csv", talkers)
    torch.manual_seed(0)
    model = save_checkpoint(root / "tiny.pth", Checkpoint.from_model(build_model(TINY), AudioConfig(), LABELS))
    return {"root": root, "manifest": root / "val.csv", "babble": root / "train.csv", "model": model}


def argv(suite: dict[str, Path], out: Path, work: Path, *extra: str) -> list[str]:
    return [
        "--model-path",
        str(suite["model"]),
        "--manifest",
        str(suite["manifest"]),
        "--babble-manifest",
        str(suite["babble"]),
        "--output",
        str(out),
        "--work-dir",
        str(work),
        "--threads",
        "1",
        *extra,
    ]


def table(text: str) -> dict[str, list[str]]:
    """Rows of the first markdown table: first cell -> the other cells."""
    rows = {}
    for line in text.split("| condition |", 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def wav_mtimes(work: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in work.rglob("*.wav")}


def test_suite_writes_the_table_and_reuses_its_work(suite, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    out, work = tmp_path / "docs" / "robustness.md", tmp_path / "work"
    base = argv(suite, out, work)
    args = [
        *base,
        "--frontends",
        "as-is",
        "noise-pad-stats",
        "level-norm",
        "global-norm",
        "--frontend-conditions",
        "clean",
        "tight",
        "8khz",
    ]
    assert robustness.main(args) == 0
    text = out.read_text()
    rows = table(text)
    assert list(rows) == [c.name for c in robustness.CONDITIONS] + ["**average**"]
    for name, cells in rows.items():
        wer, cer = (float(c.strip("*")) for c in cells[1:3])
        assert 0 <= wer and 0 <= cer, name
    corrupted = [float(cells[1]) for name, cells in rows.items() if name not in ("clean", "**average**")]
    assert float(rows["**average**"][1].strip("*")) == pytest.approx(np.mean(corrupted), abs=0.06)
    assert "python robustness.py " + " ".join(args) in text
    assert f"`{suite['model']}`" in text and "4 utterances" in text
    assert text.startswith("# Robustness\n\n" + robustness.BEGIN) and text.rstrip().endswith(robustness.END)
    front = text.split("### Front ends", 1)[1]
    for name in ("as-is", "noise-pad-stats", "level-norm", "global-norm"):
        assert re.search(rf"\| {name} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", front), name
    assert "background -" in front and "dBFS" in front
    # The work dir: one manifest per condition, the corrupted audio at the model's rate.
    for c in robustness.CONDITIONS:
        assert (work / c.name / ".complete.json").is_file()
        wavs = sorted((work / c.name / "wav").glob("*.wav"))
        assert len(wavs) == 4 and all(sf.info(str(w)).samplerate == SR for w in wavs)
    clean = sf.read(str(min((work / "clean" / "wav").glob("*.wav"))))[0]
    assert clean.size == int(0.8 * SR)
    padded = sf.read(str(min((work / "padded" / "wav").glob("*.wav"))))[0]
    assert padded.size == clean.size + 2 * SR and not padded[:SR].any() and not padded[-SR:].any()
    offset = sf.read(str(min((work / "dc_offset" / "wav").glob("*.wav"))))[0]
    np.testing.assert_allclose(offset - clean, robustness.DC_OFFSET, atol=1e-6)

    # Again: nothing is rewritten, the numbers are the same, the text around the table is kept.
    before = wav_mtimes(work)
    out.write_text("# Our notes\n\nintro\n\n" + text.split("# Robustness\n\n", 1)[1] + "\noutro\n")
    assert robustness.main(args) == 0
    assert wav_mtimes(work) == before
    again = out.read_text()
    assert again.startswith("# Our notes\n\nintro\n\n" + robustness.BEGIN)
    assert again.endswith(f"{robustness.END}\n\noutro\n")
    assert table(again) == rows
    assert "reused" in caplog.text and "written" not in caplog.text.split("reused", 1)[1]

    # Another seed: every corrupted condition is written again (clean stays the same audio).
    assert robustness.main([*base, "--seed", "7"]) == 0
    after = wav_mtimes(work)
    changed = {p.parent.parent.name for p in after if after[p] != before.get(p)}
    assert changed == {c.name for c in robustness.CONDITIONS}
    assert np.array_equal(sf.read(str(min((work / "clean" / "wav").glob("*.wav"))))[0], clean)


def test_corruptions_are_reproducible(suite, tmp_path: Path) -> None:
    args = ["--conditions", "clean", "reverb", "babble_snr10", "--max-utterances", "2"]
    for name in ("a", "b"):
        assert robustness.main(argv(suite, tmp_path / f"{name}.md", tmp_path / name, *args)) == 0
    for c in ("reverb", "babble_snr10"):
        a, b = sorted((tmp_path / "a" / c / "wav").glob("*.wav")), sorted((tmp_path / "b" / c / "wav").glob("*.wav"))
        assert [p.name for p in a] == [p.name for p in b] and len(a) == 2  # first and last of the manifest
        for x, y in zip(a, b):
            assert np.array_equal(sf.read(str(x))[0], sf.read(str(y))[0])
    assert table((tmp_path / "a.md").read_text()) == table((tmp_path / "b.md").read_text())


def test_beam_search_with_the_lm_adds_columns(suite, tmp_path: Path) -> None:
    pytest.importorskip("flashlight.lib.text")
    out = tmp_path / "r.md"
    lm = REPO / "models" / "an4_3gram.arpa"
    assert robustness.main(argv(suite, out, tmp_path / "w", "--conditions", "clean", "telephone", "--lm-path", str(lm))) == 0
    text = out.read_text()
    assert "| greedy WER | greedy CER | beam+LM WER | beam+LM CER |" in text
    assert all(len(cells) == 5 for cells in table(text).values())


def test_errors(suite, tmp_path: Path, capsys) -> None:
    out, work = tmp_path / "r.md", tmp_path / "w"
    # Babble from the evaluated utterances themselves is refused.
    bad = argv(suite, out, work)
    bad[bad.index("--babble-manifest") + 1] = str(suite["manifest"])
    assert robustness.main(bad) == 2
    assert "babble must come from other speakers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        robustness.main(["--manifest", str(suite["manifest"]), "--model-path", str(suite["model"]), "--frontends", "all"])
    assert "--frontends needs --babble-manifest" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        robustness.main(argv(suite, out, work, "--frontend-conditions", "tight"))
    assert "--frontend-conditions needs --frontends" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        robustness.main(argv(suite, out, work, "--model-path", str(tmp_path / "none.pth")))
    assert "file not found" in capsys.readouterr().err
    assert not out.exists()


def test_several_models_side_by_side(suite, tmp_path: Path, capsys) -> None:
    """Two models on the same corrupted audio in one run: a comparison table (average and
    worst condition per model) and each model's own table, identical to a run of that model alone."""
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.pth", Checkpoint.from_model(build_model(TINY), AudioConfig(), LABELS))
    work, both, alone = tmp_path / "w", tmp_path / "both.md", tmp_path / "alone.md"
    conditions = ("--conditions", "clean", "white_snr10", "tight")
    args = argv(suite, both, work, *conditions)
    args[args.index("--model-path") + 1 : args.index("--model-path") + 2] = [str(suite["model"]), str(other)]
    assert robustness.main(args) == 0
    text = both.read_text()
    compare = table(text)
    assert set(compare) == {"clean", "white_snr10", "tight", "**average** of the 2 corrupted", "**worst** of the 2 corrupted"}
    assert all(len(cells) == 2 for cells in compare.values())
    m2 = [float(compare[c][1]) for c in ("white_snr10", "tight")]
    assert float(compare["**worst** of the 2 corrupted"][1].strip("*")) == pytest.approx(max(m2), abs=0.051)
    assert "* **M1**: `" in text and "* **M2**: `" in text and "### M2: `" in text
    assert (
        robustness.main(argv(suite, alone, work, *conditions)[:1] + [str(other)] + argv(suite, alone, work, *conditions)[2:]) == 0
    )
    m2_table = text.split("### M2: ")[1]
    assert table(m2_table) == table(alone.read_text())
    capsys.readouterr()
    with pytest.raises(SystemExit):
        robustness.main(args + ["--frontends", "as-is"])
    assert "give one --model-path" in capsys.readouterr().err
    narrow_audio = AudioConfig(sample_rate=8000)
    narrow_model = build_model(dataclasses.replace(TINY, n_features=narrow_audio.n_freq))
    narrow = save_checkpoint(tmp_path / "8k.pth", Checkpoint.from_model(narrow_model, narrow_audio, LABELS))
    args[args.index(str(other))] = str(narrow)
    assert robustness.main(args) == 2
    assert "compare models of one sample rate" in capsys.readouterr().err
