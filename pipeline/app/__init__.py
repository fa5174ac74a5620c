"""The application layer: the only code that wires the engine, the executor, the gateway and Postgres wire
together (:mod:`~.loop`), with the site file, the deployment settings, signals and logging."""

SETTINGS_FILE_ENV = "PIPELINE_SETTINGS_FILE"
"""The environment variable naming the deployment settings YAML (:mod:`pipeline.app.settings`); here, apart
from that module, so the command line can name it without loading pydantic-settings."""
