"""Every notebook runs top to bottom on small generated data (marker: notebooks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import NIGHTLY_DATE

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RUN_DATE = NIGHTLY_DATE  # the session's shared nightly (conftest: completed_nightly)


def test_there_are_at_least_three_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code)
    text = "".join("".join(c["source"]) for c in code)
    assert "from stpipe" in text  # package code, not copied logic


@pytest.fixture(scope="module")
def pipeline_warehouse(completed_nightly, tmp_path_factory) -> str:
    """A copy of the session's shared nightly (2,000 rows, 40 days; its Granger run finds
    significant relations, so 02_granger draws them): the notebooks only read it."""
    return completed_nightly.copy_to(tmp_path_factory.mktemp("nb") / "warehouse")


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, pipeline_warehouse, tmp_path):
    from stpipe.notebooks import execute

    nb, pngs = execute(path, {"CONFIG": None, "WAREHOUSE": pipeline_warehouse, "RUN_DATE": RUN_DATE},
                       cwd=ROOT / "notebooks")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert pngs, "every notebook draws at least one picture"
