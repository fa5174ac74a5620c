"""How the slices in this folder were cut from ev2gym 2.0.0's data (run from the repo root with the
shared data beside it): one real week, 2024-06-03 to 2024-06-09 (Europe/Amsterdam)."""

import csv
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ev2gym")
out = Path(__file__).resolve().parent
first_utc = datetime(2024, 6, 2, 22, tzinfo=timezone.utc)  # 2024-06-03 00:00 CEST
last_utc = first_utc + timedelta(days=7)

with open(src / "Netherlands_day-ahead-2015-2024.csv", newline="") as f, open(
    out / "nl_day_ahead_2024-06-03_week.csv", "w", newline=""
) as g:
    w = csv.writer(g)
    w.writerow(["datetime_utc", "price_eur_per_mwh"])
    for row in csv.DictReader(f):
        stamp = row["Datetime (UTC)"]
        if not stamp:
            continue
        fmt = "%d/%m/%Y %H:%M" if "/" in stamp else "%Y-%m-%d %H:%M:%S"
        t = datetime.strptime(stamp, fmt).replace(tzinfo=timezone.utc)
        if first_utc <= t < last_utc:
            w.writerow([t.strftime("%Y-%m-%dT%H:%M:%SZ"), row["Price (EUR/MWhe)"]])

# residential_loads.csv: one (non-leap) year at 15 min from 1 January; 3 June is day 154.
start_row = (154 - 1) * 96
with open(src / "residential_loads.csv") as f, open(out / "residential_loads_06-03_week.csv", "w") as g:
    rows = f.read().splitlines()[start_row : start_row + 7 * 96]
    g.write("\n".join(rows) + "\n")
