"""Build hook: compile the modules every SMTP session runs through with mypyc.

Why: the server's CPU per message is mostly the interpreter's (docs/architecture.md,
"Performance"); mypyc compiles the same type-annotated sources to C, and a session then costs
about half the instructions. Which modules: `mailwright.build_info.COMPILED_MODULES`.
Everything else about the package is in `pyproject.toml`.

`MAILWRIGHT_PURE_PYTHON=1 pip install .` builds without compiling (slower, no C compiler used).
"""

from __future__ import annotations

import ast
import os
import shutil
import sysconfig
from pathlib import Path

from setuptools import Extension, setup


def compiled_sources() -> list[str]:
    # Read, not imported: the package is not importable while it is being built.
    tree = ast.parse(Path("src/mailwright/build_info.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "COMPILED_MODULES":
            modules = ast.literal_eval(node.value)
            return ["src/" + m.replace(".", "/") + ".py" for m in modules]
    raise SystemExit("setup.py: COMPILED_MODULES not found in src/mailwright/build_info.py")


def missing_toolchain() -> str | None:
    """What a compiled build lacks here, in words, or None."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc} not found)"
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not header.is_file():
        return f"no Python headers ({header} not found)"
    return None


def extensions() -> list[Extension]:
    if os.environ.get("MAILWRIGHT_PURE_PYTHON") == "1":
        return []
    problem = missing_toolchain()
    if problem is not None:
        raise SystemExit(
            f"mailwright: cannot compile its hot modules with mypyc: {problem}. Fix: install a C "
            "compiler and the Python headers (Debian: apt-get install gcc python3-dev), or build "
            "without compiling: MAILWRIGHT_PURE_PYTHON=1 pip install . (about half as fast per session)"
        )
    from mypyc.build import mypycify

    modules = list(mypycify(compiled_sources(), opt_level="3", group_name="mailwright"))
    for ext in modules:
        # The compiled functions are ordinary global symbols of a shared object, so under -fPIC
        # the compiler must assume another library could interpose them: every call from one to
        # another went through the PLT and none was inlined (4,816 such calls in the build).
        # Nothing interposes them; the flag (CPython's own optimised builds use it for
        # libpython) makes those calls direct: the server's CPU a message 2-4 % lower
        # (docs/performance.md, round "Run 22"). tests/test_build.py holds it.
        ext.extra_compile_args = [*ext.extra_compile_args, "-fno-semantic-interposition"]
    return modules


setup(ext_modules=extensions())
