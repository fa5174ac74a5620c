"""Engines that run sql/: the embedded DuckDB engine (RisingWave is reached by `pipeline migrate`)."""
