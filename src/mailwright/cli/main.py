"""The `mailwright` command: one entry point, subcommands serve, queue, user, config.

The configuration file comes from `--config PATH` (before or after the subcommand), else
the MAILWRIGHT_CONFIG environment variable, else /etc/mailwright/mailwright.toml when it
exists, else built-in defaults.  `queue` and `user` take their directory/database from it
unless given explicitly.

Invariant: a user never sees a traceback; every failure is one line naming the problem
and the fix, and a non-zero exit status (1 runtime, 2 usage or configuration).  A reader
that goes away early (`mailwright queue list | head`) is not a failure: the rest of the
output is dropped without a message, and the status is the command's own (0 if the command
was still writing).

Not responsible for: any subcommand's own work (each lives in its module).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mailwright import __version__
from mailwright.cli import config_cmd, queue_cmd, user_cmd
from mailwright.config.loader import ConfigError, load
from mailwright.config.schema import Config

SYSTEM_CONFIG = Path("/etc/mailwright/mailwright.toml")


def config_path(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    env = os.environ.get("MAILWRIGHT_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def _serve(args: argparse.Namespace) -> int:
    from mailwright.app import run

    config = _load(args)
    return 2 if config is None else run(config)


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return load(config_path(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailwright", description="SMTP server, client and doctor")
    parser.add_argument("--version", action="version", version=f"mailwright {__version__}")
    parser.add_argument(
        "--config", dest="top_config", type=Path, metavar="PATH", help="configuration file (TOML)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the SMTP server")
    serve.add_argument("--config", type=Path, default=None, metavar="PATH", help="configuration file (TOML)")
    serve.set_defaults(func=_serve)
    queue_cmd.register(commands)
    user_cmd.register(commands)
    config_cmd.register(commands)
    return parser


def flush_stdout() -> None:
    """Flush standard output; if its reader has gone, send whatever is left to /dev/null.

    Flushing here, before returning, is what makes a closed pipe quiet: left to the interpreter
    at exit, the failed flush prints "Exception ignored ... BrokenPipeError" and exits 120.
    """
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()


def _discard_stdout() -> None:
    # Python's own recipe: the buffered text cannot be dropped, so point the descriptor at
    # /dev/null and let the interpreter's last flush succeed there.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (a test's capture); nothing will be flushed at exit


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
    except BrokenPipeError:
        _discard_stdout()
        return 0
    flush_stdout()
    return status


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        args.config = args.top_config
    args.config = config_path(args.config)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "queue" and args.queue_dir is None:
        config = _load(args)
        if config is None:
            return 2
        args.queue_dir = config.queue.directory
    if args.command == "user" and getattr(args, "users_db", None) is None and hasattr(args, "users_db"):
        config = _load(args)
        if config is None:
            return 2
        args.users_db = config.auth.users_db or config.state_dir / "users.db"
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
