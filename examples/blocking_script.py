"""A plain script with the blocking ``ICRClient``: no ``async``, no ``await``.

export ICR_APP_ID=... ICR_PRIVATE_KEY_PATH=... ICR_BASE_URL=...   # icr-async emulator prints these
python examples/blocking_script.py
"""

from __future__ import annotations

from icr_async import ICRClient

# Credentials come from ICR_APP_ID / ICR_PRIVATE_KEY_PATH / ICR_BASE_URL.
with ICRClient() as client:
    installations = list(client.iter_installations())
    print(f"{len(installations)} installations")
    for installation in installations[:3]:
        org = installation.organization
        print(f"  {installation.id}  {org.full_name if org else '?'}")

    first = client.installation(installations[0].id)
    token = first.get_token()  # minted once, then served from the cache
    print(f"token for {installations[0].id}: {token!s} (masked), expires {token.expires_at:%H:%M}Z")
    org = first.request("GET", f"/organizations/{first.organization_id()}")
    print(f"organization: {org['fullName']} ({org['countryCode']})")
