"""`mailwright queue`: look at and manage the message queue (list, show, hold, release, delete).

Output follows Postfix's `postqueue -p` / `mailq`: one line per message with queue id, a `!` when
held, size, arrival time and sender, then each recipient indented with its delivery state, and a
summary line `-- N KB in M messages.`

Invariants:
- Opens the queue as an operator only (`SQLiteQueueStore(..., writer=False)`): never takes the writer
  lock, never creates or recovers anything, so it is safe while a server runs on the same directory.
- Exit status: 0 on success, 1 for an unknown id or an unusable queue, 2 for usage errors. Problems
  are one line on stderr naming what went wrong and the fix; never a traceback. Text that is no
  queue id (wrong length or alphabet) is said to be none, as Postfix's postsuper says "invalid mail
  queue id", rather than "no message with id".
- Every value a client chose (sender, recipients, HELO name, SASL identity, parameters, a remote
  server's last reply) and every header line of `show` is printed through
  `log_format.printable`: each character that is not printable, a control (ESC, CR, U+009B CSI),
  a bidi override or isolate, a zero-width or other format character, a line separator, is
  written as its backslash escape (`\\xNN`, `\\uNNNN`), so that nothing reaches the terminal as
  an escape sequence or reorders, hides or splits what the operator reads; header lines keep
  their TAB, values are cut at `log_format.MAX_SHOWN` characters. The queue keeps them as
  received; `show --body` gives the stored bytes unchanged, for a pipe.

Not responsible for: finding the queue directory from configuration (the caller passes `queue_dir`
to `run`), or delivery (a released message is picked up by the scheduler).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mailwright.log_format import printable
from mailwright.queue.model import QUEUE_ID_LENGTH, MessageInfo, queue_id_number
from mailwright.queue.sqlite import QueueUnusable, SQLiteQueueStore

_PROG = "mailwright queue"
_HEADER_LIMIT = 256 * 1024  # `show` prints at most this much of the header section


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `queue` and its subcommands to the top-level CLI parser."""
    parser = subparsers.add_parser("queue", help="list and manage queued messages")
    commands = parser.add_subparsers(dest="queue_command", metavar="COMMAND", required=True)

    def add(name: str, help: str, with_id: bool) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument(
            "--queue-dir", type=Path, default=None, help="queue directory (default: from config)"
        )
        if with_id:
            sub.add_argument("id", help="queue id")
        sub.set_defaults(func=_handle)
        return sub

    add("list", "list queued messages (like mailq)", with_id=False)
    show = add("show", "show one message: envelope, recipient states, headers", with_id=True)
    show.add_argument("--body", action="store_true", help="print the whole message instead of its headers")
    add("hold", "keep a message from delivery until released", with_id=True)
    add("release", "let a held message be delivered again", with_id=True)
    add("delete", "remove a message from the queue", with_id=True)


def _handle(args: argparse.Namespace) -> int:
    queue_dir: Path | None = getattr(args, "queue_dir", None)
    if queue_dir is None:
        print(f"{_PROG}: no queue directory: give --queue-dir DIR", file=sys.stderr)
        return 2
    return run(args, queue_dir)


