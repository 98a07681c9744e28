"""The test suite's own scheduling: the modules conftest starts first exist (a renamed one would
silently fall back to the end and leave a worker finishing it alone)."""

from conftest import LONGEST_FIRST, ROOT


def test_every_module_started_first_exists_once():
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    missing = [name for name in LONGEST_FIRST if not (ROOT / "tests" / name).is_file()]
    assert not missing, f"conftest.LONGEST_FIRST names no such test module: {missing}"
