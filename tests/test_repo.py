"""The README's commands are the ones CI runs, and the packaging reads the requirement files."""

from __future__ import annotations

import re

from conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick)


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_command():
    install_and_train, install_and_test = readme_commands()[:2]
    assert "pip install torch==2.13.0 -r requirements.txt" in install_and_train
    assert "python data/an4.py" in install_and_train and "python train.py" in install_and_train
    assert "python transcribe.py --audio-path examples/" in install_and_train  # works with no download
    assert "requirements-dev.txt" in install_and_test and "pytest" in install_and_test
    assert install_and_test in (REPO / ".ci" / "run").read_text()


def test_requirements_admit_the_cpu_torch_and_avoid_heavy_packages():
    reqs = (REPO / "requirements.txt").read_text().lower()
    assert re.search(r"^torch>=2\.1$", reqs, re.M)
    for banned in ("torchaudio", "librosa", "wget"):
        assert banned not in reqs


def test_nothing_loads_checkpoints_unsafely():
    for path in list(REPO.glob("*.py")) + list((REPO / "data").glob("*.py")) + list((REPO / "bench").glob("*.py")):
        assert "weights_only=False" not in path.read_text(), path
