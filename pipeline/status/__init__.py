"""``pipeline status``: :mod:`~.collect` gathers one snapshot (views over Postgres wire, the executor's
``GET /status``); :mod:`~.view` renders it as rich tables or JSON."""
