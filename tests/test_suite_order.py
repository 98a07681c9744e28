"""conftest.LONGEST_FIRST names modules that exist (a renamed module would silently drop out)."""

from pathlib import Path

from conftest import LONGEST_FIRST


def test_the_longest_modules_first_exist():
    here = Path(__file__).parent
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    assert [name for name in LONGEST_FIRST if not (here / name).is_file()] == []
