"""Bearer tokens for the serving API: a JSON file of salted scrypt hashes, never plaintext.

The tokens file is a JSON list of records::

    [{"name": "ci", "salt": "<hex>", "hash": "<hex>", "scopes": ["predict"],
      "created": "2026-01-01T00:00:00.000Z", "expires": "2026-04-01T00:00:00.000Z"}, ...]

``expires`` (UTC, optional: ``create_token(..., expires_in_days=N)``) is absent
from tokens that never expire, so files written before it existed keep working.
An expired token no longer verifies (:func:`verify`, :meth:`TokenStore.verify`);
:meth:`TokenStore.lookup` still finds it, so the server can answer "token expired".

A token is ``secrets.token_urlsafe(32)`` (256 random bits), shown once by
:func:`create_token`.  Only ``scrypt(token, salt, n=2**14, r=8, p=1)`` is kept:
with 256-bit random tokens brute force is hopeless anyway, so the KDF is
defence in depth and its cost is kept modest (~15-30 ms, 16 MiB) so that
verification stays cheap.  Successful verifications are cached in memory
(keyed by the token's sha256) until the file changes, so a busy client pays
the KDF once; so are failed ones (a bounded set, also dropped when the file
changes), so a client retrying a wrong token does not pay it again either, and
:meth:`TokenStore.cached` tells, without the KDF, whether a token is already
known (the server's failed-authentication throttle spares those).  The file is
written atomically (temp file + ``os.replace``,
mode 0600) and re-read whenever its mtime/size changes, so a revocation takes
effect without restarting the server.

A file that cannot be trusted (unreadable, not JSON, a malformed record, a
hash that is not 64 hex digits, a duplicate name, writable by every user) is
refused by :class:`TokenStore` when the server starts; if it becomes so while
the server runs, the last good records stay in use and the problem is logged
once per change of the file.  Messages name the file and the token, never a
salt, hash or token.  This module imports no FastAPI.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from sparkml_aiaas.atomic import atomic_file
from sparkml_aiaas.errors import ConfigError

__all__ = ["SCOPES", "TokenRecord", "TokenStore", "create_token", "revoke_token", "verify",
           "load_tokens"]

#: The scopes a token can carry.
SCOPES = frozenset({"predict", "admin"})
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
#: A stored hash is 32 bytes of scrypt output; a salt is whole bytes (16 from create_token).
_HASH_RE = re.compile(r"[0-9a-fA-F]{64}")
_SALT_RE = re.compile(r"(?:[0-9a-fA-F]{2}){8,64}")

logger = logging.getLogger("sparkml_aiaas.serving.tokens")


@dataclass(frozen=True)
class TokenRecord:
    name: str
    salt: str
    hash: str
    scopes: Tuple[str, ...]
    created: str = ""
    expires: str = ""  # ISO 8601 UTC; "" = never

    def to_dict(self) -> Dict[str, Any]:
        record = {"name": self.name, "salt": self.salt, "hash": self.hash,
                  "scopes": list(self.scopes), "created": self.created}
        if self.expires:
            record["expires"] = self.expires
        return record

    @property
    def expires_at(self) -> Optional[_dt.datetime]:
        """When the token stops working (aware, UTC), or None if it never does."""
        return _parse_time(self.expires) if self.expires else None

    def is_expired(self, now: Optional[_dt.datetime] = None) -> bool:
        """True once ``now`` (default: the current UTC time) has reached ``expires``."""
        expires_at = self.expires_at
        if expires_at is None:
            return False
        return (now or _dt.datetime.now(_dt.timezone.utc)) >= expires_at


def _format_time(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _parse_time(text: str) -> _dt.datetime:
    """An ISO 8601 timestamp (``Z`` or an offset; none means UTC) as an aware datetime."""
    moment = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def _hash(token: str, salt: bytes) -> bytes:
    return hashlib.scrypt(token.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          maxmem=_SCRYPT_MAXMEM, dklen=32)


def _validate_scopes(scopes: Sequence[str]) -> Tuple[str, ...]:
    if isinstance(scopes, str):
        scopes = [scopes]
    scopes = tuple(sorted(set(scopes or ())))
    if not scopes:
        raise ConfigError("a token needs at least one scope (predict, admin)")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ConfigError(f"unknown token scope(s) {unknown}; valid: {sorted(SCOPES)}")
    return scopes


def _parse(raw: Any, path: str) -> List[TokenRecord]:
    """The records of a tokens file's JSON; ConfigError naming the file and record at fault
    (never quoting a salt or hash)."""
    if not isinstance(raw, list):
        raise ConfigError(f"tokens file {path} must hold a JSON list")
    records: List[TokenRecord] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"tokens file {path}: record {i} is not a JSON object")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"tokens file {path}: record {i} has no name (a non-empty string)")
        where = f"tokens file {path}: token {name!r}"
        if any(r.name == name for r in records):
            raise ConfigError(f"{where} appears twice; names must be unique")
        salt, digest = item.get("salt"), item.get("hash")
        if not isinstance(salt, str) or not _SALT_RE.fullmatch(salt):
            raise ConfigError(f"{where}: salt must be 8 to 64 bytes in hex")
        if not isinstance(digest, str) or not _HASH_RE.fullmatch(digest):
            raise ConfigError(f"{where}: hash must be 64 hex digits (32 bytes of scrypt output)")
        scopes = item.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
            raise ConfigError(f"{where}: scopes must be a list of strings")
        try:
            scopes = _validate_scopes(scopes)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        created, expires = item.get("created") or "", item.get("expires") or ""
        if not isinstance(created, str) or not isinstance(expires, str):
            raise ConfigError(f"{where}: created and expires must be strings (ISO 8601 UTC)")
        record = TokenRecord(name=name, salt=salt, hash=digest, scopes=scopes,
                             created=created, expires=expires)
        try:
            record.expires_at  # noqa: B018 - fail on load, not on a request
        except ValueError:
            raise ConfigError(f"{where} has an invalid expires timestamp {record.expires!r} "
                              "(expected ISO 8601 UTC, e.g. 2026-04-01T00:00:00.000Z)") from None
        records.append(record)
    return records


def load_tokens(path: str) -> List[TokenRecord]:
    """The records of ``path`` ([] when the file does not exist)."""
    try:
        with open(path, "rb") as fh:
            raw = json.loads(fh.read() or b"[]")
    except FileNotFoundError:
        return []
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(f"tokens file {path} cannot be read: "
                          f"{exc.strerror or type(exc).__name__}") from None
    except RecursionError:
        raise ConfigError(f"tokens file {path} is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"tokens file {path} is not valid JSON: {exc}") from None
    return _parse(raw, path)


def _write(path: str, records: List[TokenRecord]) -> None:
    # Mode 0600 from the first byte: the hashes are secrets too (offline guessing).
    with atomic_file(path, "w", permissions=0o600, encoding="utf-8") as fh:
        json.dump([r.to_dict() for r in records], fh, indent=2)
        fh.write("\n")


def create_token(path: str, name: str, scopes: Sequence[str],
                 expires_in_days: Optional[float] = None, *,
                 now: Optional[_dt.datetime] = None) -> str:
    """Add a token named ``name`` with ``scopes`` to ``path``; returns the plaintext token.

    The token is shown only here: the file stores its salt and scrypt hash.
    ``expires_in_days`` (optional, > 0, fractions allowed) records an ``expires``
    timestamp that many days after ``now`` (default: the current UTC time).
    Raises :class:`ConfigError` on a duplicate name, an unknown scope or a
    non-positive ``expires_in_days``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("a token needs a non-empty name")
    scopes = _validate_scopes(scopes)
    if expires_in_days is not None:
        if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, (int, float)) \
                or not expires_in_days > 0 or expires_in_days > 36_500:
            raise ConfigError(f"expires_in_days must be a number of days in (0, 36500], got "
                              f"{expires_in_days!r}")
    records = load_tokens(path)
    if any(r.name == name for r in records):
        raise ConfigError(f"a token named {name!r} already exists in {path}; revoke it first")
    token = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    expires = "" if expires_in_days is None else _format_time(
        now + _dt.timedelta(days=expires_in_days))
    records.append(TokenRecord(name=name, salt=salt.hex(), hash=_hash(token, salt).hex(),
                               scopes=scopes, created=_format_time(now), expires=expires))
    _write(path, records)
    return token


