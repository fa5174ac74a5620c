"""Postgres wire on the embedded engine: ``psql`` and any Postgres client read the views, as on RisingWave's
port 4566. :mod:`~.server` speaks the protocol (buenavista); :mod:`~.session` is the read-only backend."""
