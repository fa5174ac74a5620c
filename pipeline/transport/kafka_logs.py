"""One line when the Kafka brokers go away, one when they come back, a periodic summary in between.

While a broker is unreachable aiokafka logs an error for every failed connection, metadata refresh, fetch
and heartbeat: thousands of lines in half a minute from one producer and one consumer, which bury
everything else. :class:`BrokerOutageLog` is a :class:`logging.Filter` on aiokafka's loggers that turns
an outage into three kinds of lines:

* the first connection error, as aiokafka logged it, marked as the start of an outage;
* every ``summary_every_s`` while it lasts, one warning counting the lines suppressed since the last one;
* one warning when the brokers answer again (:meth:`BrokerOutageLog.reachable`, called by the Kafka
  transport after a delivered record or a committed offset), with the outage's length and how many lines
  were suppressed.

Outside an outage aiokafka's records pass unchanged; during one, and for ``settle_s`` after it (while stale
connections are found closed, the group coordinator is elected again and partitions get their leaders
back), every aiokafka record at WARNING or above is counted instead: they are consequences of the outage.
A request of the transport's that fails while settling starts a new outage at once. The transport's own retry warnings go through
the same state (:meth:`BrokerOutageLog.failure`), so the two services log an outage the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["BrokerOutageLog", "outage_log"]

log = logging.getLogger("pipeline.transport.kafka")

AIOKAFKA_LOGGERS = (
    "aiokafka",
    "aiokafka.cluster",
    "aiokafka.conn",
    "aiokafka.client",
    "aiokafka.consumer",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
    "aiokafka.admin",
    "aiokafka.admin.client",
)
"""aiokafka's module loggers (a logger's filters see only records logged on that very logger)."""

CONNECTION_ERRORS = (
    "unable connect",
    "unable to update metadata",
    "unable to request metadata",
    "connect call failed",
    "connection refused",
    "connection reset",
    "broken pipe",
    "nodenotready",
    "kafkaconnectionerror",
)
"""Lower-case fragments of aiokafka messages that mean a broker cannot be reached (start an outage)."""


class BrokerOutageLog(logging.Filter):
    """Collapses aiokafka's connection errors during a broker outage (see the module docstring).

    Args:
        summary_every_s: real seconds between summaries while the outage lasts.
        settle_s: real seconds after the outage in which aiokafka's warnings are still counted, not logged
            (:meth:`failure` then starts a new outage).
        monotonic: the time source (seconds), replaceable in tests.
    """

    def __init__(
        self, summary_every_s: float = 60.0, settle_s: float = 30.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.summary_every_s = summary_every_s
        self.settle_s = settle_s
        self._settling_until: float | None = None
        self.settling_suppressed = 0
        """aiokafka lines counted, not logged, while settling after the last outage."""
        self._now = monotonic
        self.since: float | None = None
        """When the current outage began (``None``: the brokers answer)."""
        self.suppressed = 0
        """Lines suppressed since the last summary."""
        self.suppressed_total = 0
        """Lines suppressed in the current outage."""
        self._last_line = 0.0

    @property
    def away(self) -> bool:
        """An outage is under way."""
        return self.since is not None

    # -- logging.Filter --------------------------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass, rewrite or drop one aiokafka record."""
        if record.levelno < logging.WARNING:
            return True
        if self.since is None:
            if self._settling_until is not None and self._now() < self._settling_until:
                self.settling_suppressed += 1
                return False
            if not _is_connection_error(record):
                return True
            self._begin()
            first = _message(record)
            record.msg = "kafka brokers unreachable: %s (further connection errors are summarised every %gs)"
            record.args = (first, self.summary_every_s)
            record.exc_info = record.exc_text = None
            return True
        return self._count(record, self.since)

    # -- the transport's view --------------------------------------------------------------------------

    def failure(self, message: str) -> None:
        """The transport failed a request for want of a broker: log it if it starts an outage, else count."""
        if self.since is None:
            self._begin()
            log.error(
                "kafka brokers unreachable: %s (further connection errors are summarised every %gs)",
                message,
                self.summary_every_s,
            )
            return
        record = log.makeRecord(log.name, logging.WARNING, __file__, 0, "%s", (message,), None)
        if self._count(record, self.since):
            log.handle(record)

    def reachable(self) -> None:
        """The brokers answered (a record was delivered, an offset committed): end the outage, if any."""
        if self.since is None:
            return
        seconds = self._now() - self.since
        suppressed = self.suppressed_total
        self.since = None
        self.suppressed = self.suppressed_total = 0
        self._settling_until = self._now() + self.settle_s
        log.warning("kafka brokers reachable again after %.0fs (%d connection errors suppressed)", seconds, suppressed)

    # -- installing ------------------------------------------------------------------------------------

    def install(self) -> BrokerOutageLog:
        """Attach to every aiokafka logger (idempotent); returns ``self``."""
        names = set(AIOKAFKA_LOGGERS) | {n for n in list(logging.Logger.manager.loggerDict) if n.startswith("aiokafka")}
        for name in names:
            logger = logging.getLogger(name)
            if self not in logger.filters:
                logger.addFilter(self)
        return self

    def uninstall(self) -> None:
        for name in list(logging.Logger.manager.loggerDict):
            if name.startswith("aiokafka"):
                logging.getLogger(name).removeFilter(self)

    # -- state -----------------------------------------------------------------------------------------

    def _begin(self) -> None:
        self.since = self._last_line = self._now()
        self.suppressed = self.suppressed_total = 0

    def _count(self, record: logging.LogRecord, since: float) -> bool:
        """Count the record as suppressed, or turn it into the periodic summary (``True``) when one is due.
        ``since``: when the outage began (:attr:`since`, monotonic seconds)."""
        now = self._now()
        if now - self._last_line < self.summary_every_s:
            self.suppressed += 1
            self.suppressed_total += 1
            return False
        suppressed, self.suppressed = self.suppressed, 0
        self._last_line = now
        last = _message(record)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = "kafka brokers still unreachable after %.0fs: %d connection errors suppressed (last: %s)"
        record.args = (now - since, suppressed, last)
        record.exc_info = record.exc_text = None
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:
        text = str(record.msg)
    return text.splitlines()[0] if text else type(record.msg).__name__


def _is_connection_error(record: logging.LogRecord) -> bool:
    text = _message(record).lower()
    if record.exc_info and record.exc_info[1] is not None:
        text += " " + type(record.exc_info[1]).__name__.lower() + " " + str(record.exc_info[1]).lower()
    return any(fragment in text for fragment in CONNECTION_ERRORS)


_SHARED: BrokerOutageLog | None = None


def outage_log() -> BrokerOutageLog:
    """The process's one :class:`BrokerOutageLog`, installed on aiokafka's loggers at the first call."""
    global _SHARED
    if _SHARED is None:
        _SHARED = BrokerOutageLog()
    return _SHARED.install()
