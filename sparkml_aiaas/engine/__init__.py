"""Spark side of training: executor-resident blocks and the gradient pass.

One pass = broadcast the parameters → each partition computes (loss,
gradient, weight, count) on its resident block → combine in partition order
with a tree reduce → the driver updates.  The math lives in
:mod:`sparkml_aiaas.core`.
"""

from sparkml_aiaas.engine.blocks import FeatureSpec, ResidentBlocks
from sparkml_aiaas.engine.loop import DistributedDataPass

__all__ = ["FeatureSpec", "ResidentBlocks", "DistributedDataPass"]
