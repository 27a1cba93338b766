"""The observability settings: off by default, each a flag and a JITNET_* variable."""

from __future__ import annotations

import argparse

import pytest

from jitnet.service.config import Config, ConfigError, add_arguments


def _parse(argv, env=None) -> Config:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return Config.from_namespace(parser.parse_args(argv), env or {})


def test_all_off_by_default():
    config = Config.from_env({})
    assert (config.metrics_port, config.access_log, config.log_format, config.tracing) == (
        None, False, "text", False)


def test_flags_and_variables():
    config = _parse(["--metrics-port", "9095", "--access-log", "--log-format", "JSON",
                     "--tracing", "on"])
    assert (config.metrics_port, config.access_log, config.log_format, config.tracing) == (
        9095, True, "json", True)
    config = Config.from_env({"JITNET_METRICS_PORT": "0", "JITNET_ACCESS_LOG": "true",
                              "JITNET_LOG_FORMAT": "json", "JITNET_TRACING": "1"})
    assert (config.metrics_port, config.access_log, config.log_format, config.tracing) == (
        0, True, "json", True)
    # A flag beats the variable: --access-log off over JITNET_ACCESS_LOG=on.
    assert not _parse(["--access-log", "off"], {"JITNET_ACCESS_LOG": "on"}).access_log


@pytest.mark.parametrize("env, words", [
    ({"JITNET_METRICS_PORT": "70000"}, ["--metrics-port", "65535"]),
    ({"JITNET_METRICS_PORT": "metrics"}, ["JITNET_METRICS_PORT"]),
    ({"JITNET_ACCESS_LOG": "maybe"}, ["JITNET_ACCESS_LOG", "on/off"]),
    ({"JITNET_LOG_FORMAT": "xml"}, ["JITNET_LOG_FORMAT", "--log-format"]),
    ({"JITNET_TRACING": "yes please"}, ["JITNET_TRACING"]),
])
def test_bad_values_name_the_setting(env, words):
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    for word in words:
        assert word in str(info.value)
