"""``Token``: the one token type, its aware ``expires_at``, and the deprecated names it replaced."""

from __future__ import annotations

import datetime
import pickle
import warnings
from typing import Any

import attrs
import pytest

import icr_async
import icr_async.models
from icr_async import InvalidArgumentError, Permissions, Token
from icr_async._converters import structure, unstructure
from icr_async._token_answer import AccessTokenAnswer, token_from_answer

UTC = datetime.timezone.utc
SECRET = "crs_" + "0123456789ab" * 4
T0 = datetime.datetime(2030, 1, 1, tzinfo=UTC)

ANSWER: dict[str, Any] = {
    "id": "f4a3a3f6-0000-4000-8000-000000000001",
    "createdAt": "2030-01-01T00:00:00Z",
    "updatedAt": "2030-01-01T00:00:00Z",
    "expiresAt": "2030-01-01T02:00:00Z",
    "token": SECRET,
    "isActive": True,
    "permissions": {"organization_info": "VIEW", "organization_inventory": "WRITE"},
    "appId": "67890",
    "installationId": "0b0c8e3c-1d2f-4a57-9a43-5d1c6c2f3e9b",
    "organizationId": "org-1",
}


def _answer(**changes: Any) -> AccessTokenAnswer:
    return structure({**ANSWER, **changes}, AccessTokenAnswer)


# ------------------------------------------------------------------ expires_at is a datetime


def test_expires_at_is_an_aware_utc_datetime_with_its_seconds_worked_out_once() -> None:
    token = Token(token=SECRET, expires_at=T0, minted_at=T0 - datetime.timedelta(hours=2))
    assert token.expires_at is T0
    assert token._expires == T0.timestamp()
    assert token._minted == T0.timestamp() - 7200
    # Private, and not part of what a token is.
    assert "_expires" not in repr(token)
    assert "_minted" not in repr(token)
    assert "Expires" not in str(unstructure(token))
    moved = attrs.evolve(token, expires_at=T0 + datetime.timedelta(seconds=90))
    assert moved._expires == T0.timestamp() + 90
    assert pickle.loads(pickle.dumps(token)) == token
    assert pickle.loads(pickle.dumps(token))._expires == token._expires


def test_minted_at_is_optional() -> None:
    token = Token(token=SECRET, expires_at=T0)
    assert token.minted_at is None
    assert token._minted == 0.0


def test_another_zone_is_kept_as_the_same_instant_in_utc() -> None:
    iceland_plus_two = datetime.timezone(datetime.timedelta(hours=2))
    token = Token(token=SECRET, expires_at=T0.astimezone(iceland_plus_two))
    assert token.expires_at == T0
    assert token.expires_at.tzinfo is UTC


@pytest.mark.parametrize("field", ["expires_at", "minted_at"])
def test_a_naive_datetime_is_refused(field: str) -> None:
    naive = datetime.datetime(2030, 1, 1)
    values: dict[str, Any] = {"expires_at": T0, field: naive}
    with pytest.raises(InvalidArgumentError, match=f"{field} must be a timezone-aware"):
        Token(token=SECRET, **values)


def test_something_else_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="expires_at must be an aware datetime"):
        Token(token=SECRET, expires_at="2030-01-01T00:00:00Z")  # type: ignore[arg-type]


def test_posix_seconds_still_work_for_one_release_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="pass an aware datetime") as caught:
        token = Token(
            token=SECRET,
            expires_at=T0.timestamp(),  # type: ignore[arg-type]
            minted_at=T0.timestamp() - 60,  # type: ignore[arg-type]
        )
    assert len(caught) == 2
    assert {w.filename for w in caught} == {__file__}  # it names the caller's line
    assert token.expires_at == T0
    assert token.minted_at == T0 - datetime.timedelta(seconds=60)


def test_expires_at_datetime_is_deprecated_and_is_expires_at() -> None:
    token = Token(token=SECRET, expires_at=T0)
    with pytest.warns(DeprecationWarning, match="use Token.expires_at") as caught:
        assert token.expires_at_datetime is token.expires_at
    assert caught[0].filename == __file__


