"""Benchmarks: figures printed as tables and written as JSON, each beside a floor measured in the same run."""
