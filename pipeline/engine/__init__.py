"""Engines that run sql/: the embedded engine on SQLite and DuckDB (RisingWave is reached by `pipeline migrate`)."""
