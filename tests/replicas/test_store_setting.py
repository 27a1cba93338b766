"""--store / JITNET_STORE and --data-dir: which store a server opens."""

from __future__ import annotations

import argparse

import pytest

from jitnet.service.config import Config, ConfigError, add_arguments
from jitnet.service.store import open_store
from jitnet.service.store.file import FileStore
from jitnet.service.store.postgres import PostgresStore


def _config(argv, env=None) -> Config:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return Config.from_namespace(parser.parse_args(argv), env or {})


def test_without_store_the_data_dir_is_the_file_store(tmp_path):
    config = _config(["--data-dir", str(tmp_path)])
    assert config.store is None and config.store_location == str(tmp_path)
    assert isinstance(open_store(config.store_location), FileStore)


def test_store_replaces_the_data_dir_from_a_flag_or_the_environment(tmp_path):
    dsn = "postgresql://u:secret@db.example:5432/models"
    for config in (_config(["--store", dsn, "--data-dir", str(tmp_path)]),
                   _config([], {"JITNET_STORE": dsn, "JITNET_DATA_DIR": str(tmp_path)})):
        assert config.store_location == dsn
        store = open_store(config.store_location, lease_seconds=config.lease_seconds,
                           poll_seconds=config.store_poll_seconds)
        assert isinstance(store, PostgresStore)  # made, not opened: nothing is connected yet
        assert store.location == "postgresql://u@db.example:5432/models"  # no password
        assert (store.lease_seconds, store.poll_seconds) == (10.0, 5.0)
    file_url = _config(["--store", f"file://{tmp_path}/m"]).store_location
    assert open_store(file_url).location == f"{tmp_path}/m"


def test_an_unknown_scheme_is_refused_without_showing_the_rest():
    with pytest.raises(ConfigError, match=r"--store / JITNET_STORE: mysql:// is not a store") \
            as info:
        _config([], {"JITNET_STORE": "mysql://u:secret@host/db"})
    assert "secret" not in str(info.value)
    with pytest.raises(ConfigError, match="--lease-seconds"):
        _config(["--lease-seconds", "0.1"])
