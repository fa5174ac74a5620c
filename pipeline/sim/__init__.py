"""Simulated EVs and OCPP 1.6J / 2.0.1 charge points that drive the pipeline end to end.

The simulator stands in for real chargers in tests, demos and replays: it speaks real OCPP-J 1.6 over a
websocket to the executor, obeys the charging profiles it receives, and integrates delivered energy over the
shared :mod:`pipeline.contracts.clock`, so a compressed day produces the same telemetry a real site would.
"""

from pipeline.sim.charger import ReconnectBackoff, SessionSummary, SimulatedChargePoint
from pipeline.sim.ev import EV
from pipeline.sim.fleet import run_fleet
from pipeline.sim.v201 import SimulatedChargingStation

__all__ = ["EV", "ReconnectBackoff", "SessionSummary", "SimulatedChargePoint", "SimulatedChargingStation", "run_fleet"]
