"""Pure math: losses, gradients, merges, standardization and optimizer steps.

Nothing in this package imports pyspark.  The engine runs these very
functions inside Spark tasks; the tests run them on plain numpy arrays.
"""
