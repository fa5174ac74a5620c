"""The Postgres-wire server's configuration: where ``psql`` reaches the embedded engine's views."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["PgwireSettings"]


class PgwireSettings(BaseModel):
    """The Postgres-wire server on the embedded engine's views (psql clients, like RisingWave's 4566)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1, description="bind address")
    port: int = Field(4566, ge=0, le=65535, description="port (0: a free one)")
    password: SecretStr | None = Field(None, description="clients must give it (none: no password asked)")
