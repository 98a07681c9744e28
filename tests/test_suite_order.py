"""conftest.LONGEST_FIRST names modules that exist (a renamed module would silently drop out)."""

from conftest import LONGEST_FIRST, ROOT


def test_the_longest_modules_first_exist():
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    missing = [name for name in LONGEST_FIRST if not (ROOT / "tests" / name).is_file()]
    assert missing == [], f"conftest.LONGEST_FIRST names no such test module: {missing}"