def test_the_secret_stays_masked() -> None:
    token = token_from_answer(_answer(), installation_id="i", now=T0.timestamp(), server_now=0)
    assert SECRET not in repr(token)
    assert str(token) == "crs_…89ab"
    with pytest.raises(InvalidArgumentError, match="masked"):
        f"Bearer {token}"
    assert SECRET not in repr(_answer())


# ------------------------------------------------------------------- from ICR's answer


def test_an_answer_becomes_a_token_on_this_machines_clock() -> None:
    # The server's clock is 10 minutes ahead of this machine's: the token expires 2 h after
    # this machine's "now", whatever the server's clock says.
    now = (T0 - datetime.timedelta(minutes=10)).timestamp()
    token = token_from_answer(
        _answer(),
        installation_id="0b0c8e3c-1d2f-4a57-9a43-5d1c6c2f3e9b",
        now=now,
        server_now=T0.timestamp(),
    )
    assert token.expires_at == datetime.datetime(2030, 1, 1, 1, 50, tzinfo=UTC)
    assert token.expires_at.tzinfo is UTC
    assert token.minted_at == datetime.datetime(2029, 12, 31, 23, 50, tzinfo=UTC)
    assert token._expires - token._minted == pytest.approx(7200)
    # Everything else ICR sent is kept as sent (its times on its own clock).
    assert token.id == ANSWER["id"]
    assert token.created_at == T0
    assert token.updated_at == T0
    assert token.is_active is True
    assert token.app_id == "67890"
    assert token.organization_id == "org-1"
    assert token.permissions == ANSWER["permissions"]
    assert token.extra == {}


def test_nothing_icr_sent_is_lost() -> None:
    answer = _answer(isActive=False, scopes=["a"], appNameId="app1")
    token = token_from_answer(
        answer, installation_id=None, now=T0.timestamp(), server_now=T0.timestamp()
    )
    assert token.extra == {"scopes": ["a"], "appNameId": "app1"}
    assert token.is_active is False
    wire = unstructure(token)
    assert wire["scopes"] == ["a"]
    assert wire["appNameId"] == "app1"
    assert wire["token"] == SECRET
    assert wire["expiresAt"] == "2030-01-01T02:00:00Z"
    assert wire["id"] == ANSWER["id"]


def test_the_installation_asked_for_names_the_token() -> None:
    asked = token_from_answer(_answer(), installation_id="42", now=0.0, server_now=0.0)
    assert asked.installation_id == "42"
    app = token_from_answer(
        _answer(installationId=None), installation_id=None, now=0.0, server_now=0.0
    )
    assert app.installation_id is None


def test_repeated_parts_are_shared_between_tokens() -> None:
    # A cache holds a token per installation: the same grants are one object, and an
    # updatedAt equal to createdAt is one datetime.
    first = token_from_answer(_answer(), installation_id="1", now=0.0, server_now=0.0)
    second = token_from_answer(_answer(), installation_id="2", now=0.0, server_now=0.0)
    assert first.permissions is second.permissions
    assert first.updated_at is first.created_at
    other = token_from_answer(
        _answer(permissions={"organization_info": "WRITE"}),
        installation_id="3",
        now=0.0,
        server_now=0.0,
    )
    assert other.permissions is not first.permissions
    assert other.permissions == Permissions({"organization_info": "WRITE"})
    plain = Token(token=SECRET, expires_at=T0)
    assert plain.permissions is Token(token=SECRET, expires_at=T0).permissions
    assert plain.permissions == {}


# ------------------------------------------------------------------- the former names


@pytest.mark.parametrize("name", ["AccessToken", "AppAccessToken", "InstallationAccessToken"])
@pytest.mark.parametrize("module", [icr_async, icr_async.models], ids=lambda m: m.__name__)
def test_the_former_token_types_are_deprecated_aliases_of_token(module: Any, name: str) -> None:
    assert name not in module.__all__
    with pytest.warns(
        DeprecationWarning, match=rf"{name} is deprecated .* use {module.__name__}\.Token"
    ):
        alias = getattr(module, name)
    assert alias is Token
    token = Token(token=SECRET, expires_at=T0)
    assert isinstance(token, alias)


def test_importing_the_package_warns_nobody() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert icr_async.Token is icr_async.models.Token
