"""Settings: defaults, JITNET_* variables, flags, and which wins."""

from __future__ import annotations

import argparse

import pytest

from jitnet.service.config import SETTINGS, Config, ConfigError, Limits, add_arguments


def _parse(argv, env=None) -> Config:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return Config.from_namespace(parser.parse_args(argv), env or {})


def test_defaults():
    config = Config.from_env({})
    assert (config.host, config.port, config.data_dir, config.workers, config.threads,
            config.grace_seconds) == ("0.0.0.0", 50051, "./jitnet-data", 1, 8, 10.0)
    assert config.limits == Limits()
    assert (config.limits.max_parameters, config.limits.max_layer_width, config.limits.max_rows,
            config.limits.max_work, config.limits.max_message_bytes,
            config.limits.max_concurrent_calls) == (2_000_000, 65536, 1_000_000, 1e10,
                                                     64 << 20, 64)
    # A model at the parameter limit must fit a Step reply (weights before and after, 8 bytes each).
    assert 2 * 8 * config.limits.max_parameters < config.limits.max_message_bytes
    assert config.tls_cert is None and config.auth_token is None and not config.tls
    assert config.log_level == "INFO" and config.refresh_seconds > 0


def test_every_setting_has_a_flag_and_a_variable_and_flag_beats_env_beats_default():
    names = {s.field for s in SETTINGS}
    assert names == ({f for f in Config.__dataclass_fields__ if f != "limits"}
                     | set(Limits.__dataclass_fields__))
    env = {"JITNET_PORT": "6000", "JITNET_WORKERS": "3", "JITNET_MAX_ROWS": "500",
           "JITNET_DATA_DIR": "/env", "JITNET_LOG_LEVEL": "debug", "JITNET_MAX_WORK": "1e6"}
    config = _parse(["--port", "7000", "--max-rows", "9"], env)
    assert config.port == 7000 and config.limits.max_rows == 9  # flags win
    assert config.workers == 3 and config.data_dir == "/env"  # then the environment
    assert config.log_level == "DEBUG" and config.limits.max_work == 1e6
    assert config.grace_seconds == 10.0  # then the default


def test_tls_and_token_settings(tmp_path):
    config = _parse(["--tls-cert", "c.pem", "--tls-key", "k.pem"],
                    {"JITNET_AUTH_TOKEN": "t0k"})
    assert config.tls and config.auth_token == "t0k"
    with pytest.raises(ConfigError, match="--tls-key"):
        _parse(["--tls-cert", "c.pem"])
    assert Config.from_env({"JITNET_AUTH_TOKEN": ""}).auth_token is None


@pytest.mark.parametrize("env, words", [
    ({"JITNET_PORT": "http"}, ["JITNET_PORT", "--port"]),
    ({"JITNET_PORT": "70000"}, ["--port", "65535"]),
    ({"JITNET_WORKERS": "0"}, ["--workers", "at least 1"]),
    ({"JITNET_MAX_ROWS": "1.5"}, ["JITNET_MAX_ROWS"]),
    ({"JITNET_LOG_LEVEL": "chatty"}, ["JITNET_LOG_LEVEL"]),
    ({"JITNET_GRACE_SECONDS": "-1"}, ["--grace-seconds"]),
])
def test_bad_values_name_the_setting(env, words):
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    for word in words:
        assert word in str(info.value)


def test_limit_hints_name_value_flag_and_variable():
    assert Limits(max_rows=5).hint("max_rows") == "max_rows = 5 (--max-rows / JITNET_MAX_ROWS)"
    assert "1e+10" in Limits().hint("max_work")


def test_address_brackets_ipv6():
    assert Config(host="::", port=1).address == "[::]:1"
    assert Config(host="127.0.0.1", port=0).address == "127.0.0.1:0"


def test_server_main_reports_bad_settings(capsys):
    from jitnet.service.server.main import main
    assert main(["--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
