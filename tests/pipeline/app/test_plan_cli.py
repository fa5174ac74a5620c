"""``pipeline plan set|clear`` through a running loop's gateway: a plan reaches the views and the charger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.cli.plan import Departure
from tests.kits.loop import ev
from tests.test_end_to_end import chargers, service, wait_for  # noqa: F401 (fixtures)


def test_a_departure_is_the_next_such_time_of_day_in_utc_or_an_iso_time():
    now = datetime(2024, 6, 3, 18, 0, tzinfo=UTC)
    depart = Departure(now=lambda: now)
    assert depart.convert("07:30", None, None) == datetime(2024, 6, 4, 7, 30, tzinfo=UTC)
    assert depart.convert("19:05", None, None) == datetime(2024, 6, 3, 19, 5, tzinfo=UTC)
    assert depart.convert("2024-06-05T06:00:00", None, None) == datetime(2024, 6, 5, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--depart", "07:30", "--energy-kwh", "30"], "exactly one of --charger and --session"),
        (["--charger", "CP1", "--session", "s", "--depart", "07:30", "--energy-kwh", "30"], "exactly one of"),
        (["--charger", "CP1", "--depart", "07:30"], "exactly one of --energy-kwh and --target-soc"),
        (["--charger", "CP1", "--depart", "07:30", "--target-soc", "80"], "--target-soc needs --battery-kwh"),
        (["--charger", "CP1", "--depart", "7h30", "--energy-kwh", "30"], "neither HH:MM nor an ISO-8601 time"),
    ],
)
def test_a_plan_set_mistake_is_refused_before_anything_is_sent(args, message):
    result = CliRunner().invoke(main, ["plan", "set", *args, "--gateway", "ws://127.0.0.1:9"])
    assert result.exit_code == 2 and message in result.output


def test_a_plan_out_of_its_bounds_is_one_line_and_exit_1():
    later = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    result = CliRunner().invoke(
        main, ["plan", "set", "--charger", "CP1", "--depart", later, "--energy-kwh", "30", "--dry-run"]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "longer than 31 days" in result.output


async def test_a_plan_set_by_the_cli_reaches_the_charger_and_clearing_it_restores_the_setpoint(service, chargers):  # noqa: F811
    cp = chargers[0]
    await cp.plug_in(ev(0))
    await wait_for(lambda: cp.held_limit(1) == pytest.approx(31.8))
    gateway = f"ws://127.0.0.1:{service.gateway_port}"

    def cli(*args: str):
        return CliRunner().invoke(main, ["plan", *args, "--gateway", gateway])

    depart = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    # A need already met: the plan holds the session at 0 until it leaves.
    result = await asyncio.to_thread(
        cli, "set", "--charger", "CP1", "--depart", depart.isoformat(), "--energy-kwh", "0"
    )
    assert result.exit_code == 0
    assert result.output == f"set plan charger:CP1: leaves {depart.isoformat()} needing 0 kWh\n"
    await wait_for(lambda: cp.held_limit(1) == pytest.approx(0.0))
    refused = await asyncio.to_thread(cli, "set", "--charger", "CP99", "--depart", "07:30", "--energy-kwh", "5")
    assert refused.exit_code == 1 and "unknown charger 'CP99' (known: " in refused.output
    result = await asyncio.to_thread(cli, "clear", "--charger", "CP1")
    assert result.exit_code == 0 and result.output == "cleared plan charger:CP1\n"
    await wait_for(lambda: cp.held_limit(1) == pytest.approx(31.8))


def test_the_site_file_plan_defaults_travel_on_site_topology():
    from pipeline.app.site import parse_config
    from pipeline.contracts.errors import ConfigError

    config = parse_config(
        {
            "sites": [
                {
                    "site_id": "d",
                    "limit_kw": 100,
                    "plan": {"departure": "17:00", "energy_kwh": 20},
                    "chargers": [
                        {"id": "C1", "max_power_kw": 22, "plan": {"departure": "06:30"}},
                        {"id": "C2", "max_power_kw": 11},
                    ],
                }
            ]
        }
    )
    nodes = {n.node_id: (n.default_departure_min, n.default_energy_kwh) for n in config.topology()}
    assert nodes == {"d": (17 * 60, 20.0), "C1": (6 * 60 + 30, None), "C2": (None, None)}
    with pytest.raises(ConfigError, match="sites.0.plan.departure"):
        parse_config({"sites": [{"site_id": "d", "limit_kw": 100, "plan": {"departure": "7:30"}}]})
