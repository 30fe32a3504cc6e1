"""The :class:`Deidentifier` stage: drop or HMAC-hash PII columns (math in ``core.pii``).

The key is read from an environment variable or a secret file when the stage
transforms (or is saved, or loaded) and travels to the executors only inside
the pandas UDF's closure: it is never a SQL literal, so it appears in no
plan string, and it is never saved.  A saved stage holds the policy (which
columns, which key source) and ``keyId``, the key's public fingerprint; with
another key it refuses to run rather than produce tokens that silently fail
to join with the training data.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import MLReadable, MLWritable

from sparkml_aiaas.columns import named_column
from sparkml_aiaas.core.pii import PiiPolicy, key_id, keyed_hashes
from sparkml_aiaas.errors import ConfigError, DataValidationError, name_list
from sparkml_aiaas.models.persistence import ArtifactReader, ArtifactWriter

__all__ = ["Deidentifier"]


def _hash_udf(key: bytes):
    """A pandas UDF hashing a column with ``key``, which only the closure holds."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")
    def hash_column(values: pd.Series) -> pd.Series:
        return pd.Series(keyed_hashes(values.tolist(), key), index=values.index, dtype=object)

    return hash_column


class Deidentifier(Transformer, MLWritable, MLReadable):
    """Drops ``dropCols`` and replaces ``hashCols`` by ``HMAC-SHA-256(key, str(value))`` hex.

    Parameters
    ----------
    dropCols : list of str
        Columns removed from the output.
    hashCols : list of str
        Columns replaced in place by 64-character lowercase hex tokens (string
        type; null stays null).  Integer columns are hashed from their decimal
        digits, as ``str(int)`` gives.
    keyEnv : str
        Environment variable holding the key (default
        ``SPARKML_AIAAS_PII_KEY`` when neither keyEnv nor keyFile is set).
    keyFile : str
        Secret file holding the key (instead of the variable).
    keyId : str
        Fingerprint (:func:`sparkml_aiaas.core.pii.key_id`) of the key this
        stage must use.  Empty: any key.  Saving pins it to the key in use.

    Raises
    ------
    ConfigError
        No key available, key too short, or a key whose id differs from keyId.
    DataValidationError
        A configured column is not in the data.
    """

    dropCols: Param = Param(Params._dummy(), "dropCols", "PII columns to drop",
                            typeConverter=TypeConverters.toListString)
    hashCols: Param = Param(Params._dummy(), "hashCols", "PII columns to replace by HMAC tokens",
                            typeConverter=TypeConverters.toListString)
    keyEnv: Param = Param(Params._dummy(), "keyEnv", "environment variable holding the key",
                          typeConverter=TypeConverters.toString)
    keyFile: Param = Param(Params._dummy(), "keyFile", "secret file holding the key",
                           typeConverter=TypeConverters.toString)
    keyId: Param = Param(Params._dummy(), "keyId",
                         "fingerprint of the required key ('' = not pinned)",
                         typeConverter=TypeConverters.toString)

    @keyword_only
    def __init__(self, *, dropCols=None, hashCols=None, keyEnv="", keyFile="", keyId=""):
        super().__init__()
        self._setDefault(dropCols=[], hashCols=[], keyEnv="", keyFile="", keyId="")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, dropCols=None, hashCols=None, keyEnv="", keyFile="", keyId=""):
        """Set params (keyword arguments only)."""
        return self._set(**self._input_kwargs)

    @classmethod
    def fromPolicy(cls, policy: PiiPolicy) -> "Deidentifier":
        """The stage enforcing a :class:`~sparkml_aiaas.core.pii.PiiPolicy` (e.g. from YAML)."""
        return cls(dropCols=policy.dropped, hashCols=policy.hashed,
                   keyEnv=policy.key_env or "", keyFile=policy.key_file or "")

    def setDropCols(self, value):
        return self._set(dropCols=value)

    def setHashCols(self, value):
        return self._set(hashCols=value)

    def setKeyEnv(self, value):
        return self._set(keyEnv=value)

    def setKeyFile(self, value):
        return self._set(keyFile=value)

    def setKeyId(self, value):
        return self._set(keyId=value)

    def getDropCols(self) -> List[str]:
        return self.getOrDefault(self.dropCols)

    def getHashCols(self) -> List[str]:
        return self.getOrDefault(self.hashCols)

    def getKeyEnv(self) -> str:
        return self.getOrDefault(self.keyEnv)

    def getKeyFile(self) -> str:
        return self.getOrDefault(self.keyFile)

    def getKeyId(self) -> str:
        return self.getOrDefault(self.keyId)

    def policy(self) -> PiiPolicy:
        """The params as a validated :class:`PiiPolicy` (ConfigError if invalid)."""
        columns: Dict[str, str] = {}
        for action, names in (("drop", self.getDropCols()), ("hash", self.getHashCols())):
            for name in names:
                if name in columns:
                    raise ConfigError(f"PII column {name!r} is in both dropCols and hashCols")
                columns[name] = action
        return PiiPolicy(columns=columns, key_env=self.getKeyEnv() or None,
                         key_file=self.getKeyFile() or None)

    def _key(self, policy: PiiPolicy) -> Optional[bytes]:
        """The key (None when nothing is hashed), checked against keyId."""
        key = policy.key()
        if key is None:
            return None
        pinned = self.getKeyId()
        actual = key_id(key)
        if pinned and actual != pinned:
            source = (f"key file {policy.key_file!r}" if policy.key_file
                      else f"environment variable {policy.key_env or 'SPARKML_AIAAS_PII_KEY'}")
            raise ConfigError(
                f"the PII key in {source} has id {actual}, but this Deidentifier was saved with "
                f"key id {pinned}; hashing with another key would give tokens that do not match "
                "the training data. Provide the original key")
        return key

    def _transform(self, dataset):
        from pyspark.sql.types import IntegralType

        policy = self.policy()
        missing = [c for c in policy.columns if c not in dataset.columns]
        if missing:
            raise DataValidationError(
                f"PII column(s) {missing} are not in the data (it has {len(dataset.columns)}: "
                f"{name_list(dataset.columns)})")
        key = self._key(policy)
        hashed = set(policy.hashed)
        dropped = set(policy.dropped)
        hash_column = _hash_udf(key) if hashed else None
        out = []
        for name in dataset.columns:
            if name in dropped:
                continue
            if name in hashed:
                column = named_column(name)
                # An int column with nulls would reach pandas as float64 ("3.0"): hash
                # Spark's exact decimal string instead, which equals Python's str(int).
                if isinstance(dataset.schema[name].dataType, IntegralType):
                    column = column.cast("string")
                out.append(hash_column(column).alias(name))
            else:
                out.append(named_column(name))
        return dataset.select(*out)

    # -- persistence -------------------------------------------------------
    def _artifact(self):
        """Policy and key id only; the key itself is never written."""
        policy = self.policy()
        if policy.hashed and not self.getKeyId():
            # Pin the stage to the key in use so a later run with another key fails loudly.
            self._set(keyId=key_id(policy.key()))
        return {"pii": {"columns": dict(policy.columns), "key_env": policy.key_env,
                        "key_file": policy.key_file, "key_id": self.getKeyId() or None}}, {}

    def _restore(self, metadata, arrays) -> None:
        # Fail at load, not at the first batch: a server without the right key should
        # not start.  The paramMap (with keyId) is already set by the reader.
        self._key(self.policy())

    def write(self) -> ArtifactWriter:
        return ArtifactWriter(self)

    @classmethod
    def read(cls) -> ArtifactReader:
        return ArtifactReader(cls)
