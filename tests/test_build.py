"""The build: the modules `setup.py` compiles with mypyc are the ones imported, and are current.

An editable install (`pip install -e .`, as scripts/test does) compiles in place: the extension
module sits beside its .py file and wins the import. Edit the .py afterwards and the old code
would run, silently; these tests turn that into a failure that says what to do.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from mailwright.build_info import COMPILED_MODULES, build_kind, is_compiled

PURE = os.environ.get("MAILWRIGHT_PURE_PYTHON") == "1"


@pytest.mark.parametrize("module", COMPILED_MODULES)
def test_compiled_module_is_newer_than_its_source(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    loaded = Path(spec.origin)
    source = loaded.with_name(module.rsplit(".", 1)[1] + ".py")
    assert source.is_file(), f"{module}: no source at {source}"
    if loaded == source:
        return  # not compiled: nothing can be stale
    assert loaded.stat().st_mtime >= source.stat().st_mtime, (
        f"{source} changed after it was compiled to {loaded.name}: the old code would run. "
        "Fix: pip install -e . (recompiles), or delete the .so files and set MAILWRIGHT_PURE_PYTHON=1"
    )


@pytest.mark.skipif(PURE, reason="MAILWRIGHT_PURE_PYTHON=1: a pure-Python build was asked for")
def test_hot_path_runs_compiled() -> None:
    # The suite and the benchmarks must exercise what `pip install .` ships.
    missing = [m for m in COMPILED_MODULES if not is_compiled(m)]
    assert not missing, (
        f"not compiled: {', '.join(missing)}. Fix: pip install -e . with a C compiler, "
        "or set MAILWRIGHT_PURE_PYTHON=1 to test the pure-Python build on purpose"
    )
    assert build_kind() == "compiled"


def test_build_kind_names_what_was_imported() -> None:
    done = sum(is_compiled(m) for m in COMPILED_MODULES)
    expected = {0: "pure Python", len(COMPILED_MODULES): "compiled"}.get(done)
    assert build_kind() == (expected or f"partly compiled ({done} of {len(COMPILED_MODULES)})")
    assert not is_compiled("mailwright.cli.main")  # never on the list: plain Python always
