"""How the slices in this folder were cut from ev2gym 2.0.0's data (run from the repo root with the
shared data beside it, or give its folder as the first argument): one real week per season of 2024,
each Monday to Sunday in Europe/Amsterdam, none across a daylight-saving change.

Prices are cut by their UTC stamps over the local week. The household loads are one non-leap year at
15 min from 1 January, so a week's rows are those of its calendar dates in such a year (2023).
"""

import csv
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

WEEKS = (date(2024, 1, 15), date(2024, 4, 15), date(2024, 6, 3), date(2024, 10, 14))
TZ = ZoneInfo("Europe/Amsterdam")

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ev2gym")
out = Path(__file__).resolve().parent

prices = []
with open(src / "Netherlands_day-ahead-2015-2024.csv", newline="") as f:
    for row in csv.DictReader(f):
        stamp = row["Datetime (UTC)"]
        if stamp:
            fmt = "%d/%m/%Y %H:%M" if "/" in stamp else "%Y-%m-%d %H:%M:%S"
            prices.append((datetime.strptime(stamp, fmt).replace(tzinfo=ZoneInfo("UTC")), row["Price (EUR/MWhe)"]))
with open(src / "residential_loads.csv") as f:
    loads = f.read().splitlines()

for first in WEEKS:
    start = datetime(first.year, first.month, first.day, tzinfo=TZ)
    end = start + timedelta(days=7)
    with open(out / f"nl_day_ahead_{first.isoformat()}_week.csv", "w", newline="") as g:
        w = csv.writer(g)
        w.writerow(["datetime_utc", "price_eur_per_mwh"])
        for t, price in prices:
            if start <= t < end:
                w.writerow([t.strftime("%Y-%m-%dT%H:%M:%SZ"), price])
    start_row = (date(2023, first.month, first.day).timetuple().tm_yday - 1) * 96
    with open(out / f"residential_loads_{first:%m-%d}_week.csv", "w") as g:
        g.write("\n".join(loads[start_row : start_row + 7 * 96]) + "\n")
