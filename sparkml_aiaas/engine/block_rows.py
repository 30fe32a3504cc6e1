"""Task side of a block build: Arrow batches of a training frame → block files.

Imported on the executors; free of pyspark imports.  :func:`write_block` writes one
partition's block and returns its key; :func:`write_grouped_blocks` writes one block per
group of rows (cross-validation folds: a fold's training rows are then whole blocks,
never a mask over rows) and returns one key per group.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from sparkml_aiaas.core.stats import BlockStats, block_stats, merge_stats
from sparkml_aiaas.errors import DataValidationError

#: Values of the ``blockFormat`` param: ``auto`` stores a partition as CSR when its features
#: come from a vector column and are sparse enough (the data's first rows decide whether
#: vectors are read as vectors at all; then each partition's first batch), else dense.
BLOCK_FORMATS = ("auto", "dense", "sparse")
#: Values of the ``blockDtype`` param (the type feature values are stored in).
BLOCK_DTYPES = ("float64", "float32")
#: ``auto`` stores CSR below this fraction of non-zero entries in the first batch.
SPARSE_DENSITY_THRESHOLD = 0.25


@dataclass(frozen=True)
class BlockOptions:
    """How blocks store the features: ``format`` in :data:`BLOCK_FORMATS`, ``dtype`` in
    :data:`BLOCK_DTYPES`.  Labels and weights are always float64."""

    format: str = "auto"
    dtype: str = "float64"

    def __post_init__(self):
        if self.format not in BLOCK_FORMATS:
            raise ValueError(
                f"param blockFormat must be one of {list(BLOCK_FORMATS)}, got {self.format!r}")
        if self.dtype not in BLOCK_DTYPES:
            raise ValueError(
                f"param blockDtype must be one of {list(BLOCK_DTYPES)}, got {self.dtype!r}")

    @property
    def fixed_layout(self) -> Optional[str]:
        """The block layout (``"dense"``/``"csr"``) when fixed, None when each partition decides."""
        return {"dense": "dense", "sparse": "csr"}.get(self.format)


def _arrow_batch_to_numpy(batch, n_features: int, vector_input: bool):
    """One Arrow batch of a training frame → ``(X, y, w, bad_vector_rows)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = batch.num_rows
    y = batch.column(batch.num_columns - 2).to_numpy(zero_copy_only=False).astype(np.float64)
    w = batch.column(batch.num_columns - 1).to_numpy(zero_copy_only=False).astype(np.float64)
    if not vector_input:
        # Zero-copy column views stacked straight into a row-major X: measured here the
        # fastest of stacking, a (d, n) copy plus a blocked transpose, and column writes.
        X = np.stack([batch.column(j).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                      for j in range(n_features)], axis=1)
        return X, y, w, 0
    vectors = batch.column(0)
    lengths = pc.fill_null(pc.list_value_length(vectors), -1).to_numpy(zero_copy_only=False)
    good = lengths == n_features
    bad = int(n - good.sum())
    if bad:
        vectors = vectors.filter(pa.array(good))
        y, w = y[good], w[good]
    values = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return values.reshape(-1, n_features), y, w, bad


def _struct_fields(vectors) -> dict:
    """The children of Arrow's encoding of ``VectorUDT`` (``type``: 0 sparse / 1 dense,
    ``size``, ``indices``, ``values``), with the struct's offset and nulls applied."""
    import pyarrow as pa

    if isinstance(vectors, pa.ChunkedArray):
        vectors = vectors.combine_chunks()
    return {field.name: child for field, child in zip(vectors.type, vectors.flatten())}


