"""Client settings: every mistake raises ConfigurationError when the config is built."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import attrs
import pytest

from icr_async import DEFAULT_API_VERSION, PRODUCTION_URL, SANDBOX_URL, RetryPolicy, Timeouts
from icr_async._config import USER_AGENT, ClientConfig, normalize_base_url
from icr_async._version import __version__
from icr_async.errors import ConfigurationError


def test_defaults() -> None:
    config = ClientConfig()
    assert config.base_url == PRODUCTION_URL == "https://api.carbonregistry.com"
    assert SANDBOX_URL == "https://sandbox-api.carbonregistry.com"
    assert config.api_version == DEFAULT_API_VERSION == "2023-06-16"
    assert config.timeouts == Timeouts(connect=10.0, read=30.0, total=120.0)
    assert config.retry == RetryPolicy()
    assert config.pool_size == 100
    assert config.in_flight_limit == 100
    assert config.user_agent == USER_AGENT == f"icr-async/{__version__}"
    assert config.allow_insecure_http is False


def test_frozen() -> None:
    config = ClientConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.base_url = "https://evil.example"  # type: ignore[misc]


# --- base URL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.carbonregistry.com", "https://api.carbonregistry.com"),
        ("https://api.carbonregistry.com/", "https://api.carbonregistry.com"),
        ("https://api.carbonregistry.com///", "https://api.carbonregistry.com"),
        ("  https://sandbox-api.carbonregistry.com/  ", "https://sandbox-api.carbonregistry.com"),
        ("https://gateway.example/icr/", "https://gateway.example/icr"),
        ("https://api.example:8443", "https://api.example:8443"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.0.0.2:1", "http://127.0.0.2:1"),
        ("http://localhost:9000", "http://localhost:9000"),
        ("http://LOCALHOST", "http://LOCALHOST"),
        ("http://emulator.localhost", "http://emulator.localhost"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_base_url_accepted(url: str, expected: str) -> None:
    assert normalize_base_url(url) == expected
    assert ClientConfig(base_url=url).base_url == expected


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("api.carbonregistry.com", "scheme"),
        ("//api.carbonregistry.com", "scheme"),
        ("ftp://api.carbonregistry.com", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("https://", "no host"),
        ("https:///path", "no host"),
        ("https://api.carbonregistry.com/?x=1", "query"),
        ("https://api.carbonregistry.com#frag", "fragment"),
        ("https://user:pw@api.carbonregistry.com", "credentials"),
        ("https://user@api.carbonregistry.com", "credentials"),
        ("http://api.carbonregistry.com", "plain http"),
        ("http://10.0.0.5:8080", "plain http"),
        ("http://localhost.evil.com", "plain http"),
        ("http://127.0.0.1.nip.io", "plain http"),
        ("http://[::2]", "plain http"),
        ("https://api.carbonregistry.com/../x", "'..' path segments"),
        ("https://api.carbonregistry.com/%2e%2e/x", "'..' path segments"),
        ("https://api.carbonregistry.com/a/./b", "'..' path segments"),
        ("https://api.carbonregistry.com:99999", "invalid port"),
        ("https://api.carbonregistry.com:http", "invalid port"),
        ("https://api.carbonregistry.com:", "invalid port"),
        ("https://api.carbonregistry.com:0", "invalid port"),
        ("https://api carbonregistry.com", "spaces"),
        ("https://api.carbon\tregistry.com", "spaces"),
        ("https://api.carbon!registry.com", "invalid host"),
        ("https://api..carbonregistry.com", "invalid host"),
    ],
)
def test_base_url_refused(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        normalize_base_url(url)
    with pytest.raises(ConfigurationError, match=match):
        ClientConfig(base_url=url)


def test_credentials_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        normalize_base_url("https://me:s3cret@api.carbonregistry.com")
    assert "s3cret" not in str(info.value)


def test_insecure_http_opt_in() -> None:
    url = "http://api.internal.example:8080/"
    assert normalize_base_url(url, allow_insecure_http=True) == "http://api.internal.example:8080"
    config = ClientConfig(base_url=url, allow_insecure_http=True)
    assert config.base_url == "http://api.internal.example:8080"


@pytest.mark.parametrize("url", [None, 42, b"https://api.carbonregistry.com"])
def test_base_url_not_a_string(url: Any) -> None:
    with pytest.raises(ConfigurationError):
        normalize_base_url(url)


# --- API version -----------------------------------------------------------------------------


def test_api_version_accepted() -> None:
    assert ClientConfig(api_version="2024-01-31").api_version == "2024-01-31"


@pytest.mark.parametrize(
    "version",
    [
        "",
        "2023-6-16",
        "v1",
        "20230616",
        "2023-06-16\n",
        "2023-06-16\r\nX-Evil: 1",
        " 2023-06-16",
        20230616,
    ],
)
def test_api_version_refused(version: Any) -> None:
    with pytest.raises(ConfigurationError, match="api_version"):
        ClientConfig(api_version=version)


# --- timeouts --------------------------------------------------------------------------------


def test_timeouts_accept_numbers_and_none() -> None:
    t = Timeouts(connect=1, read=0.5, total=None)
    assert (t.connect, t.read, t.total) == (1, 0.5, None)
    assert Timeouts(connect=None, read=None, total=None).total is None


@pytest.mark.parametrize("field", ["connect", "read", "total"])
@pytest.mark.parametrize("value", [0, -1, -0.1, float("nan"), float("inf"), True, "10", [1]])
def test_bad_timeouts(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=field):
        Timeouts(**{field: value})


# --- pools and margins -----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["pool_size", "token_cache_size", "max_in_flight"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_bad_positive_ints(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=field):
        ClientConfig(**{field: value})


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_bad_pool_size_per_host(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="pool_size_per_host"):
        ClientConfig(pool_size_per_host=value)


def test_pool_sizes_and_in_flight_limit() -> None:
    config = ClientConfig(pool_size=7, pool_size_per_host=0)
    assert config.in_flight_limit == 7
    config = ClientConfig(pool_size=7, pool_size_per_host=3, max_in_flight=500)
    assert config.pool_size_per_host == 3
    assert config.in_flight_limit == 500


@pytest.mark.parametrize("value", [-1, float("nan"), True, "300"])
def test_bad_refresh_margin(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="refresh_margin"):
        ClientConfig(refresh_margin=value)


def test_refresh_margin_zero_allowed() -> None:
    assert ClientConfig(refresh_margin=0).refresh_margin == 0


@pytest.mark.parametrize("value", [7200, 7200.0, 10_000])
def test_refresh_margin_at_or_above_the_token_life_is_refused(value: float) -> None:
    with pytest.raises(ConfigurationError, match="2-hour life"):
        ClientConfig(refresh_margin=value)


def test_a_number_of_seconds_sets_every_timeout() -> None:
    assert ClientConfig(timeouts=30).timeouts == Timeouts(connect=30, read=30, total=30)
    assert ClientConfig(timeouts=None).timeouts == Timeouts()


@pytest.mark.parametrize("value", ["30", True, [30], {"total": 30}])
def test_timeouts_of_another_type_are_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeouts must be"):
        ClientConfig(timeouts=value)
    with pytest.raises(ConfigurationError, match="timeouts must be"):
        _client(timeouts=value)


@pytest.mark.parametrize("value", [3, True, "3", 0.5, {"attempts": 3}])
def test_retry_must_be_a_policy(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
        ClientConfig(retry=value)
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
        _client(retry=value)


def test_an_integer_retry_gets_a_hint() -> None:
    with pytest.raises(ConfigurationError, match=r"RetryPolicy\(attempts=3\)"):
        ClientConfig(retry=3)


def test_an_empty_base_url_is_not_production(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="non-empty"):
        _client(base_url="")
    # An empty environment variable is "unset", as shells mean it.
    monkeypatch.setenv("ICR_BASE_URL", "")
    from icr_async import AsyncICRClient

    client = AsyncICRClient("app", _key())
    assert client.base_url == PRODUCTION_URL


def _client(**kwargs: Any) -> Any:
    from icr_async import AsyncICRClient

    return AsyncICRClient("app", _key(), env=False, **kwargs)


@functools.cache
def _key() -> str:
    """One generated key for these tests (generating costs ~100 ms)."""
    from icr_async.testing import generate_private_key_pem

    return generate_private_key_pem()


def test_ssl_context_not_in_repr() -> None:
    ctx = ssl.create_default_context()
    config = ClientConfig(ssl=ctx)
    assert config.ssl is ctx
    assert "SSLContext" not in repr(config)
    assert "ssl=" not in repr(config)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="scheme"):
        ClientConfig(base_url="nope")
