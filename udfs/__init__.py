"""pandas UDFs: plain pandas/numpy/torch functions, each with a thin Spark wrapper."""
