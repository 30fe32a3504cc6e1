"""De-identification math: keyed hashing of PII values, and where the key comes from.

No pyspark here: the same functions run in ingest, in the fitted
:class:`~sparkml_aiaas.preprocessing.Deidentifier` stage, in batch scoring and
in the REST server, so a value hashes to the same token everywhere.

A value is replaced by ``HMAC-SHA-256(key, utf8(str(value)))`` in lowercase
hex (64 characters).  Unlike a plain hash, a keyed hash cannot be reversed by
hashing a dictionary of likely values (all phone numbers, all e-mails of a
domain) without the key.  Equal values give equal tokens, so joins and
counts on the hashed column still work.

The key never lives in a config file: it is read from an environment
variable or a secret file (a Kubernetes/Databricks secret mount, a file with
mode 0600).  Configs name where the key is; :func:`load_key` reads it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from sparkml_aiaas.errors import ConfigError

__all__ = [
    "ACTIONS",
    "DEFAULT_KEY_ENV",
    "MIN_KEY_BYTES",
    "PiiPolicy",
    "key_id",
    "keyed_hash",
    "keyed_hashes",
    "load_key",
]

#: What can be done to a PII column.
ACTIONS = ("drop", "hash")
#: Environment variable read when neither a variable nor a file is named.
DEFAULT_KEY_ENV = "SPARKML_AIAAS_PII_KEY"
#: Shorter keys are refused: HMAC's strength is bounded by the key's entropy.
MIN_KEY_BYTES = 16


def load_key(env_var: Optional[str] = None, secret_file: Optional[str] = None) -> bytes:
    """Read the hashing key from ``secret_file`` or the environment variable ``env_var``.

    Exactly one source is used: ``secret_file`` when given, else ``env_var``
    (default :data:`DEFAULT_KEY_ENV`).  A file's trailing line break is not
    part of the key.  The key must be at least :data:`MIN_KEY_BYTES` bytes.

    Raises
    ------
    ConfigError
        Both sources given, the variable unset or empty, the file missing or
        unreadable, or the key too short.  The message never contains the key.
    """
    if env_var and secret_file:
        raise ConfigError("give the PII key as an environment variable or a secret file, not both")
    if secret_file:
        try:
            with open(secret_file, "rb") as handle:
                key = handle.read().rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the PII key file {secret_file!r}: {exc.strerror}") from None
        source = f"key file {secret_file!r}"
    else:
        name = env_var or DEFAULT_KEY_ENV
        value = os.environ.get(name)
        if not value:
            raise ConfigError(
                f"PII hashing needs a key: set the environment variable {name} "
                "(or configure a secret file); keys are never read from the config"
            )
        key = value.encode("utf-8")
        source = f"environment variable {name}"
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the PII key in {source} is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
            "(32 random bytes recommended, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of ``key`` (16 hex chars), stored with fitted stages.

    Lets scoring check that it hashes with the key training used, without
    storing the key.  It is itself an HMAC, so it reveals nothing about the key.
    """
    return hmac.new(key, b"sparkml_aiaas key id", hashlib.sha256).hexdigest()[:16]


def keyed_hash(value: Any, key: bytes) -> Optional[str]:
    """HMAC-SHA-256 of ``str(value)`` as lowercase hex; None stays None."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN: a missing value, not a token
        return None
    text = value if isinstance(value, str) else str(value)
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def keyed_hashes(values: Iterable[Any], key: bytes) -> list:
    """:func:`keyed_hash` of each value (the vectorised form pandas UDFs use)."""
    # One keyed state copied per value: HMAC's key schedule is computed once.
    base = hmac.new(key, digestmod=hashlib.sha256)
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and value != value):
            out.append(None)
            continue
        text = value if isinstance(value, str) else str(value)
        h = base.copy()
        h.update(text.encode("utf-8"))
        out.append(h.hexdigest())
    return out


@dataclass(frozen=True)
class PiiPolicy:
    """Which columns are PII and what happens to them, plus where the key is.

    Attributes
    ----------
    columns : mapping of column name to ``"drop"`` or ``"hash"``
    key_env : str, optional
        Environment variable holding the key (default :data:`DEFAULT_KEY_ENV`).
    key_file : str, optional
        Secret file holding the key (instead of the variable).
    """

    columns: Mapping[str, str]
    key_env: Optional[str] = None
    key_file: Optional[str] = None

    def __post_init__(self):
        if not isinstance(self.columns, Mapping) or not self.columns:
            raise ConfigError("a PII policy needs a non-empty mapping of column name to drop|hash")
        for name, action in self.columns.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"PII column names must be non-empty strings, not {name!r}")
            if action not in ACTIONS:
                raise ConfigError(
                    f"PII action for column {name!r} is {action!r}; expected one of {list(ACTIONS)}"
                )
        if self.key_env and self.key_file:
            raise ConfigError("give the PII key as key_env or key_file, not both")
        object.__setattr__(self, "columns", dict(self.columns))

    @property
    def hashed(self) -> list[str]:
        return [c for c, a in self.columns.items() if a == "hash"]

    @property
    def dropped(self) -> list[str]:
        return [c for c, a in self.columns.items() if a == "drop"]

    def key(self) -> Optional[bytes]:
        """The key, read now; None when no column is hashed (dropping needs no key)."""
        if not self.hashed:
            return None
        return load_key(self.key_env, self.key_file)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "PiiPolicy":
        """From a YAML mapping ``{columns: {email: hash, ssn: drop}, key_env: ..., key_file: ...}``.

        A ``key`` entry is refused: keys do not belong in config files.
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"pii must be a mapping, not {type(config).__name__}")
        if "key" in config:
            raise ConfigError(
                "pii.key is not allowed: a key in a config file leaks with the file; "
                "use key_env (an environment variable) or key_file (a secret file)"
            )
        unknown = sorted(set(config) - {"columns", "key_env", "key_file"})
        if unknown:
            raise ConfigError(f"pii has unknown keys {unknown}; allowed: columns, key_env, key_file")
        return cls(
            columns=config.get("columns") or {},
            key_env=config.get("key_env"),
            key_file=config.get("key_file"),
        )
