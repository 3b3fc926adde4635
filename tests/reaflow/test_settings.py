import os

import pytest

from reaflow.errors import SettingsError
from reaflow.settings import SOURCE_NAMES, load_settings


def test_defaults_need_no_service(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.lake_root == "var/lake"
    assert settings.spark.master == "local[*]"
    assert settings.mlflow_tracking_uri.startswith("sqlite:///")
    assert settings.airflow_sql_alchemy_conn.startswith("sqlite:///")
    assert settings.feast.online_store == "sqlite"
    assert settings.llm.backend == "local"
    assert settings.source.name == "simulator"


def test_environment_overrides_yaml_overrides_defaults(tmp_path, monkeypatch):
    config = tmp_path / "reaflow.yaml"
    config.write_text("spark:\n  master: spark://10.0.0.1:7077\n  shuffle_partitions: 64\nsimulator:\n  days: 3\n")
    monkeypatch.setenv("REAFLOW_SPARK__SHUFFLE_PARTITIONS", "16")
    settings = load_settings(config, lake_root=str(tmp_path / "lake"))
    assert settings.spark.master == "spark://10.0.0.1:7077"  # from the file
    assert settings.spark.shuffle_partitions == 16  # environment beats the file
    assert settings.simulator.days == 3
    assert settings.simulator.users == 20_000  # untouched default


def test_config_file_from_environment(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("source:\n  name: ml-100k\n")
    monkeypatch.setenv("REAFLOW_CONFIG", str(config))
    assert load_settings().source.name == "ml-100k"


def test_explicit_overrides_merge_with_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("simulator:\n  days: 3\n  users: 500\n")
    settings = load_settings(config, simulator={"users": 900})
    assert (settings.simulator.days, settings.simulator.users) == (3, 900)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"spark": {"master": "mesos://x:5050"}}, "spark.master: unknown Spark master 'mesos://x:5050'"),
        ({"spark": {"driver_memory": "lots"}}, "spark.driver_memory: 'lots' is not a JVM memory size"),
        ({"source": {"name": "netflix-prize"}}, "source.name: unknown dataset 'netflix-prize'; expected one of"),
        ({"lake_root": "ftp://host/lake"}, "lake_root: lake_root 'ftp://host/lake' has an unknown scheme"),
        ({"llm": {"backend": "openai"}}, "needs llm.base_url"),
        ({"training": {"beyond_log": True}, "beyond_log": {"enabled": False}}, "training.beyond_log needs the items"),
        ({"simulator": {"users": 0}}, "simulator.users:"),
        ({"spak": {}}, "spak: unknown setting"),
    ],
)
def test_wrong_values_give_one_line(overrides, expected):
    with pytest.raises(SettingsError) as err:
        load_settings(**overrides)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("invalid settings: ")
    assert expected in message


def test_lake_root_not_writable(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/1/lake"  # not writable even for root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "lake")
    with pytest.raises(SettingsError, match=r"lake_root: lake_root .*/lake is not writable"):
        load_settings(lake_root=target)


def test_lake_root_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SettingsError, match="is not a folder"):
        load_settings(lake_root=str(blocker / "lake"))


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark: [unclosed\n")
    with pytest.raises(SettingsError, match="is not valid YAML"):
        load_settings(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match="must hold a mapping"):
        load_settings(listy)


def test_object_store_lake_root_is_accepted():
    assert load_settings(lake_root="s3://bucket/lake/").lake_root == "s3://bucket/lake"
    assert not load_settings(lake_root="s3://bucket/lake").lake_is_local


def test_every_source_name_is_valid():
    for name in SOURCE_NAMES:
        assert load_settings(source={"name": name}).source.name == name


def test_shipped_infra_settings_are_valid():
    from pathlib import Path

    infra = Path(__file__).resolve().parents[2] / "infra" / "settings"
    cluster = load_settings(infra / "cluster.yaml")
    assert cluster.spark.master == "spark://spark-master:7077" and not cluster.lake_is_local
    assert cluster.mlflow_tracking_uri.startswith("postgresql://")
    local = load_settings(infra / "local-services.yaml")
    assert local.feast.online_store == "redis"


def test_explicit_overrides_merge_with_environment(monkeypatch):
    monkeypatch.setenv("REAFLOW_SIMULATOR__DAYS", "5")
    settings = load_settings(simulator={"users": 900})
    assert (settings.simulator.days, settings.simulator.users) == (5, 900)
