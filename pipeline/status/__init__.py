"""``pipeline status``: :mod:`~.collect` gathers one snapshot (views over Postgres wire, the executor's
``GET /status``); :mod:`~.view` renders it as rich tables or JSON."""

DEFAULT_DSN = "postgresql://root@127.0.0.1:4566/dev"
"""The views over Postgres wire: the embedded engine's port, as RisingWave's."""
DEFAULT_EXECUTOR_URL = "http://127.0.0.1:9002"
"""The executor's status port (the ``executor.http_host``/``http_port`` settings' defaults)."""