def _vector_batch_to_numpy(batch, n_features: int, layout: str):
    """A batch whose features are ``VectorUDT`` structs → ``(X, y, w, bad_vector_rows)``,
    ``X`` a CSR matrix for ``layout == "csr"`` (built from the indices and values, never
    densified; explicit zeros are dropped) or a dense array."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import scipy.sparse as sp

    def ints(array):
        return pc.fill_null(array, -1).to_numpy(zero_copy_only=False)

    n = batch.num_rows
    y = batch.column(batch.num_columns - 2).to_numpy(zero_copy_only=False).astype(np.float64)
    w = batch.column(batch.num_columns - 1).to_numpy(zero_copy_only=False).astype(np.float64)
    vectors = batch.column(0)
    fields = _struct_fields(vectors)
    kind = ints(fields["type"])
    n_values = ints(pc.list_value_length(fields["values"]))
    # A sparse vector must have the model's size and as many indices as values; a dense
    # one as many values as features.  Null vectors (kind -1) are bad rows too.
    good = np.where(kind == 1, n_values == n_features,
                    (kind == 0) & (ints(fields["size"]) == n_features)
                    & (ints(pc.list_value_length(fields["indices"])) == n_values))
    bad = int(n - good.sum())
    if bad:
        vectors = vectors.filter(pa.array(good))
        y, w = y[good], w[good]
        fields = _struct_fields(vectors)
        kind = kind[good]
    m = len(y)
    values = fields["values"].flatten().to_numpy(zero_copy_only=False).astype(np.float64,
                                                                              copy=False)
    dense_row = kind == 1
    if dense_row.all():
        X = values.reshape(m, n_features)
        return (sp.csr_matrix(X) if layout == "csr" else X), y, w, bad
    lengths = pc.list_value_length(fields["values"]).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    columns = np.empty(values.size, dtype=np.int32)
    dense_entry = np.repeat(dense_row, lengths)
    columns[~dense_entry] = fields["indices"].flatten().to_numpy(zero_copy_only=False)
    columns[dense_entry] = np.tile(np.arange(n_features, dtype=np.int32), int(dense_row.sum()))
    if columns.size and (columns.min() < 0 or columns.max() >= n_features):
        raise DataValidationError(
            f"a sparse feature vector has an index outside 0..{n_features - 1}")
    keep = values != 0.0  # NaN is kept (validation counts it)
    if keep.all():
        counts = lengths
    else:
        counts = np.bincount(np.repeat(np.arange(m), lengths)[keep], minlength=m)
        values, columns = values[keep], columns[keep]
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    X = sp.csr_matrix((values, columns, indptr), shape=(m, n_features))
    return (X.toarray() if layout == "dense" else X), y, w, bad


def _batch_to_block_rows(batch, n_features: int, vector_input: bool, layout: str):
    """One Arrow batch of a training frame → ``(X, y, w, bad_vector_rows)`` with ``X`` in the
    block ``layout``: a dense array (``"dense"``) or a ``scipy.sparse`` CSR matrix (``"csr"``)."""
    import pyarrow as pa

    if vector_input and pa.types.is_struct(batch.column(0).type):
        return _vector_batch_to_numpy(batch, n_features, layout)
    X, y, w, bad = _arrow_batch_to_numpy(batch, n_features, vector_input)
    if layout == "csr":
        import scipy.sparse as sp

        X = sp.csr_matrix(X)
    return X, y, w, bad


def _first_batch_layout(X, n_features: int) -> str:
    """``auto``'s choice from a partition's first batch (decoded as CSR when it was vectors)."""
    import scipy.sparse as sp

    if not sp.issparse(X):
        return "dense"
    cells = max(1, X.shape[0]) * max(1, n_features)
    return "csr" if X.nnz < SPARSE_DENSITY_THRESHOLD * cells else "dense"


class PartitionBlock:
    """One block being written from a partition's Arrow batches (see :func:`write_block`).

    ``options`` sets the block's layout and value type; with ``format="auto"`` the first
    non-empty batch decides (CSR only for sparse enough vector input).  The statistics
    summarize the values as stored (after any float32 rounding).
    """

    def __init__(self, fit_id: str, partition: int, attempt: int, n_features: int,
                 vector_input: bool, options: BlockOptions = BlockOptions(),
                 group: Optional[int] = None):
        self.fit_id, self.partition, self.attempt = fit_id, partition, attempt
        self.n_features, self.vector_input, self.options = n_features, vector_input, options
        self.group = group
        self.layout = options.fixed_layout
        self.writer = None
        self.stats = BlockStats.empty(n_features)

    def _open(self, layout: str):
        from sparkml_aiaas.engine.block_files import BlockWriter

        self.writer = BlockWriter(self.fit_id, self.partition, self.attempt, self.n_features,
                                  self.options.dtype, layout, group=self.group)

    def add(self, batch) -> None:
        import pyarrow as pa

        if self.writer is None:
            if self.layout is None and batch.num_rows == 0:
                return  # an empty batch cannot decide the layout
            # auto decodes vector structs as CSR (cheap) and then looks at the density.
            probe = self.layout or ("csr" if self.vector_input
                                    and pa.types.is_struct(batch.column(0).type) else "dense")
            X, y, w, bad = _batch_to_block_rows(batch, self.n_features, self.vector_input, probe)
            if self.layout is None:
                self.layout = _first_batch_layout(X, self.n_features)
                if self.layout == "dense" and probe == "csr":
                    X = X.toarray()
            self._open(self.layout)
        else:
            X, y, w, bad = _batch_to_block_rows(batch, self.n_features, self.vector_input,
                                                self.layout)
        # A value beyond float32's range becomes inf, which validation then reports.
        with np.errstate(over="ignore"):
            X = X.astype(self.writer.dtype, copy=False)
        self.stats = merge_stats(self.stats, block_stats(X, y, w, bad))
        self.writer.append(X, y, w)

    def close(self) -> dict:
        """Finish the block; its key (``partition``, ``path``, ``rows``, pickled ``stats``)."""
        if self.writer is None:
            self._open(self.layout or "dense")
        path = self.writer.close()
        return {"partition": self.partition, "path": path, "rows": self.writer.rows,
                "stats": pickle.dumps(self.stats, protocol=pickle.HIGHEST_PROTOCOL)}

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def write_block(fit_id: str, partition: int, attempt: int, n_features: int, vector_input: bool,
                batches, options: BlockOptions = BlockOptions()) -> dict:
    """Task side of a block build: write the training-frame ``batches`` of one partition as
    its block and return its key (``partition``, ``path``, ``rows``, pickled ``stats``)."""
    block = PartitionBlock(fit_id, partition, attempt, n_features, vector_input, options)
    try:
        for batch in batches:
            block.add(batch)
        return block.close()
    except BaseException:
        block.abort()
        raise


#: Name of the group column that ends a grouped training frame (int, 0 … groups − 1).
GROUP_COLUMN = "group"


def write_grouped_blocks(fit_id: str, partition: int, attempt: int, n_features: int,
                         vector_input: bool, batches, groups: int,
                         options: BlockOptions = BlockOptions()) -> List[dict]:
    """:func:`write_block` for a training frame ending with a :data:`GROUP_COLUMN`: one block
    per group value ``0 … groups − 1`` (each row in its group's block, in input order), one key
    each (with ``group``), in group order; every group gets a block, empty or not.

    The group column was checked by Spark (the fold numbers' error is raised there); a value
    outside the range here is a bug, reported as such.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    blocks: Dict[int, PartitionBlock] = {
        g: PartitionBlock(fit_id, partition, attempt, n_features, vector_input, options, group=g)
        for g in range(groups)}
    try:
        for batch in batches:
            index = batch.schema.get_field_index(GROUP_COLUMN)
            group = pc.fill_null(batch.column(index), -1).to_numpy(zero_copy_only=False)
            rows = batch.remove_column(index)
            if group.size and (group.min() < 0 or group.max() >= groups):
                raise DataValidationError(
                    f"a row's group is outside 0..{groups - 1}: {int(group.min())}..."
                    f"{int(group.max())}")
            for g in np.unique(group).tolist():
                part = rows if group.size and (group == g).all() else rows.filter(
                    pa.array(group == g))
                blocks[g].add(part)
        keys = []
        for g in range(groups):
            key = blocks[g].close()
            key["group"] = g
            keys.append(key)
        return keys
    except BaseException:
        for block in blocks.values():
            block.abort()
        raise
