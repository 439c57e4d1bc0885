"""Write the probe tables shipped in data/probes (what the configs' ``geography.tables`` name).

- ``land-ocean.csv``: 2,000 points of a Fibonacci lattice (nearly even on the sphere) with ``land``
  1 / 0 from the 1 km ``global-land-mask`` (offline; the land-ocean task of ``satclip locbench``);
- ``air-temperature.csv``: the 3,076 stations of Hooker et al. (2018) with ``meanT`` (annual mean
  air temperature, degrees C) and ``meanP`` (precipitation), from ``../shared/data/air-temperature``.

    python scripts/make_probe_tables.py [--shared ../shared] [--out data/probes]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from satclip.eval import points as sphere

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "probes")
    parser.add_argument("--points", type=int, default=2000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    points = sphere.fibonacci_lattice(args.points)
    land = sphere.is_land(points)
    with (args.out / "land-ocean.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lon", "lat", "land"])
        writer.writerows([f"{lon:.5f}", f"{lat:.5f}", int(is_land)] for (lon, lat), is_land in zip(points, land))
    with (args.shared / "data" / "air-temperature" / "stationDataAll.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (args.out / "air-temperature.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lon", "lat", "meanT", "meanP"])
        writer.writerows([r["Lon"], r["Lat"], f"{float(r['meanT']):.4f}", r["meanP"]] for r in rows)
    print(f"wrote {args.out}/land-ocean.csv ({len(points)} rows, {int(land.sum())} on land) and air-temperature.csv ({len(rows)} rows)")


if __name__ == "__main__":
    main()
