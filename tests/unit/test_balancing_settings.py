"""The settings that spread load over replicas: the consumer's MAX_ACK_PENDING (shared by every
imaging replica) and the connection age that makes clients resolve the servers' name again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from accounts_service.settings import from_env as accounts_from_env
from grpc_guard.options import server_options
from imaging_service.main import queue_config
from imaging_service.settings import SettingsError
from imaging_service.settings import from_env as imaging_from_env

IMAGING = {"INTERNAL_TOKEN": "t", "RENDER_PROCESSES": "3"}


def test_max_ack_pending_defaults_to_four_per_render_process() -> None:
    settings = imaging_from_env(IMAGING)
    assert settings.max_ack_pending == 12
    assert queue_config(settings).max_ack_pending == 12


def test_max_ack_pending_is_read_and_reaches_the_consumer_config() -> None:
    settings = imaging_from_env(IMAGING | {"MAX_ACK_PENDING": "64"})
    assert queue_config(settings).max_ack_pending == 64


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5"])
def test_a_bad_max_ack_pending_is_refused_by_name(value: str) -> None:
    with pytest.raises(SettingsError, match="MAX_ACK_PENDING"):
        imaging_from_env(IMAGING | {"MAX_ACK_PENDING": value})


def test_server_options_close_connections_after_their_age_and_grace() -> None:
    options = dict(
        server_options(
            max_message_bytes=1024,
            max_streams_per_connection=10,
            keepalive_seconds=30,
            keepalive_timeout_seconds=10,
            max_connection_age_seconds=120,
            max_connection_age_grace_seconds=15.5,
        )
    )
    assert options["grpc.max_connection_age_ms"] == 120_000
    assert options["grpc.max_connection_age_grace_ms"] == 15_500


@pytest.mark.parametrize("from_env", [accounts_from_env, imaging_from_env])
def test_both_services_read_the_connection_age(
    from_env: Callable[[Mapping[str, str]], Any],
) -> None:
    default = from_env(IMAGING)
    assert (default.max_connection_age_seconds, default.max_connection_age_grace_seconds) == (
        300.0,
        30.0,
    )
    chosen = from_env(
        IMAGING | {"MAX_CONNECTION_AGE_SECONDS": "60", "MAX_CONNECTION_AGE_GRACE_SECONDS": "5"}
    )
    assert (chosen.max_connection_age_seconds, chosen.max_connection_age_grace_seconds) == (
        60.0,
        5.0,
    )
    with pytest.raises(SettingsError, match="MAX_CONNECTION_AGE_SECONDS"):
        from_env(IMAGING | {"MAX_CONNECTION_AGE_SECONDS": "0"})


def test_stream_replicas_default_to_one_and_reach_the_queue_config() -> None:
    assert queue_config(imaging_from_env(IMAGING)).replicas == 1
    assert queue_config(imaging_from_env(IMAGING | {"STREAM_REPLICAS": "3"})).replicas == 3


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_stream_replicas_outside_what_jetstream_allows_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="STREAM_REPLICAS"):
        imaging_from_env(IMAGING | {"STREAM_REPLICAS": value})


@pytest.mark.parametrize(
    "target",
    [
        "accounts:50051",
        "dns:///accounts-headless.avatars.svc.cluster.local:50051",
        "dns://10.0.0.10:53/accounts.test:50051",
        "ipv4:127.0.0.1:50051,127.0.0.2:50051",
    ],
)
def test_accounts_addr_takes_a_name_or_a_target_of_several_replicas(target: str) -> None:
    assert imaging_from_env(IMAGING | {"ACCOUNTS_ADDR": target}).accounts_addr == target


@pytest.mark.parametrize(
    "target", ["http://accounts:50051", "dns:///accounts", "ipv4:127.0.0.1:1,127.0.0.2", "x"]
)
def test_an_accounts_addr_without_a_port_or_with_a_url_scheme_is_refused(target: str) -> None:
    with pytest.raises(SettingsError, match="ACCOUNTS_ADDR"):
        imaging_from_env(IMAGING | {"ACCOUNTS_ADDR": target})


def test_accounts_listens_everywhere_unless_given_one_address() -> None:
    assert accounts_from_env(IMAGING).host == "::"
    assert accounts_from_env(IMAGING | {"ACCOUNTS_HOST": "127.0.0.2"}).host == "127.0.0.2"
    assert accounts_from_env(IMAGING | {"ACCOUNTS_HOST": "[::1]"}).host == "::1"
    with pytest.raises(SettingsError, match="ACCOUNTS_HOST"):
        accounts_from_env(IMAGING | {"ACCOUNTS_HOST": "accounts.local"})
