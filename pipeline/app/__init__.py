"""The application layer: the only code that wires the engine, the executor, the gateway and Postgres wire
together (:mod:`~.loop`), with the site file, the deployment settings, signals and logging."""
