"""Which S3 credential source both services' settings choose, what each needs, and that no secret
of it reaches a repr or misses the log scrubber. Fetching temporary credentials is tested
against real local servers in tests/integration/test_s3_credentials_chain.py."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from minio.credentials.providers import StaticProvider

from accounts_service import settings as accounts_settings
from credentials.nats_auth import CredentialError
from credentials.s3 import AwsChainProvider, S3Auth, s3_auth_from_env, s3_credentials
from imaging_service import settings as imaging_settings

SETTINGS = [accounts_settings, imaging_settings]
BASE = {"INTERNAL_TOKEN": "t"}
AWS_KEYS = {
    "AWS_ACCESS_KEY_ID": "ASIAENVKEY",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "AWS_SESSION_TOKEN": "aws-session-token-value",
}


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text("jwt")
    return str(path)


def test_explicit_keys_come_first_then_the_aws_environment() -> None:
    explicit = s3_auth_from_env(AWS_KEYS | {"S3_ACCESS_KEY": "s3key", "S3_SECRET_KEY": "s3sec"})
    assert (explicit.source, explicit.access_key, explicit.session_token) == (
        "S3_ACCESS_KEY",
        "s3key",
        "",
    )
    aws = s3_auth_from_env(AWS_KEYS)
    assert (aws.source, aws.access_key, aws.secret_key, aws.session_token) == (
        "AWS_ACCESS_KEY_ID",
        "ASIAENVKEY",
        "aws-secret-value",
        "aws-session-token-value",
    )
    creds = s3_credentials(aws).retrieve()
    assert isinstance(s3_credentials(aws), StaticProvider)
    assert (creds.access_key, creds.session_token) == ("ASIAENVKEY", "aws-session-token-value")


def test_then_web_identity_then_container_then_instance_metadata(token_file: str) -> None:
    irsa = {"AWS_WEB_IDENTITY_TOKEN_FILE": token_file, "AWS_ROLE_ARN": "arn:aws:iam::1:role/r"}
    relative = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "v2/credentials/abc"}
    full = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": token_file,
    }
    assert s3_auth_from_env(irsa | relative | full).source == "AWS_WEB_IDENTITY_TOKEN_FILE"
    chosen = s3_auth_from_env(relative | full)
    assert chosen.source == "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
    assert chosen.container_relative_uri == "/v2/credentials/abc"
    pod_identity = s3_auth_from_env(full)
    assert pod_identity.source == "AWS_CONTAINER_CREDENTIALS_FULL_URI"
    assert pod_identity.container_token_file == token_file
    nothing = s3_auth_from_env({"AWS_REGION": "eu-west-1"})
    assert (nothing.source, nothing.region, nothing.static) == (
        "instance metadata",
        "eu-west-1",
        False,
    )
    assert isinstance(s3_credentials(nothing), AwsChainProvider)


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"S3_ACCESS_KEY": "k"}, "S3_ACCESS_KEY and S3_SECRET_KEY must be set together"),
        ({"S3_SECRET_KEY": "s"}, "S3_ACCESS_KEY and S3_SECRET_KEY must be set together"),
        ({"AWS_SECRET_ACCESS_KEY": "s"}, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must"),
        ({"AWS_WEB_IDENTITY_TOKEN_FILE": "/nonexistent"}, "needs AWS_ROLE_ARN"),
        (
            {"AWS_WEB_IDENTITY_TOKEN_FILE": "/nonexistent", "AWS_ROLE_ARN": "arn"},
            "AWS_WEB_IDENTITY_TOKEN_FILE names no readable file",
        ),
        (
            {
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1/c",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/nonexistent",
            },
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE names no readable file",
        ),
        (
            {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://credentials.example/c"},
            "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https://",
        ),
        ({"AWS_ENDPOINT_URL_STS": "sts.example"}, "AWS_ENDPOINT_URL_STS must start with"),
    ],
)
def test_a_half_or_bad_source_is_an_error_naming_the_setting(
    env: dict[str, str], error: str
) -> None:
    with pytest.raises(CredentialError, match=error):
        s3_auth_from_env(env)
    for module in SETTINGS:
        with pytest.raises(module.SettingsError, match=error):
            module.from_env(BASE | env)


def test_container_uris_the_aws_sdks_accept() -> None:
    for uri in (
        "https://credentials.example/c",
        "http://127.0.0.1:8080/c",
        "http://[::1]/c",
        "http://localhost/c",
        "http://169.254.170.2/v2/credentials",
        "http://[fd00:ec2::23]/v1/credentials",
    ):
        assert (
            s3_auth_from_env({"AWS_CONTAINER_CREDENTIALS_FULL_URI": uri}).container_full_uri == uri
        )


@pytest.mark.parametrize("module", SETTINGS)
def test_aws_secrets_are_kept_out_of_the_repr_and_given_to_the_scrubber(
    module: ModuleType,
) -> None:
    env = BASE | AWS_KEYS | {"DATABASE_URL": "postgresql://db/a"}
    settings = module.from_env(env)
    shown = repr(settings)
    assert "ASIAENVKEY" in shown and "AWS_ACCESS_KEY_ID" in shown
    for secret in ("aws-secret-value", "aws-session-token-value"):
        assert secret not in shown
        assert secret in settings.secrets()
    token = module.from_env(
        BASE
        | {
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/c",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": "container-token-value",
        }
    )
    assert "container-token-value" not in repr(token)
    assert "container-token-value" in token.secrets()


def test_without_any_setting_the_chain_ends_at_instance_metadata() -> None:
    """The old default, minioadmin, is gone: unset keys mean AWS' chain."""
    for module in SETTINGS:
        settings = module.from_env(BASE)
        assert settings.s3_auth == S3Auth()
        assert settings.s3_access_key == ""
