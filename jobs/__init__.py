"""Spark jobs: each runnable with ``python -m jobs.<name>`` or ``spark-submit jobs/<name>.py``."""
