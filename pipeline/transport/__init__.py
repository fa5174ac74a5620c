"""Transports: ``memory`` (in-process, the embedded default) and ``kafka`` (aiokafka)."""

from pipeline.transport.base import (
    Consumer,
    Record,
    Transport,
    decode_or_dead_letter,
    publish,
    publish_tombstone,
)
from pipeline.transport.memory import MemoryTransport

__all__ = [
    "Consumer",
    "MemoryTransport",
    "Record",
    "Transport",
    "decode_or_dead_letter",
    "publish",
    "publish_tombstone",
]
