"""Run the jobs against a real Spark cluster: a standalone master and workers from pip's
pyspark on one machine (tests, CI, laptops), and the package built as a wheel to ship to
executors.  See docs/cluster.md.  No pyspark import: this only starts processes."""

from sparkml_aiaas.cluster.standalone import (
    ClusterError,
    StandaloneCluster,
    build_wheel,
    free_port,
    process_alive,
    process_group_members,
    spark_home,
    spark_submit,
    stop_from_state,
    stop_processes,
    zip_for_py_files,
)

__all__ = [
    "ClusterError",
    "StandaloneCluster",
    "build_wheel",
    "free_port",
    "process_alive",
    "process_group_members",
    "spark_home",
    "spark_submit",
    "stop_from_state",
    "stop_processes",
    "zip_for_py_files",
]
