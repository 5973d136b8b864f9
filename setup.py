"""Packaging for deepspeech-ctc. The scripts are meant to be run from a checkout
(`python train.py ...`); `pip install -e .` also makes the modules importable."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def read_requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip() and not ln.startswith("-r")]


setup(
    name="deepspeech-ctc",
    version="0.1.0",
    description="DeepSpeech speech recognition with CTC loss in PyTorch: data prep, training, evaluation, transcription",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # test.py is deliberately not installed as a module: it would shadow the standard library's `test`.
    py_modules=[
        "model",
        "decoder",
        "utils",
        "train",
        "transcribe",
        "search_lm_params",
        "inference",
        "checkpoint",
        "onnx_export",
        "onnx_runtime",
        "onnx_streaming",
        "streaming",
        "streaming_common",
        "server",
        "dspt_import",
        "robustness",
        "align",
    ],
    packages=["data"],
    install_requires=read_requirements("requirements.txt"),
    extras_require={
        "dev": [r for r in read_requirements("requirements-dev.txt") if r not in read_requirements("requirements.txt")],
        "tensorboard": ["tensorboard>=2.14"],
        "visdom": ["visdom>=0.2.4"],
        "lm": ["flashlight-text>=0.0.7"],
        "server": [r for r in read_requirements("requirements-server.txt") if r not in read_requirements("requirements.txt")],
        # export to ONNX and run it with onnxruntime; requirements-onnx.txt is the torch-free runtime set
        "onnx": ["onnx>=1.14", "onnxruntime>=1.16"],
    },
)
