"""The site file's per-phase facts: limit_a on the site and its panels, phase_rotation on chargers."""

from __future__ import annotations

import pytest

from pipeline.app.site import parse_config
from pipeline.contracts.errors import ConfigError


def test_limit_a_and_phase_rotation_reach_the_topology_records():
    config = parse_config(
        {
            "sites": [
                {
                    "site_id": "depot-1",
                    "limit_kw": 100,
                    "limit_a": 160,
                    "nodes": [{"node_id": "panel-a", "limit_kw": 60, "limit_a": 100}],
                    "chargers": [
                        {"id": "CP1", "node": "panel-a", "max_power_kw": 22, "phase_rotation": "SRT"},
                        {"id": "CP2", "max_power_kw": 11},
                    ],
                }
            ]
        }
    )
    nodes = {n.node_id: n for n in config.topology()}
    assert nodes["depot-1"].limit_a == 160 and nodes["panel-a"].limit_a == 100
    assert nodes["CP1"].phase_rotation == "SRT"
    assert nodes["CP2"].phase_rotation is None and nodes["CP2"].limit_a is None


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ({"site_id": "s", "limit_kw": 10, "limit_a": 0}, "sites.0.limit_a"),
        (
            {"site_id": "s", "limit_kw": 10, "chargers": [{"id": "C", "max_power_kw": 7, "phase_rotation": "RRS"}]},
            "sites.0.chargers.0.phase_rotation",
        ),
    ],
)
def test_a_bad_limit_a_or_phase_rotation_is_a_one_line_config_error(entry, where):
    with pytest.raises(ConfigError, match=where) as err:
        parse_config({"sites": [entry]}, "site.yaml")
    assert "\n" not in str(err.value)
