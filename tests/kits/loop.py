"""The small site both whole-loop tests drive (over memory in test_end_to_end, over Kafka in
tests/kafka/test_kafka_loop): four 22 kW chargers behind a 40 kW limit, and EVs that want 40 kWh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.app.site import parse_config
from pipeline.sim.ev import EV

LIMIT_KW = 40.0
CONFIG = parse_config(
    {
        "sites": [
            {
                "site_id": "s1",
                "limit_kw": LIMIT_KW,
                "chargers": [{"id": f"CP{i}", "max_power_kw": 22} for i in range(1, 5)],
            }
        ]
    }
)


def ev(i: int) -> EV:
    """An EV arriving now, 60 kWh battery at 20 %, wanting 40 kWh over four hours at up to 22 kW."""
    now = datetime.now(UTC)
    return EV(
        ev_id=f"EV{i}",
        model="test",
        battery_kwh=60,
        max_ac_kw=22,
        arrival_soc_pct=20,
        energy_need_kwh=40,
        arrival_at=now,
        departure_at=now + timedelta(hours=4),
    )
