"""The protocol engine must stay sans-IO: no asyncio, socket, ssl, time, logging or random."""

from __future__ import annotations

import ast
from pathlib import Path

import mailwright.protocol

FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "time",
    "logging",
    "random",
    "selectors",
    "threading",
    "os",
    "secrets",
}
ROOT = Path(mailwright.protocol.__file__).parent


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_protocol_package_imports_no_io() -> None:
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) >= 10
    offenders = {str(f.relative_to(ROOT)): sorted(imported_modules(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom time import monotonic\nimport os.path\n")
    assert imported_modules(bad) & FORBIDDEN == {"asyncio", "time", "os"}
