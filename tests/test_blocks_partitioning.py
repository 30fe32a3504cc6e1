"""Blocks hold the rows in a deterministic order, whatever partitioning the input has."""

import numpy as np
import pytest

from sparkml_aiaas.engine import FeatureSpec, ResidentBlocks
from sparkml_aiaas.engine.block_files import open_block


@pytest.mark.parametrize("source_partitions, target", [(1, 3), (5, 2), (2, 2)])
def test_blocks_keep_the_input_row_order(spark, source_partitions, target):
    rows = 300
    df = (spark.range(rows, numPartitions=source_partitions)
          .selectExpr("cast(id as double) as x", "cast(id % 2 as double) as label"))
    with ResidentBlocks.build(df, FeatureSpec(columns=["x"]), "label",
                              num_partitions=target) as blocks:
        keys = sorted(blocks.keys.collect(), key=lambda k: k["partition"])
        assert [k["partition"] for k in keys] == list(range(target))
        # local mode: the executor's files are on this machine
        xs = [np.asarray(open_block(k["path"])[0])[:, 0] for k in keys]
    # Contiguous, in order: concatenating the blocks gives back 0, 1, ..., rows - 1.
    np.testing.assert_array_equal(np.concatenate(xs), np.arange(rows, dtype=float))
