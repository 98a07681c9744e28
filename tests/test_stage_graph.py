"""The stage graph and the table catalogue: declared once, consistent, and the layering holds."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from stpipe import catalogue
from stpipe.stages import NIGHTLY
from stpipe.stages.forget import FORGET

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("stpipe", "udfs", "jobs", "bench", "scripts", "tests")


def _python_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def test_no_library_or_udf_module_imports_jobs():
    offenders = []
    for path in _python_files("stpipe", "udfs"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "jobs"]
    assert offenders == []


def test_no_file_is_too_long_to_read_in_one_sitting():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _python_files(*CODE_DIRS)
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert long == {}


def test_table_names_appear_only_in_the_catalogue():
    """No quoted table name outside stpipe/catalogue.py (code and notebooks)."""
    names = "|".join(sorted(catalogue.BY_NAME, key=len, reverse=True))
    pattern = re.compile(rf"""["']({names})["']""")
    # Olist's and the canonical adapter's input files are called items/reviews too: raw files,
    # not tables; a dict(items=...) keyword is a parameter name.
    allowed = {"stpipe/adapters/olist.py", "stpipe/adapters/canonical.py"}
    found = []
    files = _python_files("stpipe", "udfs", "jobs", "bench", "scripts") + sorted(
        (ROOT / "notebooks").glob("*.ipynb")
    )
    for path in files:
        rel = str(path.relative_to(ROOT))
        if rel == "stpipe/catalogue.py" or rel in allowed:
            continue
        text = path.read_text()
        if path.suffix == ".ipynb":
            text = "\n".join(
                "".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "code"
            )
        found += [f"{rel}: {m.group(0)}" for m in pattern.finditer(text)]
    assert found == []


def test_each_stage_reads_only_tables_written_before_it():
    # or by the erasure job, which runs on request, outside the nightly
    written: set[str] = {t.name for t in FORGET.outputs}
    for stage in NIGHTLY:
        needed = {t.name for t in stage.inputs + stage.optional}
        assert needed <= written, (stage.name, needed - written)
        written |= {t.name for t in stage.outputs}


def test_every_nightly_table_is_read_downstream_or_documented_for_consumers():
    read_later: dict[str, list[str]] = {}
    for stage in NIGHTLY:
        for t in stage.inputs + stage.optional:
            read_later.setdefault(t.name, []).append(stage.name)
    for stage in NIGHTLY:
        for t in stage.outputs:
            readers = t.readers
            assert readers, t.name
            if t.name in read_later:  # the declaration names the stages that read it
                for name in read_later[t.name]:
                    assert name in readers, (t.name, name, readers)
            else:
                assert "consumers" in readers, (t.name, readers)


def test_catalogue_declares_each_table_once_with_its_slice_in_its_schema():
    assert len(catalogue.ALL) == len(catalogue.BY_NAME)
    for t in catalogue.ALL:
        columns = t.columns()
        if columns:
            assert set(t.slice_by) <= set(columns), t.name
            assert set(t.partition_by) <= set(columns), t.name


def test_the_architecture_page_names_every_table_and_stage():
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [t.name for t in catalogue.ALL if f"`{t.name}`" not in text]
    missing += [s.name for s in NIGHTLY if f"| {s.name} |" not in text]
    assert missing == []