def run(args: argparse.Namespace, queue_dir: Path) -> int:
    """Do `args.queue_command` on the queue in `queue_dir`; returns the exit status."""
    commands: dict[str, Callable[[SQLiteQueueStore, argparse.Namespace], int]] = {
        "list": _list,
        "show": _show,
        "hold": _hold,
        "release": _release,
        "delete": _delete,
    }
    command = commands.get(getattr(args, "queue_command", None) or "")
    if command is None:
        print(f"{_PROG}: unknown command {getattr(args, 'queue_command', None)!r}", file=sys.stderr)
        return 2
    if queue_dir.exists() and not queue_dir.is_dir():
        print(
            f"{_PROG}: {queue_dir} is a file, not a queue directory (fix: give --queue-dir the directory "
            "that holds queue.db, by default the queue directory in state_dir)",
            file=sys.stderr,
        )
        return 1
    try:
        store = SQLiteQueueStore(queue_dir, writer=False)
        # After the open, which refuses a queue of another schema (whose ids may look otherwise).
        given = getattr(args, "id", None)
        if given is not None and queue_id_number(given) is None:
            return _not_an_id(given)
        return command(store, args)
    except FileNotFoundError:
        hint = "the server creates it when it first starts; check --config or --queue-dir"
        print(f"{_PROG}: no queue in {queue_dir} (fix: {hint})", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0  # the reader (e.g. `| head`) has gone; not an error
    except QueueUnusable as exc:  # its message names the fix
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as exc:
        hint = "check that --queue-dir or queue.directory names a mailwright queue you may read"
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            # Not the server: it commits in milliseconds, and this waited seconds for it.
            hint = (
                "another process has held the queue database locked for seconds, an open sqlite3 shell "
                f"perhaps (fuser {queue_dir / 'queue.db'} names it): end it and try again"
            )
        print(f"{_PROG}: cannot read the queue in {queue_dir}: {exc} (fix: {hint})", file=sys.stderr)
        return 1


def _not_an_id(given: str) -> int:
    # Postfix's postsuper says "invalid mail queue id" here, not "not found": a mistyped or
    # truncated id is told apart from a message that has left the queue.
    print(
        f"{_PROG}: '{printable(given, 64)}' is not a queue id (fix: copy the id from `mailwright "
        f"queue list`: {QUEUE_ID_LENGTH} letters and digits, e.g. 1M8PEDCK5H8A3)",
        file=sys.stderr,
    )
    return 1


def _unknown(id: str) -> int:
    print(
        f"{_PROG}: no message with id '{printable(id)}' in the queue (fix: `mailwright queue list` shows "
        "the messages it holds; one that was delivered or deleted has left it)",
        file=sys.stderr,
    )
    return 1


def _when(ts: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S", time.localtime(ts))


def _format_message(info: MessageInfo) -> list[str]:
    mark = "!" if info.held else " "
    head = f"{info.id}{mark} {info.size:>9} {_when(info.received_at)}  {printable(info.sender) or '<>'}"
    pad = " " * (len(info.id) + 33)
    lines = [head]
    for r in info.recipients:
        detail = f" ({r.attempts} attempt{'s' if r.attempts != 1 else ''}"
        detail += f": {printable(r.last_reply)})" if r.last_reply else ")"
        lines.append(f"{pad}{printable(r.address)}  [{r.state.value}]{detail if r.attempts else ''}")
    return lines


def _list(store: SQLiteQueueStore, args: argparse.Namespace) -> int:
    # Streamed a page at a time (`iter_messages`): a queue of any size lists in bounded memory.
    count = total = 0
    write = sys.stdout.write
    for info in store.iter_messages():
        if not count:
            print(f"{'-Queue ID-':<17} {'--Size--':>9} {'---Arrival Time----':<19}  -Sender/Recipient-------")
        write("\n".join(_format_message(info)) + "\n\n")
        count += 1
        total += info.size
    if not count:
        print("Mail queue is empty")
        return 0
    print(f"-- {(total + 1023) // 1024} KB in {count} message{'s' if count != 1 else ''}.")
    return 0


def _show(store: SQLiteQueueStore, args: argparse.Namespace) -> int:
    info = store.get_message(args.id)
    envelope = store.get_envelope(args.id)
    if info is None or envelope is None:
        return _unknown(args.id)
    try:
        body = store.read_body(args.id)
    except KeyError:
        return _unknown(args.id)
    except FileNotFoundError:
        print(f"{_PROG}: message {args.id}: its body file is missing from the spool", file=sys.stderr)
        return 1
    out = sys.stdout
    if args.body:
        out.flush()
        for chunk in body:
            _write_bytes(chunk)
        out.flush()
        return 0
    print(f"Queue ID:     {info.id}{'  (held)' if info.held else ''}")
    print(f"Size:         {info.size} bytes")
    print(f"Received:     {time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(info.received_at))}")
    tls = "TLS" if envelope.tls else "no TLS"
    auth = f", authenticated as {printable(envelope.auth_user)}" if envelope.auth_user else ""
    helo = printable(envelope.helo) or "?"
    print(f"Client:       [{printable(envelope.client_ip) or '?'}] HELO {helo}, {tls}{auth}")
    params = f" {printable(envelope.mail_params)}" if envelope.mail_params else ""
    print(f"Sender:       <{printable(envelope.sender)}>{params}")
    print("Recipients:")
    for rcpt, status in zip(envelope.recipients, info.recipients, strict=False):
        params = "".join(
            f" {name}={printable(value)}"
            for name, value in (("NOTIFY", rcpt.notify), ("ORCPT", rcpt.orcpt))
            if value
        )
        nxt = (
            f", next attempt {_when(status.next_attempt)}" if status.next_attempt and status.attempts else ""
        )
        print(f"  <{printable(rcpt.address)}>{params}")
        print(f"      {status.state.value}, {status.attempts} attempt(s){nxt}")
        if status.last_reply:
            print(f"      last reply: {printable(status.last_reply)}")
    print("Headers:")
    text = _headers(body).decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n")
    # Line by line, whole (the section is bounded by _HEADER_LIMIT): a bare CR (BDAT bodies may
    # hold one) is escaped like any control, so it cannot write the rest of a field over its start.
    print("\n".join(printable(line, None, keep="\t") for line in text.split("\n")))
    return 0


def _headers(body: Iterator[bytes]) -> bytes:
    """The header section (up to the first empty line), bounded by `_HEADER_LIMIT`."""
    seen = bytearray()
    for chunk in body:
        seen += chunk
        for sep in (b"\r\n\r\n", b"\n\n"):
            end = seen.find(sep)
            if end >= 0:
                return bytes(seen[:end])
        if len(seen) >= _HEADER_LIMIT:
            break
    return bytes(seen[:_HEADER_LIMIT])


def _write_bytes(data: bytes) -> None:
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        buffer.write(data)
    else:
        sys.stdout.write(data.decode("utf-8", "replace"))


def _change(verb: str, action: Callable[[str], bool], id: str) -> int:
    if not action(id):
        return _unknown(id)
    print(f"{id}: {verb}")
    return 0


def _hold(store: SQLiteQueueStore, args: argparse.Namespace) -> int:
    return _change("held", store.hold, args.id)


def _release(store: SQLiteQueueStore, args: argparse.Namespace) -> int:
    return _change("released", store.release, args.id)


def _delete(store: SQLiteQueueStore, args: argparse.Namespace) -> int:
    return _change("deleted", store.delete, args.id)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m mailwright.cli.queue_cmd list --queue-dir DIR`)."""
    parser = argparse.ArgumentParser(prog="mailwright")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["queue", *(sys.argv[1:] if argv is None else argv)])
    func: Callable[[argparse.Namespace], int] = args.func
    status = func(args)
    from mailwright.cli.main import flush_stdout  # here: that module imports this one

    flush_stdout()
    return status


if __name__ == "__main__":
    sys.exit(main())
