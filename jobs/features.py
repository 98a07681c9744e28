"""Temporal and spatial features for one run date, from ``orders_clean`` and ``items``.

Writes ``user_time_features``, ``item_time_features``, ``region_item_features`` and
``user_space_features``, each replaced by ``run_date`` (the stage: ``stpipe.stages.features``).

    python -m jobs.features --date 2024-06-29
    spark-submit jobs/features.py --date 2024-06-29 --set features.timezone=Europe/London
"""

from __future__ import annotations

from stpipe.cli import main_for
from stpipe.stages import FEATURES


def main(argv: list[str] | None = None) -> int:
    return main_for(FEATURES, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
