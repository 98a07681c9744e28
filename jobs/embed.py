"""Embed: ``items`` -> ``item_embeddings``; purchase histories -> ``user_embeddings``.

The stage is ``stpipe.stages.embed``.

    python -m jobs.embed --date 2024-06-29
    spark-submit jobs/embed.py --date 2024-06-29 --set model.device=cuda
"""

from __future__ import annotations

from stpipe.cli import main_for
from stpipe.stages import EMBED


def main(argv: list[str] | None = None) -> int:
    return main_for(EMBED, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
