"""Daily sales series for one run date: ``orders_clean`` + ``items`` -> ``sales_series``.

The stage is ``stpipe.stages.series``.

    python -m jobs.series --date 2024-06-29 --set features.series_measure=orders
"""

from __future__ import annotations

from stpipe.cli import main_for
from stpipe.stages import SERIES


def main(argv: list[str] | None = None) -> int:
    return main_for(SERIES, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
