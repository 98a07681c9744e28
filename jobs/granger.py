"""Granger causality between sales series: ``sales_series`` -> ``granger_stats``.

The stage is ``stpipe.stages.granger``.

    python -m jobs.granger --date 2024-06-29 --set granger.max_lag=5
    spark-submit jobs/granger.py --date 2024-06-29
"""

from __future__ import annotations

from stpipe.cli import main_for
from stpipe.stages import GRANGER


def main(argv: list[str] | None = None) -> int:
    return main_for(GRANGER, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
