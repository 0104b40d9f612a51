"""The layout is the architecture: a kernel within its line budget, plugins that use only the public modules."""

from __future__ import annotations

import ast
from pathlib import Path

import vvframe

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "vvframe" / "core"
# Lines of the kernel package (kinds and discovery, the schema, recipes, running stages, its errors and atomic
# writes), docstrings and comments included, blank lines not: at most 1,000 (issue 14).
KERNEL_BUDGET = 1000


def kernel_lines() -> dict[str, int]:
    """Non-blank lines of each kernel module."""
    return {p.name: sum(1 for line in p.read_text().splitlines() if line.strip()) for p in sorted(KERNEL.glob("*.py"))}


def test_the_kernel_stays_within_its_budget():
    lines = kernel_lines()
    assert sum(lines.values()) <= KERNEL_BUDGET, f"the kernel has {sum(lines.values())} lines: {lines}"


def vvframe_imports(path: Path) -> set[str]:
    """The vvframe modules a file imports (``from vvframe import x`` counts as ``vvframe``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            package = ROOT.joinpath(*node.module.split("."))  # from vvframe.data import audio: vvframe.data.audio
            names = [
                f"{node.module}.{a.name}" if (package / f"{a.name}.py").is_file() else node.module for a in node.names
            ]
        found |= {n for n in names if n == "vvframe" or n.startswith("vvframe.")}
    return found


def test_plugins_import_only_the_public_modules():
    plugin_files = [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]
    assert len(plugin_files) > 20
    used = {(str(p.relative_to(ROOT)), m) for p in plugin_files for m in vvframe_imports(p)}
    private = sorted((f, m) for f, m in used if m not in vvframe.PUBLIC_MODULES)
    assert not private, f"plugins import modules outside vvframe.PUBLIC_MODULES: {private}"


def test_every_public_module_exists():
    for name in vvframe.PUBLIC_MODULES:
        parts = name.split(".")
        assert (ROOT.joinpath(*parts).with_suffix(".py")).is_file() or (ROOT.joinpath(*parts) / "__init__.py").is_file()
