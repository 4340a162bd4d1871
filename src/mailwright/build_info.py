"""Which modules of this installation run compiled to C (mypyc) and which as plain Python.

`COMPILED_MODULES` is the one list of modules `setup.py` compiles: every module an accepted
message passes through, in a worker and in the master. The sources stay ordinary, type-checked
Python; a build with `MAILWRIGHT_PURE_PYTHON=1` (or without a C compiler's help) runs them as
they are, about half as fast per session (docs/architecture.md, "Performance").

Invariants: a name here is a module of this package that mypyc can compile (the build fails
otherwise); `build_kind()` reports what was actually imported, not what was intended.

Not responsible for: building (`setup.py`), nor checking that a compiled module is newer than its
source (tests/test_build.py does, since an editable install compiles in place).
"""

from __future__ import annotations

import importlib.util

COMPILED_MODULES: tuple[str, ...] = (
    "mailwright.protocol.address",
    "mailwright.protocol.events",
    "mailwright.protocol.framing",
    "mailwright.protocol.params",
    "mailwright.protocol.reply",
    "mailwright.protocol.server",
    "mailwright.net.server",
    "mailwright.policy.cleanup",
    "mailwright.policy.relay",
    "mailwright.queue.model",
    "mailwright.queue.spool",
    "mailwright.queue.committer",
    "mailwright.queue.commit_log",
    "mailwright.limits.connections",
    "mailwright.prefork.wire",
    "mailwright.prefork.worker",
    "mailwright.prefork.master",
)


def is_compiled(module: str) -> bool:
    """Whether `module` would be imported from an extension module rather than its .py file."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    return origin is not None and not origin.endswith(".py")


def build_kind() -> str:
    """ "compiled", "pure Python", or "partly compiled (N of M)", for logs and benchmark reports."""
    done = sum(is_compiled(m) for m in COMPILED_MODULES)
    if done == len(COMPILED_MODULES):
        return "compiled"
    if done == 0:
        return "pure Python"
    return f"partly compiled ({done} of {len(COMPILED_MODULES)})"
