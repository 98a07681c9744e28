from pathlib import Path

import pytest

from stpipe.cli import base_parser, settings_from_args
from stpipe.config import load_settings
from stpipe.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_local_yaml_is_the_embedded_default():
    s = load_settings(ROOT / "conf" / "local.yaml")
    assert s.spark.master == "local[2]"
    assert s.storage.warehouse == "./warehouse"
    assert s.ingest.source == "synthetic"
    assert s.features.windows_days == [7, 30, 90]


def test_cluster_yaml_loads():
    s = load_settings(ROOT / "conf" / "cluster.yaml")
    assert s.spark.master.startswith("spark://")


def test_override_any_key_with_yaml_typed_values():
    args = base_parser("t").parse_args(
        ["--set", "granger.max_lag=3", "--set", "features.windows_days=[1, 2]", "--warehouse", "/w",
         "--date", "2024-02-03"]
    )
    s = settings_from_args(args)
    assert s.granger.max_lag == 3
    assert s.features.windows_days == [1, 2]
    # YAML 1.1 reads 3e-4 (no dot) as a string; a number field takes it as the number
    tuned = settings_from_args(base_parser("t").parse_args(["--set", "model.finetune.learning_rate=3e-4"]))
    assert tuned.model.finetune.learning_rate == 3e-4
    assert s.storage.warehouse == "/w"
    assert str(s.date) == "2024-02-03"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("granger.max_lags=3", "granger.max_lags"),
        ("nosuchsection.x=1", "nosuchsection"),
        ("granger.max_lag=three", "granger.max_lag"),
        ("recommend.fusion_l2=1e-x", "recommend.fusion_l2"),
        ("recommend.allow_repeat=7", "recommend.allow_repeat"),
        ("features.windows_days=[7, x]", "features.windows_days[1]"),
    ],
)
def test_unknown_key_or_wrong_type_names_the_key(override, named):
    args = base_parser("t").parse_args(["--set", override])
    with pytest.raises(ConfigError) as err:
        settings_from_args(args)
    assert named in str(err.value)


def test_bad_date_is_named():
    args = base_parser("t").parse_args(["--date", "2024-13-45"])
    with pytest.raises(ConfigError, match="--date"):
        settings_from_args(args)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings("/nonexistent/conf.yaml")


def test_a_spark_key_with_dots_is_one_key_merged_into_spark_conf():
    args = base_parser("t").parse_args(
        ["--set", "spark.conf.spark.ui.enabled=false", "--set", "storage.keep_days_by_table.run_log=7"]
    )
    s = settings_from_args(args)
    assert s.spark.conf["spark.ui.enabled"] == "false"
    assert s.spark.conf["spark.driver.memory"] == "4g"  # the file's other keys kept
    assert s.storage.keep_days_by_table == {"run_log": 7}
