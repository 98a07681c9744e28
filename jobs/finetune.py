"""Finetune: purchase pairs as of the run date -> a tuned encoder registered in MLflow.

The stage is ``stpipe.stages.finetune``; it trains only when ``model.finetune.enabled`` and its
cadence says so (README: Fine-tuning).

    python -m jobs.finetune --date 2024-06-29 --set model.finetune.enabled=true
    MLFLOW_TRACKING_URI=http://mlflow:5000 spark-submit jobs/finetune.py --date 2024-06-29
"""

from __future__ import annotations

from stpipe.cli import main_for
from stpipe.stages import FINETUNE


def main(argv: list[str] | None = None) -> int:
    return main_for(FINETUNE, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
