"""Simulated EVs and OCPP 1.6J / 2.0.1 charging stations that drive the pipeline end to end.

The simulator stands in for real chargers in tests, demos and replays: it speaks real OCPP-J (1.6 or 2.0.1)
over a websocket to the executor, obeys the charging profiles it receives, and integrates delivered energy
over the shared :mod:`pipeline.contracts.clock`, so a compressed day produces the same telemetry a real site
would.

Layout, as the ``ocpp`` library splits its own ``ChargePoint``: a version-neutral core
(:mod:`~pipeline.sim.station` with the physics in :mod:`~pipeline.sim.session`, the profile model in
:mod:`~pipeline.sim.profiles` and the power control in :mod:`~pipeline.sim.control`) and two sibling
adapters that map their version's messages to it: :mod:`~pipeline.sim.v16` (:class:`SimulatedChargePoint`)
and :mod:`~pipeline.sim.v201` (:class:`SimulatedChargingStation`), sharing only :mod:`~pipeline.sim.wire`.
"""

from pipeline.sim.ev import EV
from pipeline.sim.fleet import run_fleet
from pipeline.sim.session import SessionSummary
from pipeline.sim.station import ReconnectBackoff, Station
from pipeline.sim.v16 import SimulatedChargePoint
from pipeline.sim.v201 import SimulatedChargingStation

__all__ = [
    "EV",
    "ReconnectBackoff",
    "SessionSummary",
    "SimulatedChargePoint",
    "SimulatedChargingStation",
    "Station",
    "run_fleet",
]
