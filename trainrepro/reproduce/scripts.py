"""The plotting scripts in scripts/ that reports reuse, loaded by path (scripts/ is no package)."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "scripts"  # the editable install's tree


@cache
def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (once)."""
    spec = importlib.util.spec_from_file_location(
        f"trainrepro_scripts.{name}", SCRIPTS_DIR / f"{name}.py"
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"{SCRIPTS_DIR / name}.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
