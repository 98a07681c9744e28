"""Recommend: fusion weights (``fusion_weights``) and top-K lists (``recommendations``).

The stage is ``stpipe.stages.recommend``; for ablations and offline evaluation call
:func:`stpipe.recommend.recommend` directly.

    python -m jobs.recommend --date 2024-06-29 --set recommend.allow_repeat=false
"""

from __future__ import annotations

from stpipe.cli import main_for
from stpipe.stages import RECOMMEND


def main(argv: list[str] | None = None) -> int:
    return main_for(RECOMMEND, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
