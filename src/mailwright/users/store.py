"""The user store: SQLite table of submission users, their password hashes and owned senders.

Table ``users(name PRIMARY KEY, password_hash, cram_secret NULL, addresses)``; ``addresses`` is
a JSON list of the sender addresses a user may use, each ``local@domain`` or ``@domain`` (any
local part at that domain).  A user whose name is an address owns that address by default.

CRAM-MD5 (RFC 2195) costs security: the server computes HMAC-MD5 keyed with the password, so it
must keep a plaintext-equivalent secret.  ``cram_secret`` is therefore stored, in the clear,
only for users added with ``cram=True``; whoever can read the database can log in as them.  The
scrypt hash is kept for every user and is what PLAIN and LOGIN are checked against.

Invariants:
- Usernames are 1..255 characters of UTF-8 text (no lone surrogates, as undecodable bytes in
  a command-line argument become) with no control characters and no surrounding white space;
  the domain part of a name containing "@" is lower-cased and in A-labels (domains are
  case-insensitive, RFC 5321 section 2.4; IDNA2008 as relay policy compares them, so a U-label
  and its A-label are one domain and "faß.de" is not "fass.de"), the local part is kept as written.
  Owned sender domains are kept and compared in the same form.
- A password is non-empty UTF-8 without NUL (AUTH PLAIN's separator, RFC 4616 2) and at most
  `MAX_PASSWORD_BYTES`: what a client can send in a SASL line (RFC 4954 4); any other could never
  log in, so it is refused when set.
- `verify_password` costs one scrypt whether or not the user exists (a dummy hash is checked
  for unknown names), so timing does not reveal which names exist.
- The database file is created with mode 0600 and its directory with 0700; made by root in a
  directory another user owns, it is given to that user (the server's, after it gave up root).
- One connection, used under a lock, so the object may be shared with worker threads; changes
  made by another process (the ``user`` command) are seen by the next call, and so is a file put
  in place of the database (renamed over it, or removed and made again): each call checks that
  the path still names the opened file and reopens it if not; while no file is there, there
  are no users (and changes are refused). A replacement that is no usable user database is not
  taken: the store keeps the file it had, and logs one ERROR naming the problem, as a bad
  certificate on reload keeps the old one.
- Only a user database is opened: an SQLite file with other tables (the queue's, another
  program's) is refused with UserError and left unchanged.

Not responsible for: SASL mechanics (``mailwright.protocol.sasl``), counting failed attempts
(``mailwright.limits.auth_failures``), or deciding which policy applies owned senders.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from mailwright.protocol.address import comparable_domain
from mailwright.users import passwords

log = logging.getLogger("mailwright.users")

SCHEMA_VERSION = 1
MAX_NAME = 255
MAX_ADDRESS = 254
# The longest password a client can send: RFC 4954 4 lets a server refuse SASL lines over 12288
# octets (ours does), and AUTH PLAIN carries base64("\0" + name + "\0" + password), a third
# longer. 8192 bytes fit with a 255-character name; a longer password could never log in.
MAX_PASSWORD_BYTES = 8192


class UserError(ValueError):
    """A request the store refuses: invalid name or address, user exists, newer schema."""


class MissingDatabase(UserError):
    """No database at the path, and the caller asked not to create one."""


@dataclass(frozen=True)
class UserInfo:
    name: str
    addresses: tuple[str, ...]
    cram_md5: bool


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def _is_utf8(text: str) -> bool:
    # A command-line argument with bytes that are not UTF-8 arrives as lone surrogates, which
    # SQLite and the password hash cannot encode.
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _check_password(password: str) -> None:
    """Raise UserError for a password that cannot be stored (add and set_password alike)."""
    if not password:
        raise UserError("password must not be empty")
    if not _is_utf8(password):
        raise UserError("password must be UTF-8 text")
    if "\0" in password:
        # PLAIN separates name and password with NUL (RFC 4616 2): such a password never logs in.
        raise UserError("password must not contain a NUL character, which AUTH PLAIN cannot carry")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise UserError(
            f"password must be at most {MAX_PASSWORD_BYTES} bytes: AUTH cannot carry a longer one"
        )


def normalize_name(name: str) -> str:
    """Validate a username and return its canonical form; raises UserError."""
    if not name or len(name) > MAX_NAME:
        raise UserError(f"username must be 1 to {MAX_NAME} characters")
    if _has_control(name):
        raise UserError("username must not contain control characters")
    if not _is_utf8(name):
        raise UserError("username must be UTF-8 text")
    if name != name.strip():
        raise UserError("username must not start or end with white space")
    local, at, domain = name.rpartition("@")
    if at and local and domain:
        return f"{local}@{comparable_domain(domain)}"
    return name


def canonical_name(name: str) -> str:
    """`name` as the store spells the user it names; unchanged when it is no valid user name."""
    try:
        return normalize_name(name)
    except UserError:
        return name


def normalize_address(address: str) -> str:
    """Validate an owned-sender entry ("local@domain" or "@domain"); raises UserError."""
    local, at, domain = address.strip().rpartition("@")
    bad = not at or not domain or len(address) > MAX_ADDRESS or _has_control(address)
    bad = bad or not _is_utf8(address)
    bad = bad or any(c.isspace() or c in "<>" for c in address.strip())
    bad = bad or "@" in domain or local.endswith("@") or domain.startswith(".")
    if bad:
        raise UserError(f"{address!r} is not a sender address (write user@example.org or @example.org)")
    return f"{local}@{comparable_domain(domain)}"


def _is_address(name: str) -> bool:
    local, at, domain = name.rpartition("@")
    return bool(at and local and domain and "@" not in local)


def _give_to_directory_owner(fd: int, directory: Path) -> None:
    """A database root makes (`mailwright user add` as root) in a directory another user owns (the
    state directory of a server that gave up root, see `mailwright.privileges`) becomes that
    user's: the server reads it as that user, and SQLite gives its journals the file's owner."""
    if os.geteuid() != 0:
        return
    st = os.stat(directory)
    if st.st_uid != 0:
        os.fchown(fd, st.st_uid, st.st_gid)


class UserStore:
    """Users in one SQLite file; see the module docstring."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        """Open the database at `path`; a missing one is made, unless `create` is False (the
        commands that only read or change existing users), which raises `MissingDatabase`: a
        mistyped path must not leave new directories and an empty database behind."""
        self.path = path
        if not path.exists():
            if not create:
                raise MissingDatabase(f"no user database at {path}")
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                _give_to_directory_owner(fd, path.parent)
            finally:
                os.close(fd)
        self._lock = threading.Lock()
        self._db, self._identity = self._open()
        self._refused: tuple[int, int, int] | None = None  # a replacement found unusable, by stat

    def _open(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """A connection to the file now at `path`, its schema checked (or made), and the file's
        (device, inode); the stat comes first, so a file swapped in meanwhile is found next call."""
        st = os.stat(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db, (st.st_dev, st.st_ino)

    def _current(self) -> sqlite3.Connection | None:
        """The connection to the file now at `path`, or None while there is none; under the lock.

        The server keeps one store for its life.  A file put in place of the one it opened (a
        backup restored, a copy renamed over it by configuration management, ``rm`` and then
        ``user add``) would otherwise be read through the old, unlinked inode until a restart:
        new users refused, removed ones let in.  SQLite itself writes in place (the inode stays),
        so a changed inode means a replaced file.  One stat per call, about a microsecond.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None  # removed: no users, rather than the removed file's
        if (st.st_dev, st.st_ino) != self._identity:
            try:
                fresh, identity = self._open()
            except (sqlite3.Error, UserError, OSError) as exc:
                # Tried again at every call (it may be mid-copy), said once per version of it.
                seen = (st.st_dev, st.st_ino, st.st_mtime_ns)
                if seen != self._refused:
                    self._refused = seen
                    log.error(
                        "%s was replaced by a file that is no usable user database (%s): still "
                        "using the one it replaced (fix: put a database made by `mailwright user` there)",
                        self.path,
                        exc,
                    )
                return self._db
            self._db.close()
            self._db, self._identity = fresh, identity
            self._refused = None
        return self._db

    def _writable(self) -> sqlite3.Connection:
        db = self._current()
        if db is None:
            raise UserError(f"{self.path} was removed; nothing changed")
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            str(row[0])
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(row[0]).startswith("sqlite_")
        }
        # A file with tables but no users table, or unversioned with tables besides it, is another
        # database named by mistake (the queue's, another program's): it must neither get a users
        # table added nor be called "newer" (which says: upgrade mailwright).  An unversioned file
        # holding only the users table is ours, its creation cut short before the version was set.
        if tables and ("users" not in tables or (version == 0 and tables != {"users"})):
            raise UserError(
                f"{self.path} is not a mailwright user database (its tables: {', '.join(sorted(tables))}; "
                "fix: check --users-db or auth.users_db)"
            )
        if version > SCHEMA_VERSION:
            raise UserError(
                f"{self.path} was written by a newer mailwright (schema {version}; fix: run the newer "
                "mailwright that wrote it)"
            )
        if version < SCHEMA_VERSION:
            db.execute(
                "CREATE TABLE IF NOT EXISTS users ("
                " name TEXT PRIMARY KEY,"
                " password_hash TEXT NOT NULL,"
                " cram_secret TEXT,"
                " addresses TEXT NOT NULL DEFAULT '[]')"
            )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> UserStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _row(self, name: str, columns: str) -> tuple[object, ...] | None:
        try:
            key = normalize_name(name)
        except UserError:
            return None
        with self._lock:
            db = self._current()
            if db is None:
                return None
            row: tuple[object, ...] | None = db.execute(
                f"SELECT {columns} FROM users WHERE name = ?", (key,)
            ).fetchone()
        return row

    def add(
        self, name: str, password: str, *, addresses: Iterable[str] | None = None, cram: bool = False
    ) -> UserInfo:
        key = normalize_name(name)
        _check_password(password)
        if addresses is None:
            owned = [key] if _is_address(key) else []
        else:
            owned = list(dict.fromkeys(normalize_address(a) for a in addresses))
        encoded = passwords.hash_password(password)
        with self._lock:
            try:
                self._writable().execute(
                    "INSERT INTO users (name, password_hash, cram_secret, addresses) VALUES (?, ?, ?, ?)",
                    (key, encoded, password if cram else None, json.dumps(owned)),
                )
            except sqlite3.IntegrityError:
                raise UserError(
                    f"user {key!r} already exists (fix: `mailwright user passwd` changes its password)"
                ) from None
        return UserInfo(key, tuple(owned), cram)

    def set_password(self, name: str, password: str, *, cram: bool = False) -> bool:
        """Replace a user's password (and CRAM-MD5 secret); False when there is no such user."""
        key = normalize_name(name)
        _check_password(password)
        encoded = passwords.hash_password(password)
        with self._lock:
            cur = self._writable().execute(
                "UPDATE users SET password_hash = ?, cram_secret = ? WHERE name = ?",
                (encoded, password if cram else None, key),
            )
        return cur.rowcount > 0

    def delete(self, name: str) -> bool:
        key = normalize_name(name)
        with self._lock:
            cur = self._writable().execute("DELETE FROM users WHERE name = ?", (key,))
        return cur.rowcount > 0

    def get(self, name: str) -> UserInfo | None:
        row = self._row(name, "name, addresses, cram_secret IS NOT NULL")
        return None if row is None else _info(row)

    def verify_password(self, name: str, password: str) -> bool:
        """Check a password; one scrypt (~50 ms) either way.  Blocking: see averify_password."""
        row = self._row(name, "password_hash")
        if row is None:
            passwords.verify(password, passwords.DUMMY_HASH)
            return False
        return passwords.verify(password, str(row[0]))

    async def averify_password(self, name: str, password: str) -> bool:
        """`verify_password` in a worker thread, so the event loop keeps serving others."""
        return await asyncio.to_thread(self.verify_password, name, password)

    def credentials_stamp(self, name: str) -> str | None:
        """What changes when `name`'s credentials do: its password hash, salted afresh by every
        `set_password` (a CRAM-MD5 secret changes with it); None when there is no such user."""
        row = self._row(name, "password_hash")
        return None if row is None else str(row[0])

    def cram_secret(self, name: str) -> str | None:
        """The plaintext-equivalent CRAM-MD5 secret, or None (no user, or not enabled)."""
        row = self._row(name, "cram_secret")
        return None if row is None or row[0] is None else str(row[0])

    def owns_sender(self, name: str, address: str) -> bool:
        """Whether user `name` may use `address` as its envelope sender.

        Domains compare case-insensitively; local parts exactly (RFC 5321 section 2.4 leaves them
        case-sensitive).  The null sender ``<>`` is never owned; policy decides about it.
        """
        info = self.get(name)
        local, at, domain = address.rpartition("@")
        if info is None or not at or not local or not domain:
            return False
        domain = comparable_domain(domain)
        wanted, pattern = f"{local}@{domain}", f"@{domain}"
        return any(owned in (wanted, pattern) for owned in info.addresses)

    def list(self) -> builtins.list[UserInfo]:
        with self._lock:
            db = self._current()
            if db is None:
                return []
            rows = db.execute(
                "SELECT name, addresses, cram_secret IS NOT NULL FROM users ORDER BY name"
            ).fetchall()
        return [_info(row) for row in rows]


def _info(row: tuple[object, ...]) -> UserInfo:
    addresses = json.loads(str(row[1]))
    return UserInfo(name=str(row[0]), addresses=tuple(str(a) for a in addresses), cram_md5=bool(row[2]))
