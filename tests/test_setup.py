"""Setup behind a firewall: a clear message naming the jars and the config key."""

from pathlib import Path

import pytest

from stpipe import jars
from stpipe.errors import SetupError


def test_missing_jars_are_named_with_the_way_out(tmp_path):
    with pytest.raises(SetupError) as err:
        jars.jar_paths(str(tmp_path))
    message = str(err.value)
    for _, artifact, version in jars.required_jars():
        assert f"{artifact}-{version}.jar" in message
    assert "spark.jars_dir" in message and "make setup" in message


def test_unreachable_maven_stops_with_a_message(tmp_path):
    with pytest.raises(SetupError) as err:
        jars.fetch_jars(str(tmp_path / "jars"), "http://127.0.0.1:9/maven2")
    assert "cannot download" in str(err.value)
    assert "spark.jars_dir" in str(err.value)
    assert not list((tmp_path / "jars").glob("*.jar"))  # no half-written jar left behind


def test_jars_already_present_need_no_network(tmp_path):
    for _, artifact, version in jars.required_jars():
        (tmp_path / f"{artifact}-{version}.jar").write_bytes(b"PK")
    paths = jars.fetch_jars(str(tmp_path), "http://127.0.0.1:9/unreachable")
    assert [p.name for p in paths] == [f"{a}-{v}.jar" for _, a, v in jars.required_jars()]


def test_delta_version_matches_the_pinned_python_package():
    from importlib.metadata import version

    assert version("delta-spark") == jars.DELTA_VERSION
    import pyspark

    assert pyspark.__version__.startswith(jars.SPARK_BINARY + ".")


def test_project_jars_folder_is_ignored_by_git():
    ignore = (Path(__file__).resolve().parent.parent / ".gitignore").read_text()
    assert ".jars/" in ignore.split()
