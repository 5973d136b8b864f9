"""The module structure: no import cycles, a pure network module, and a torch-free inference path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGES = ("data",)


def project_modules() -> dict[str, Path]:
    mods = {p.stem: p for p in REPO.glob("*.py") if p.stem not in ("setup",)}
    mods.update({f"data.{p.stem}": p for p in (REPO / "data").glob("*.py") if p.stem != "__init__"})
    return mods


def imports_of(path: Path, modules: dict[str, Path], top_level_only: bool = False) -> set[str]:
    """Project modules imported anywhere in ``path`` (function bodies included), or only at module level."""
    tree = ast.parse(path.read_text())
    if top_level_only:
        nodes = tree.body
    else:  # everything but a script's command-line entry point (main), which may import what it runs
        nodes = [n for top in tree.body if not (isinstance(top, ast.FunctionDef) and top.name == "main") for n in ast.walk(top)]
    found = set()
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:  # `if __name__ == "__main__"` and TYPE_CHECKING blocks
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def test_no_import_cycles() -> None:
    modules = project_modules()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    # test.py is imported by nothing but tests; a script importing another script's CLI is still a cycle
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(nxt) :] + [node, nxt])}")
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_model_py_is_a_pure_network_module() -> None:
    modules = project_modules()
    assert imports_of(REPO / "model.py", modules, top_level_only=True) == set()
    tree = ast.parse((REPO / "model.py").read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert top <= set(sys.stdlib_module_names) | {"torch", "__future__"}, top


def test_inference_path_imports_no_torch() -> None:
    code = (
        "import sys, data.audio, data.text, data.manifest, decoder, inference, transcribe, utils, "
        "onnx_runtime, onnx_streaming, streaming_common; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
