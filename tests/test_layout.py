"""The layout shows the architecture: core/ is pure (no Pulumi), components/ are Pulumi resources."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"
COMPONENTS = ROOT / "components"


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_core_imports_no_pulumi_and_no_component():
    for path in sorted(CORE.glob("*.py")):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top not in {"pulumi", "pulumi_kubernetes", "components"}, f"{path.name} imports {module}"


def test_core_loads_without_pulumi_installed():
    """Importing every core module in a fresh interpreter leaves Pulumi unloaded (no indirect import either)."""
    modules = ", ".join(f"core.{path.stem}" for path in sorted(CORE.glob("*.py")) if path.stem != "__init__")
    script = (
        f"import importlib, sys\nfor name in '{modules}'.split(', '): importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pulumi_kubernetes'))\n"
        "print(loaded)\nsys.exit(1 if loaded else 0)"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_component_is_a_pulumi_resource_module():
    """components/ holds only what needs Pulumi: a pure module there belongs in core/."""
    for path in sorted(COMPONENTS.glob("*.py")):
        if path.stem == "__init__":
            continue
        tops = {module.split(".")[0] for module in imported_modules(path)}
        assert tops & {"pulumi", "pulumi_kubernetes"}, f"components/{path.name} is pure: move it to core/"
