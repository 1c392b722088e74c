"""Static checks of the blocking client's signatures: read by ``mypy --strict``, never run.

pytest does not collect this file (its name does not start with ``test_``) and everything sits
under ``if TYPE_CHECKING``, so importing it does nothing. Each ``assert_type`` fails the type
check if a twin's parameters or return type drift from the async method it wraps; the lines
marked ``type: ignore[...]`` must stay errors (mypy's ``warn_unused_ignores`` under
``--strict`` flags them if they ever type-check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from typing_extensions import assert_type

    from icr_async import (
        AppTokenClient,
        ClientStats,
        CreatedOrganization,
        CreditRequest,
        ICRClient,
        Installation,
        InstallationClient,
        Inventory,
        Organization,
        Page,
        Project,
        Reservation,
        Token,
    )

    def check_app_client(client: ICRClient) -> None:
        assert_type(ICRClient("app", "pem", base_url="http://127.0.0.1:1", env=False), ICRClient)
        with ICRClient("app", "pem", sandbox=True) as entered:
            assert_type(entered, ICRClient)
        assert_type(client.get_installation("x"), Installation)
        assert_type(client.get_installation(7), Installation)
        assert_type(client.list_installations(limit=5, page=1), Page[Installation])
        assert_type(client.iter_installations(), Iterator[Installation])
        assert_type(client.iter_installations(page_size=10, start_page=2), Iterator[Installation])
        assert_type(client.create_app_token(), Token)
        assert_type(client.create_installation_token("x"), Token)
        assert_type(client.revoke_token("crs_x"), bool)
        assert_type(
            client.create_user_organization(
                email="a@b.c", organization_name="Org", organization_type="COMPANY"
            ),
            CreatedOrganization,
        )
        assert_type(client.request("GET", "/app/installations"), Any)
        assert_type(client.installation("x"), InstallationClient)
        assert_type(client.app_token_client(), AppTokenClient)
        assert_type(client.close(), None)
        assert_type(client.closed, bool)
        assert_type(client.app_id, str)
        assert_type(client.stats, ClientStats)
        assert_type(client.base_url, str)
        assert_type(client.key_fingerprint, str)
        assert_type(client.jwt_signatures, int)
        assert_type(client.clock_offset, float)

    def check_scoped_clients(client: ICRClient) -> None:
        inst = client.installation("x")
        assert_type(inst.get_token(), Token)
        assert_type(inst.get_token(min_ttl=60), Token)
        assert_type(inst.organization_id(), str)
        assert_type(inst.request("GET", "/organizations/o"), Any)
        assert_type(inst.request_raw("GET", "/organizations/o"), bytes)
        assert_type(inst.revoke(), bool)
        assert_type(inst.installation_id, str)
        assert_type(inst.parent, ICRClient)
        assert_type(inst.get_organization(), Organization)
        assert_type(inst.get_inventory(), Inventory)
        assert_type(inst.list_credit_requests(limit=5), Page[CreditRequest])
        assert_type(inst.iter_credit_requests(page_size=50), Iterator[CreditRequest])
        assert_type(inst.iter_reservations(), Iterator[Reservation])
        assert_type(inst.get_retirement_pdf("r"), bytes)
        assert_type(inst.cancel_reservation("r"), Reservation | None)
        app = client.app_token_client()
        assert_type(app.get_token(), Token)
        assert_type(app.request("GET", "/projects", params={"limit": 2}), Any)
        assert_type(app.parent, ICRClient)
        assert_type(app.list_projects(limit=3), Page[Project])
        assert_type(app.iter_projects(page_size=10), Iterator[Project])

    def check_wrong_calls_are_rejected(client: ICRClient) -> None:
        client.get_installation(1.5)  # type: ignore[arg-type]
        client.list_installations(limit="5")  # type: ignore[arg-type]
        client.iter_installations(10)  # type: ignore[call-arg]
        client.installation("x").get_token(ttl=5)  # type: ignore[call-arg]
        ICRClient(sandbox="yes")  # type: ignore[arg-type]
        ICRClient(no_such_option=1)  # type: ignore[call-arg]
        client.get_organization("o")  # type: ignore[attr-defined]
