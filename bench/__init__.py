"""Benchmarks run by ``make bench``: each ``bench_<name>.py`` has ``main(out_dir) -> dict``."""

CODEGEN_KEYS = ("spark.sql.codegen.wholeStage", "spark.sql.codegen.factoryMode")


def with_code_generation(spark):
    """``spark`` (a :class:`stpipe.config.SparkSettings`) with Spark's code generation on:
    ``conf/local.yaml`` turns it off for the embedded default's tiny tables and advises it on for
    a million lines, the size of the benches that use this."""
    import dataclasses

    conf = {k: v for k, v in spark.conf.items() if k not in CODEGEN_KEYS}
    return dataclasses.replace(spark, conf=conf)
