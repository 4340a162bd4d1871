"""The build: the modules `setup.py` compiles with mypyc are the ones imported, are current, and
call each other directly (not through the PLT).

An editable install (`pip install -e .`, as scripts/test does) compiles in place: the extension
module sits beside its .py file and wins the import. Edit the .py afterwards and the old code
would run, silently; these tests turn that into a failure that says what to do.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
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


@pytest.mark.skipif(PURE, reason="MAILWRIGHT_PURE_PYTHON=1: a pure-Python build was asked for")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_compiled_functions_call_each_other_directly() -> None:
    """setup.py builds with -fno-semantic-interposition: a call from one compiled function to
    another (`CPyDef_*`, mypyc's runtime `CPy*`) is a direct call, not one through the PLT."""
    spec = importlib.util.find_spec("mailwright__mypyc")
    assert spec is not None and spec.origin is not None
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", spec.origin],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    # Direct targets may be the compiler's clones (`CPyDef_f.isra.0`, `.part.0`, `.constprop.0`).
    direct = re.findall(r"\bcall\s+[0-9a-f]+ <CPy[\w.]*>", listing)
    through_plt = re.findall(r"\bcall\s+[0-9a-f]+ <CPy\w*@plt>", listing)
    assert len(direct) > 1000, f"only {len(direct)} direct calls between compiled functions: a mypyc build?"
    assert not through_plt, (
        f"{len(through_plt)} calls between compiled functions go through the PLT, e.g. {through_plt[0]}. "
        "Fix: build with -fno-semantic-interposition (setup.py), then pip install -e ."
    )
