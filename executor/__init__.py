"""The OCPP central system of the setpoint pipeline.

It serves chargers over OCPP-J 1.6 and 2.0.1 (the version is chosen by websocket subprotocol), turns their
messages into ``ocpp.active.sessions`` records, and drives each charger towards the latest
``ocpp.setpoint.commands`` with SetChargingProfile, safely (break before make, in-flight accounting,
fail-safe profiles), reporting every answer on ``ocpp.setpoint.acks``. It shares nothing with the engine
but the topics in :mod:`pipeline.contracts.topics`.
"""

from typing import TYPE_CHECKING, Any

from executor.config import ExecutorConfig

if TYPE_CHECKING:
    from executor.service import Executor

__all__ = ["Executor", "ExecutorConfig"]


def __getattr__(name: str) -> Any:
    """``Executor`` is imported on first use: settings and short commands need only the config, and the
    OCPP stack takes a quarter of a second to import."""
    if name == "Executor":
        from executor.service import Executor

        return Executor
    raise AttributeError(f"module 'executor' has no attribute {name!r}")