def revoke_token(path: str, name: str) -> None:
    """Remove the token named ``name`` from ``path`` (ConfigError when there is none)."""
    records = load_tokens(path)
    kept = [r for r in records if r.name != name]
    if len(kept) == len(records):
        raise ConfigError(f"no token named {name!r} in {path}")
    _write(path, kept)


def _match(records: Sequence[TokenRecord], token: str) -> Optional[TokenRecord]:
    found = None
    for record in records:  # every record is checked: no early exit on a match
        try:
            expected = bytes.fromhex(record.hash)
            actual = _hash(token, bytes.fromhex(record.salt))
        except ValueError:
            continue
        if hmac.compare_digest(expected, actual) and found is None:
            found = record
    return found


#: Failed tokens remembered (32-byte keys) before the set is emptied.
_MAX_REFUSED = 10_000

#: A stamp no file has (``None`` is the stamp of a missing file).
_NEVER = object()


class TokenStore:
    """The records of a tokens file, re-read when it changes (thread-safe).

    Construction raises :class:`ConfigError` when the file is missing,
    unreadable, malformed or writable by every user, so a server never starts
    on it.  Afterwards each change of the file (mtime, size, inode or mode) is
    re-read: a good file replaces the records; a bad one is logged (once) and
    the last good records stay in use, so requests never fail on it.  A file
    deleted while serving means no tokens (every request is refused).
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._cache: Dict[bytes, TokenRecord] = {}
        self._refused: set = set()  # sha256 of tokens that failed the KDF check
        stamp = self._current_stamp()
        if stamp is None:
            raise ConfigError(f"tokens file {path} does not exist; create a token with "
                              f"sparkml-aiaas tokens create --tokens-file {path}")
        self._records: List[TokenRecord] = self._load()
        if not self._records:
            logger.warning("tokens file %s holds no tokens: every request will be refused "
                           "until one is created", path)
        self._stamp: Any = stamp
        self._failed_stamp: Any = _NEVER  # the stamp of a change that could not be loaded

    def _current_stamp(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return ("unreadable", exc.errno)
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)

    def _load(self) -> List[TokenRecord]:
        """:func:`load_tokens`, and refuse a file every user may write (anyone on the host
        could add an admin token to it)."""
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(f"tokens file {self.path} cannot be read: "
                              f"{exc.strerror or type(exc).__name__}") from None
        if os.name == "posix" and mode & stat.S_IWOTH:
            raise ConfigError(f"tokens file {self.path} is writable by every user (mode "
                              f"{stat.S_IMODE(mode):04o}), so anyone on this machine could add "
                              f"a token; chmod 600 {self.path}")
        return load_tokens(self.path)

    def records(self) -> List[TokenRecord]:
        stamp = self._current_stamp()
        with self._lock:
            if stamp != self._stamp and stamp != self._failed_stamp:
                try:
                    records = self._load()
                except ConfigError as exc:
                    self._failed_stamp = stamp  # logged once per change, not per request
                    logger.error("%s; still using the %d token(s) loaded before", exc,
                                 len(self._records))
                    return list(self._records)
                self._records, self._cache, self._refused = records, {}, set()
                self._stamp, self._failed_stamp = stamp, _NEVER
            return list(self._records)

    def verify(self, token: str) -> Optional[TokenRecord]:
        """The record of ``token``; None when it is unknown, revoked or expired."""
        record = self.lookup(token)
        return None if record is None or record.is_expired() else record

    def cached(self, token: str) -> Tuple[bool, Optional[TokenRecord]]:
        """``(True, record or None)`` when ``token`` is answered without the KDF (empty,
        or seen since the file last changed), else ``(False, None)``."""
        if not isinstance(token, str) or not token:
            return True, None
        self.records()  # drops the caches when the file changed
        key = hashlib.sha256(token.encode("utf-8")).digest()
        with self._lock:
            if key in self._cache:
                return True, self._cache[key]
            return key in self._refused, None

    def lookup(self, token: str) -> Optional[TokenRecord]:
        """The record of ``token``, expired or not (check :meth:`TokenRecord.is_expired`)."""
        if not isinstance(token, str) or not token:
            return None
        records = self.records()
        key = hashlib.sha256(token.encode("utf-8")).digest()
        with self._lock:
            if key in self._refused:
                return None
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        found = _match(records, token)
        with self._lock:
            if records != self._records:
                pass  # the file changed during the check: remember nothing
            elif found is not None:
                self._cache[key] = found
            else:
                if len(self._refused) >= _MAX_REFUSED:
                    self._refused.clear()  # bounded memory; costs a KDF per token again
                self._refused.add(key)
        return found


def verify(path_or_loaded: Union[str, os.PathLike, TokenStore, Sequence[TokenRecord]],
           token: str) -> Optional[TokenRecord]:
    """The record of ``token``, or None when it is unknown, revoked or expired.
    ``path_or_loaded``: a tokens file path, a :class:`TokenStore` (cached,
    reloads on change) or a list of records."""
    if isinstance(path_or_loaded, TokenStore):
        return path_or_loaded.verify(token)
    if not isinstance(token, str) or not token:
        return None
    if isinstance(path_or_loaded, (str, os.PathLike)):
        records = load_tokens(os.fspath(path_or_loaded))
    else:
        records = list(path_or_loaded)
    record = _match(records, token)
    return None if record is None or record.is_expired() else record
