"""Retries, timeouts, back-pressure and faults, injected by the real emulator."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import ssl
from typing import Any, Literal

import aiohttp
import pytest

from icr_async import (
    AiohttpTransport,
    APIError,
    AsyncICRClient,
    NotFoundError,
    RateLimitedError,
    RequestTimeoutError,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
    Timeouts,
    TransportError,
)
from icr_async.testing import Fault, ICREmulator, ManualClock

pytestmark = pytest.mark.anyio

LIST = "/app/installations"


def _inst(emulator: ICREmulator, app_id: str, index: int = 0) -> tuple[str, str]:
    raw = emulator.installations(app_id)[index]
    return raw["id"], f"/organizations/{raw['organization']['id']}"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_safe_requests_are_retried_on_transient_statuses(
    client: AsyncICRClient, emulator: ICREmulator, fake_sleep: Any, status: int
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, status=status, times=2))
    page = await client.list_installations()
    assert len(page) == 10
    assert client.stats.retries == 2
    assert len(fake_sleep.calls) == 2
    assert emulator.stats.requests[("GET", "list_installations")] >= 1


async def test_backoff_is_exponential_with_full_jitter(
    make_client: Any, emulator: ICREmulator, fake_sleep: Any
) -> None:
    client: AsyncICRClient = make_client(
        retry=RetryPolicy(attempts=5, backoff_base=0.5, backoff_cap=8.0)
    )
    emulator.faults.add(Fault(method="GET", path=LIST, status=503, times=4))
    await client.list_installations()
    ceilings = [0.5, 1.0, 2.0, 4.0]
    assert len(fake_sleep.calls) == 4
    assert all(0 <= d <= c for d, c in zip(fake_sleep.calls, ceilings, strict=True))


async def test_attempts_are_bounded(
    client: AsyncICRClient, emulator: ICREmulator, fake_sleep: Any
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, status=503, times=None))
    with pytest.raises(ServerError) as info:
        await client.list_installations()
    assert info.value.status == 503
    assert client.stats.retries == 2  # 3 attempts in all
    assert len(fake_sleep.calls) == 2


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 501])
async def test_other_errors_are_not_retried(
    client: AsyncICRClient, emulator: ICREmulator, status: int
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, status=status, times=None))
    with pytest.raises(APIError) as info:
        await client.list_installations()
    assert info.value.status == status
    assert client.stats.retries == 0


async def test_retry_after_seconds_is_honoured(
    client: AsyncICRClient, emulator: ICREmulator, fake_sleep: Any
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, status=429, retry_after="7", times=1))
    await client.list_installations()
    assert fake_sleep.calls == [7.0]


async def test_retry_after_http_date_is_honoured(
    client: AsyncICRClient, emulator: ICREmulator, fake_sleep: Any, clock: ManualClock
) -> None:
    when = email.utils.formatdate(clock() + 12, usegmt=True)
    emulator.faults.add(Fault(method="GET", path=LIST, status=503, retry_after=when, times=1))
    await client.list_installations()
    assert fake_sleep.calls == [pytest.approx(12, abs=1)]


async def test_retry_after_beyond_the_maximum_raises_at_once(
    client: AsyncICRClient, emulator: ICREmulator, fake_sleep: Any
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, status=429, retry_after="3600", times=1))
    with pytest.raises(RateLimitedError) as info:
        await client.list_installations()
    assert info.value.retry_after == 3600
    assert fake_sleep.calls == []


async def test_rate_limit_on_a_credit_action_is_raised_with_retry_after(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, fake_sleep: Any
) -> None:
    inst, org = _inst(emulator, app_id)
    path = org + "/inventory/requests/retire"
    emulator.faults.add(Fault(method="POST", path=path, status=429, retry_after="2", times=1))
    with pytest.raises(RateLimitedError) as info:
        await client.installation(inst).request("POST", path, json={"creditId": "c", "amount": 1})
    assert info.value.retry_after == 2
    assert fake_sleep.calls == []
    assert emulator.stats.duplicate_posts == 0


async def test_a_500_on_a_get_is_retried_and_on_a_credit_action_is_not(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, fake_sleep: Any
) -> None:
    inst, org = _inst(emulator, app_id)
    scoped = client.installation(inst)
    emulator.faults.add(Fault(method="GET", path=org, status=500, times=1))
    assert (await scoped.request("GET", org))["id"] == org.rsplit("/", 1)[1]
    assert client.stats.retries == 1

    path = org + "/inventory/requests/retire"
    retire = Fault(method="POST", path=path, status=500, times=None)
    emulator.faults.add(retire)
    body = {
        "creditId": "c-1",
        "amount": 1,
        "retirementData": {"reason": "r", "beneficiaryName": "b"},
    }
    with pytest.raises(ServerError):
        await scoped.request("POST", path, json=body)
    assert emulator.faults.fired(retire) == 1  # sent once, never repeated
    assert client.stats.retries == 1
    assert emulator.stats.duplicate_posts == 0


async def test_retry_after_on_a_500_is_honoured(
    client: AsyncICRClient, emulator: ICREmulator, fake_sleep: Any
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, status=500, retry_after="4", times=1))
    await client.list_installations()
    assert fake_sleep.calls == [4.0]


async def test_a_narrowed_policy_does_not_retry_500(
    make_client: Any, emulator: ICREmulator
) -> None:
    client: AsyncICRClient = make_client(retry=RetryPolicy(statuses={429, 503}))
    emulator.faults.add(Fault(method="GET", path=LIST, status=500, times=1))
    with pytest.raises(ServerError):
        await client.list_installations()
    assert client.stats.retries == 0


async def test_post_is_retried_only_when_the_caller_asks(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org = _inst(emulator, app_id, 1)
    path = org + "/inventory/requests/transfer"
    body = {"creditId": "c-1", "amount": 5, "toOrganizationId": "o-2"}
    emulator.faults.add(Fault(method="POST", path=path, status=503, times=1))
    scoped = client.installation(inst)
    with pytest.raises(ServerError):
        await scoped.request("POST", path, json=body)
    assert client.stats.retries == 0
    emulator.faults.add(Fault(method="POST", path=path, status=503, times=1))
    with contextlib.suppress(APIError):  # whatever the ledger answers, the retry happened
        await scoped.request("POST", path, json=body, retry=True)
    assert client.stats.retries == 1
    assert emulator.stats.duplicate_posts >= 1  # the caller asked for it: the body went twice


@pytest.mark.parametrize("action", ["reset", "truncate"])
async def test_broken_connections_are_retried_for_safe_requests(
    client: AsyncICRClient, emulator: ICREmulator, action: Literal["reset", "truncate"]
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, action=action, times=1))
    page = await client.list_installations()
    assert len(page) == 10
    assert client.stats.retries == 1


@pytest.mark.parametrize("action", ["reset", "truncate"])
async def test_broken_connections_surface_as_transport_errors(
    no_retry_client: AsyncICRClient, emulator: ICREmulator, action: Literal["reset", "truncate"]
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, action=action, times=1))
    with pytest.raises(TransportError) as info:
        await no_retry_client.list_installations()
    assert info.value.method == "GET"
    assert info.value.path == LIST


async def test_non_json_body_is_a_decode_error(
    no_retry_client: AsyncICRClient, emulator: ICREmulator
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, action="nonjson", times=1))
    with pytest.raises(ResponseDecodeError) as info:
        await no_retry_client.list_installations()
    assert info.value.status == 200
    assert isinstance(info.value.__cause__, ValueError)


async def test_a_non_json_2xx_on_a_safe_request_is_tried_once_more(
    make_client: Any, emulator: ICREmulator
) -> None:
    client: AsyncICRClient = make_client(retry=RetryPolicy(attempts=4))
    once = Fault(method="GET", path=LIST, action="nonjson", times=1)
    emulator.faults.add(once)
    assert len(await client.list_installations()) == 10
    assert client.stats.retries == 1
    # Once more, not more: a server that always answers HTML is not transient.
    always = Fault(method="GET", path=LIST, action="nonjson", times=None)
    emulator.faults.add(always)
    with pytest.raises(ResponseDecodeError):
        await client.list_installations()
    assert emulator.faults.fired(always) == 2
    assert client.stats.retries == 2


async def test_a_non_json_2xx_on_a_credit_action_is_not_repeated(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org = _inst(emulator, app_id)
    path = org + "/inventory/requests/transfer"
    fault = Fault(method="POST", path=path, action="nonjson", times=None)
    emulator.faults.add(fault)
    with pytest.raises(ResponseDecodeError):
        await client.installation(inst).request(
            "POST", path, json={"creditId": "c-1", "amount": 1, "toOrganizationId": "o-2"}
        )
    assert emulator.faults.fired(fault) == 1
    assert client.stats.retries == 0


async def test_wrong_content_type_with_json_body_still_decodes(
    client: AsyncICRClient, emulator: ICREmulator
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, action="wrong_content_type", times=1))
    page = await client.list_installations()
    assert len(page) == 10


async def test_error_with_non_json_body_keeps_the_text(
    no_retry_client: AsyncICRClient, emulator: ICREmulator
) -> None:
    emulator.faults.add(
        Fault(
            method="GET",
            path=LIST,
            status=502,
            body="<html><b>Bad gateway</b> upstream</html>",
            times=1,
        )
    )
    with pytest.raises(ServerError) as info:
        await no_retry_client.list_installations()
    assert "Bad gateway" in info.value.server_message
    assert info.value.body is None


async def test_read_timeout(make_client: Any, emulator: ICREmulator) -> None:
    client: AsyncICRClient = make_client(
        timeouts=Timeouts(read=0.2, total=5), retry=RetryPolicy.disabled()
    )
    emulator.faults.add(Fault(method="GET", path=LIST, action="hang", times=1))
    with pytest.raises(RequestTimeoutError) as info:
        await client.list_installations()
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, TransportError)


async def test_total_deadline_bounds_all_attempts(make_client: Any, emulator: ICREmulator) -> None:
    # Real sleeps here: the deadline is measured on the loop's clock.
    client: AsyncICRClient = make_client(
        timeouts=Timeouts(read=5, total=0.6),
        retry=RetryPolicy(attempts=10, backoff_base=0.2),
        sleep=asyncio.sleep,
    )
    emulator.faults.add(Fault(method="GET", path=LIST, status=503, delay=0.15, times=None))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises((ServerError, RequestTimeoutError)):
        await client.list_installations()
    assert loop.time() - started < 3.0  # bounded by the 0.6 s deadline, not 10 attempts
    assert client.stats.retries < 9


async def test_timeouts_retried_then_succeed(make_client: Any, emulator: ICREmulator) -> None:
    # The read limit must be far above a normal answer's time even on a loaded machine (at
    # 0.2 s, CI's busy run saw the retry time out too): only the hung attempt may hit it.
    client: AsyncICRClient = make_client(timeouts=Timeouts(read=2.0, total=20))
    emulator.faults.add(Fault(method="GET", path=LIST, action="hang", times=1))
    page = await client.list_installations()
    assert len(page) == 10
    assert client.stats.retries == 1


async def test_back_pressure_queues_a_large_fan_out(
    make_client: Any, emulator: ICREmulator, app_id: str
) -> None:
    # 200 times more callers than connections: they queue for the pool instead of timing
    # out (the 100,000-coroutine version is in the soak benchmark).
    client: AsyncICRClient = make_client(
        pool_size=2, timeouts=Timeouts(connect=2, read=10, total=60)
    )
    inst, org = _inst(emulator, app_id, 2)
    scoped = client.installation(inst)
    results = await asyncio.gather(*(scoped.request("GET", org) for _ in range(400)))
    assert len(results) == 400
    assert client.stats.retries == 0
    assert emulator.stats.mints[inst] == 1


async def test_hooks_receive_redacted_headers_and_every_attempt(
    make_client: Any, emulator: ICREmulator, app_id: str
) -> None:
    requests: list[Any] = []
    responses: list[Any] = []

    async def on_response(event: Any) -> None:
        responses.append(event)

    client: AsyncICRClient = make_client(on_request=requests.append, on_response=on_response)
    inst, org = _inst(emulator, app_id, 3)
    emulator.faults.add(Fault(method="GET", path=org, status=503, times=1))
    token = await client.installation(inst).get_token()
    await client.installation(inst).request("GET", org)
    gets = [r for r in requests if r.path == org]
    assert [r.attempt for r in gets] == [1, 2]
    assert [r.status for r in responses if r.path == org] == [503, 200]
    for event in requests + responses:
        assert token.token not in repr(event)
        assert "eyJ" not in repr(event)


async def test_aiohttp_trace_configs_pass_through(make_client: Any, emulator: ICREmulator) -> None:
    seen: list[str] = []

    async def on_request_start(
        session: Any, ctx: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        seen.append(params.url.path)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    client: AsyncICRClient = make_client(trace_configs=[trace])
    await client.list_installations()
    assert seen == [LIST]


async def test_one_connection_serves_a_run_of_calls(
    make_client: Any, emulator: ICREmulator, app_id: str
) -> None:
    # The pool at work: each answer's connection goes back to the pool once its body is
    # read (requests without a body are awaited and released by hand, the others through
    # ``async with``), so a run of sequential calls, refused ones and ones with a JSON
    # body included, opens one connection.
    opened: list[str] = []
    reused: list[str] = []

    async def on_create(session: Any, ctx: Any, params: Any) -> None:
        opened.append("new")

    async def on_reuse(session: Any, ctx: Any, params: Any) -> None:
        reused.append("reused")

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    trace.on_connection_reuseconn.append(on_reuse)
    client: AsyncICRClient = make_client(trace_configs=[trace])
    inst, org = _inst(emulator, app_id, 0)
    scoped = client.installation(inst)
    await scoped.get_token()  # a POST with no body
    for _ in range(3):
        await client.list_installations()
        await scoped.request("GET", org)
        with pytest.raises(NotFoundError):
            await scoped.request("GET", org + "/nothing-here")
        # A body: the other branch of the transport.
        with pytest.raises(APIError):
            await scoped.request("POST", org + "/nothing-here", json={"a": 1})
    assert opened == ["new"]
    assert len(reused) >= 12  # every later call took the pooled connection


async def test_tls_with_custom_ca(
    emulator: ICREmulator, app_id: str, private_key_pem: str, tmp_path: Any, clock: ManualClock
) -> None:
    async with emulator.serve(tls=True) as server:
        assert server.url.startswith("https://")
        assert server.ca_pem is not None
        ca = tmp_path / "ca.pem"
        ca.write_text(server.ca_pem)
        async with AsyncICRClient(
            app_id, private_key_pem, base_url=server.url, ca_file=ca, env=False, clock=clock
        ) as client:
            page = await client.list_installations()
            assert len(page) == 10
        # Without the CA, verification fails, and that is not retried.
        async with AsyncICRClient(
            app_id, private_key_pem, base_url=server.url, env=False, clock=clock
        ) as untrusting:
            with pytest.raises(TransportError, match="TLS") as info:
                await untrusting.list_installations()
            assert info.value.retryable is False
            assert untrusting.stats.retries == 0
        # An explicit SSL context works too.
        context = ssl.create_default_context(cadata=server.ca_pem)
        async with AsyncICRClient(
            app_id, private_key_pem, base_url=server.url, ssl=context, env=False, clock=clock
        ) as client:
            assert (await client.get_installation(emulator.installations(app_id)[0]["id"])).id


async def test_whole_flow_leaks_no_secret(
    make_client: Any,
    emulator: ICREmulator,
    app_id: str,
    private_key_pem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[Any] = []
    client: AsyncICRClient = make_client(on_request=events.append, on_response=events.append)
    inst, org = _inst(emulator, app_id, 4)
    scoped = client.installation(inst)
    app_token = await client.create_app_token()
    inst_token = await client.create_installation_token(inst)
    cached = await scoped.get_token()
    await scoped.request("GET", org)
    jwt = await client._jwt.get()
    errors: list[BaseException] = []
    emulator.revoke_tokens(inst)
    await scoped.request("GET", org)  # recovered 401
    emulator.faults.add(Fault(method="GET", path=org, status=403, times=1))
    for call in (
        scoped.request("GET", org),
        client.revoke_token(app_token),
        client.revoke_token(app_token),
        client.get_installation("nope"),
    ):
        try:
            await call
        except Exception as exc:
            errors.append(exc)
    assert len(errors) >= 2
    secrets = [
        app_token.token,
        inst_token.token,
        cached.token,
        jwt,
        *private_key_pem.strip().splitlines()[1:-1],
    ]
    texts = [r.getMessage() for r in caplog.records]
    texts += [repr(e) for e in events] + [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [
        repr(client),
        repr(scoped),
        repr(app_token),
        repr(inst_token),
        repr(cached),
        str(cached),
        repr(client.stats),
    ]
    blob = "\n".join(texts)
    for secret in secrets:
        assert secret not in blob


async def test_cancelled_waiters_give_back_their_place(
    make_client: Any, emulator: ICREmulator, app_id: str
) -> None:
    transport = AiohttpTransport(
        pool_size=2, pool_size_per_host=0, in_flight=2, timeouts=Timeouts()
    )
    client: AsyncICRClient = make_client(transport=transport)
    inst, org = _inst(emulator, app_id, 5)
    scoped = client.installation(inst)
    await scoped.get_token()
    emulator.faults.add(Fault(method="GET", path=org, action="delay", delay=0.05, times=None))
    tasks = [asyncio.create_task(scoped.request("GET", org)) for _ in range(40)]
    await asyncio.sleep(0.01)  # two in flight, the rest queued at the gate
    for task in tasks[5:25]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 20
    assert sum(isinstance(r, dict) for r in results) == 20
    gate = transport._gate
    assert gate is not None
    assert gate.free == 2  # every slot came back, none leaked to a cancelled waiter
    assert not gate.waiters


async def test_an_accepted_credit_action_with_an_unreadable_answer_says_not_to_resend(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    """ICR does not document the answer to a credit action: one the SDK cannot read must not
    look like a failure a caller would retry."""
    from icr_async import RetirementData, UnreadableActionResultError

    inst, org = _inst(emulator, app_id, 2)
    fault = Fault(
        method="POST",
        path=org + "/inventory/requests/retire",
        status=200,
        body={"ok": True},
        times=None,
    )
    emulator.faults.add(fault)
    with pytest.raises(UnreadableActionResultError) as info:
        await client.installation(inst).retire_credits(
            credit_id="c-1",
            amount=1,
            retirement_data=RetirementData(reason="r", beneficiary_name="b"),
        )
    assert "do not send it again" in str(info.value)
    assert isinstance(info.value, ResponseDecodeError)
    assert emulator.faults.fired(fault) == 1
    assert client.stats.retries == 0
