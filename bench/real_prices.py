"""Real prices: the monthly closes of five stocks (2000-2010) that vega-datasets ships as
`stocks.csv`, replayed through `tickstream replay` with default settings.

The package's CSV (symbol, date, price) is rewritten as a tick CSV (ticker, ts, price); the
file is read straight from the installed package, without importing it (that would import
pandas).

    python -m bench.real_prices [--out DIR]   (then: tickstream replay --csv DIR/stocks.csv ...)
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

TICKSTREAM = str(Path(sys.executable).with_name("tickstream"))


def vega_stocks(out: Path) -> Path:
    """Write vega-datasets' stocks.csv as ticker,ts,price to `out`; returns `out`."""
    spec = importlib.util.find_spec("vega_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("vega-datasets is not installed: pip install 'tickstream[test]'")
    source = Path(spec.submodule_search_locations[0]) / "_data" / "stocks.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(source, newline="") as f, open(out, "w", newline="") as g:
        writer = csv.writer(g)
        writer.writerow(["ticker", "ts", "price"])
        for row in csv.DictReader(f):
            day = datetime.strptime(row["date"], "%b %d %Y").replace(tzinfo=UTC)
            writer.writerow([row["symbol"], int(day.timestamp() * 1000), row["price"]])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/real"))
    args = p.parse_args()
    ticks = vega_stocks(args.out / "stocks.csv")
    for learn in ("--learn", "--no-learn"):
        print(f"$ tickstream replay --csv {ticks} {learn} --out {args.out}/predictions.csv")
        subprocess.run([TICKSTREAM, "replay", "--csv", str(ticks), learn, "--out",
                        str(args.out / f"predictions{learn.replace('--', '-')}.csv")],
                       check=True)


if __name__ == "__main__":
    main()
