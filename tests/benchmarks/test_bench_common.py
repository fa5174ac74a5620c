"""The benchmark helpers: nearest-rank percentiles and ratios, and the runner on the engine at a small size."""

from __future__ import annotations

import json

from benchmarks.__main__ import main
from benchmarks.common import percentiles, ratio


def test_percentiles_are_nearest_rank():
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p["n"], p["p50"], p["p95"], p["p99"], p["max"]) == (100, 50.0, 95.0, 99.0, 100.0)
    assert percentiles([7.0])["p99"] == 7.0
    assert percentiles([]) == {"n": 0}


def test_ratio_needs_a_floor():
    assert ratio(30.0, 10.0) == 3.0
    assert ratio(30.0, 0.0) is None and ratio(None, 1.0) is None


def test_runner_writes_results_and_refuses_unknown_names(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["engine", "--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"]["engine"]
    row = result["rows"][0]
    assert row["sessions"] == 1000 and row["emitted"] == 1000
    assert row["one_site_change_ms"] > 0 and row["site_floor_ms"] > 0
    for target in result["targets"]:  # one per backend, each figure beside whether it meets its target
        mine = next(r for r in result["rows"] if r["backend"] == target["backend"])
        assert target["change_met"] == (mine["change_p99_ms"] <= 10.0)
        assert target["site20_met"] == (target["site20_p99_ms"] <= 10.0)
    assert {t["backend"] for t in result["targets"]} == {r["backend"] for r in result["rows"]}
    try:
        main(["nope"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "unknown benchmark nope" in capsys.readouterr().err
