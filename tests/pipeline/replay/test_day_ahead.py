"""The replay publishes the day-ahead curve as a market does: each day's hours the day before, at 13:00."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from pipeline.replay.data import day_ahead_releases, day_start_utc, price_signals


def test_each_day_is_released_at_13_local_the_day_before_and_the_first_at_the_start():
    releases = day_ahead_releases("s", date(2024, 6, 3), 3)
    assert [at for at, _ in releases] == [
        day_start_utc(date(2024, 6, 3)),  # published on 2 June, before the replay starts
        datetime(2024, 6, 3, 11, tzinfo=UTC),  # 13:00 CEST
        datetime(2024, 6, 4, 11, tzinfo=UTC),
    ]
    for d, (at, prices) in enumerate(releases):
        day = day_start_utc(date(2024, 6, 3) + timedelta(days=d))
        assert len(prices) == 24 and prices[0].valid_from == day and prices[-1].valid_to == day + timedelta(days=1)
        assert all(p.valid_from >= at for p in prices)  # ahead of every hour it prices
    assert [p for _, prices in releases for p in prices] == price_signals("s", date(2024, 6, 3), 3)
