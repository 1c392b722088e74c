"""Fuzzing the whole response path: arbitrary statuses, headers and bodies from a real server.

Hypothesis plans one fault per example on the emulator (any status, any bytes, a random
``Content-Type`` and ``Retry-After``), then the blocking client calls real endpoints through
it. Whatever comes back, the caller gets a value or an ``ICRError`` — never a bare
``KeyError``, ``ValueError`` or ``UnicodeDecodeError`` — and nothing hangs (the per-test
timeout and the client's own deadline bound every call).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import EmulatorThread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icr_async import ICRClient, ICRError, RetryPolicy, Timeouts
from icr_async.testing import Fault


@pytest.fixture(scope="module")
def live(
    private_key_pem: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorThread]:
    with EmulatorThread(
        private_key_pem, Path(tmp_path_factory.mktemp("fuzz")), installations=3
    ) as emu:
        yield emu


@pytest.fixture(scope="module")
def blocking(live: EmulatorThread, private_key_pem: str) -> Iterator[ICRClient]:
    assert live.server is not None
    with ICRClient(
        live.app.app_id,
        private_key_pem,
        base_url=live.server.url,
        env=False,
        retry=RetryPolicy(attempts=2, backoff_base=0.0, max_retry_after=0.0),
        timeouts=Timeouts(connect=2, read=2, total=5),
    ) as client:
        yield client


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)

bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "statusCode": st.integers(100, 599),
            "message": st.one_of(
                st.text(max_size=30), st.lists(st.text(max_size=10), max_size=3), st.none()
            ),
        },
        optional={"error": json_values},
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"pagination": json_values, "installations": st.lists(json_values, max_size=3)}
    ).map(lambda v: json.dumps(v).encode()),
    # ICR-shaped organization answers with arbitrary members (shared/docs/icr-api.md).
    st.fixed_dictionaries(
        {"credits": st.lists(json_values, max_size=3), "organizationId": json_values}
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"pagination": json_values, "reservations": st.lists(json_values, max_size=3)}
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"retirements": st.lists(json_values, max_size=3)}).map(
        lambda v: json.dumps(v).encode()
    ),
)

headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(
            [
                "application/json",
                "text/html",
                "text/plain; charset=latin-1",
                "application/octet-stream",
            ]
        ),
        "Retry-After": st.one_of(
            st.text(alphabet="0123456789-. aGMT,:SunNov", max_size=30),
            st.sampled_from(["0", "-5", "1e9", "nan", "Sun, 06 Nov 1994 08:49:37 GMT"]),
        ),
        "x-request-id": st.text(alphabet="abcdef0123456789-", max_size=40),
    },
)

CALLS = [
    "get_installation",
    "list_installations",
    "create_app_token",
    "iterate",
    "org",
    "inventory",
    "warehouse",
    "reservations",
    "retirements",
]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(status=st.integers(200, 599), body=bodies, extra=headers, call=st.sampled_from(CALLS))
def test_any_answer_gives_a_value_or_an_icr_error(
    live: EmulatorThread,
    blocking: ICRClient,
    status: int,
    body: bytes,
    extra: dict[str, str],
    call: str,
) -> None:
    emulator = live.emulator
    installation = emulator.installations(live.app.app_id)[0]
    emulator.faults.clear()
    org = f"/organizations/{installation['organization']['id']}"
    scoped = blocking.installation(installation["id"])
    path = {
        "get_installation": f"/app/installations/{installation['id']}",
        "list_installations": "/app/installations",
        "create_app_token": "/app/accessTokens",
        "iterate": "/app/installations",
        "org": org,
        "inventory": f"{org}/inventory",
        "warehouse": f"{org}/warehouse/inventory",
        "reservations": f"{org}/warehouse/inventory/reservations",
        "retirements": f"{org}/retirements",
    }[call]
    emulator.faults.add(Fault(path=path, status=status, body=body, headers=extra, times=None))
    try:
        result: Any
        if call == "get_installation":
            result = blocking.get_installation(installation["id"])
        elif call == "list_installations":
            result = blocking.list_installations(limit=5)
        elif call == "create_app_token":
            result = blocking.create_app_token()
        elif call == "iterate":
            result = list(blocking.iter_installations(page_size=2))
        elif call == "inventory":
            result = scoped.get_inventory()
        elif call == "warehouse":
            result = scoped.get_warehouse_inventory()
        elif call == "reservations":
            result = scoped.list_reservations(limit=5)
        elif call == "retirements":
            result = scoped.list_retirements()
        else:
            result = scoped.get_organization()
    except ICRError:
        pass
    else:
        assert result is not None
    finally:
        emulator.faults.clear()
