"""Benchmarks run by ``make bench``: each ``bench_<name>.py`` has ``main(out_dir) -> dict``."""
