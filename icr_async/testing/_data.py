"""Deterministic fake registry data: the same seed and call order give the same objects."""

from __future__ import annotations

import datetime as _dt
import random
import uuid
from typing import Any

__all__ = [
    "DEFAULT_PERMISSIONS",
    "ORGANIZATION_TYPES",
    "DataFactory",
    "admin_user",
    "iso",
]

DEFAULT_PERMISSIONS: dict[str, str] = {
    "organization_info": "VIEW",
    "organization_inventory": "WRITE",
    "organization_warehouse": "WRITE",
    "organization_projects": "VIEW",
    "organization_members": "VIEW",
}
"""Permissions an installation gets unless a test asks for others."""

ORGANIZATION_TYPES: tuple[str, ...] = (
    "projectProponent",
    "projectDeveloper",
    "marketParticipant",
    "validationBody",
    "other",
)
"""The organization ``type`` values ICR's demo app knows."""

# A fixed origin keeps generated dates independent of the wall clock (reproducible data).
_EPOCH = 1_672_531_200  # 2023-01-01T00:00:00Z
_YEAR = 365 * 86_400

_ADJECTIVES = (
    "Nordic", "Atlantic", "Green", "Boreal", "Andean", "Coastal", "Highland", "Verdant",
    "Solar", "Blue", "Prairie", "Delta", "Alpine", "Pacific", "Savanna", "Arctic",
)  # fmt: skip
_NOUNS = (
    "Forest", "Carbon", "Peatland", "Wind", "Mangrove", "Soil", "Biochar", "Kelp",
    "Climate", "Reforestation", "Methane", "Grassland", "Wetland", "Cookstove",
)  # fmt: skip
_SUFFIXES = ("Ltd", "ehf.", "GmbH", "Inc.", "AS", "SA", "Partners", "Cooperative", "Trust")
_PLACES = (
    ("IS", "Reykjavik", "101"), ("NO", "Oslo", "0150"), ("DE", "Berlin", "10115"),
    ("US", "Portland", "97201"), ("BR", "Manaus", "69005"), ("KE", "Nairobi", "00100"),
    ("IN", "Pune", "411001"), ("GB", "Bristol", "BS1"), ("PE", "Cusco", "08002"),
    ("ID", "Jakarta", "10110"), ("SE", "Umea", "90325"), ("CA", "Halifax", "B3H"),
)  # fmt: skip
_STREETS = ("Laugavegur", "Main Street", "Harbour Road", "Forest Lane", "Market Square")
_INDUSTRIES = (
    "Forestry", "Energy", "Agriculture", "Carbon Removal", "Finance", "Manufacturing",
    "Transport", "Consulting", "Technology", "Waste Management",
)  # fmt: skip
_METHODOLOGIES = (
    "ICR-CRU-001", "ICR-BIO-002", "VM0007", "VM0047", "ACM0002", "AMS-I.D.", "AR-ACM0003",
)  # fmt: skip
_PROJECT_KINDS = (
    "Afforestation", "Biochar", "Direct Air Capture", "Peatland Rewetting", "Wind Power",
    "Improved Cookstoves", "Landfill Gas", "Soil Carbon", "Mangrove Restoration",
)  # fmt: skip
_PROJECT_STATUSES = ("registered", "validated", "verified", "listed")
_FIRST_NAMES = ("Anna", "Jon", "Maria", "Kofi", "Priya", "Lars", "Ines", "Tomas", "Aiko", "Sam")
_LAST_NAMES = ("Jonsdottir", "Berg", "Silva", "Mensah", "Rao", "Olsen", "Garcia", "Novak", "Ito")


def iso(timestamp: float) -> str:
    """Format POSIX seconds the way ICR (NestJS, JavaScript ``toISOString``) does, with ``Z``."""
    moment = _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def admin_user(seed: int, organization: dict[str, Any]) -> dict[str, Any]:
    """The organization's admin as ICR shows a user (a webhook's ``sender``):
    ``{id, url, email, fullName, profilePicture}``.

    Derived from the seed and the organization's id alone, so the same organization has the
    same admin whatever else the emulator did first.
    """
    org_id = str(organization.get("id"))
    rng = random.Random(f"admin-{seed}-{org_id}")
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    slug = f"{first}-{last}-{user_id[:4]}".lower()
    website = str(organization.get("website") or "https://example.com")
    domain = website.split("://", 1)[-1].split("/", 1)[0]
    return {
        "id": user_id,
        "url": slug,
        "email": f"{first}.{last}@{domain}".lower(),
        "fullName": f"{first} {last}",
        "profilePicture": f"https://static.icr-emulator.invalid/users/{user_id}.png",
    }


class DataFactory:
    """Makes ids, organizations, installations and projects from one seed.

    Separate random streams per kind of object mean, for example, that adding a project
    list later does not shift the ids of installations a test already relies on.
    """

    def __init__(self, seed: int) -> None:
        self._ids = random.Random(f"ids-{seed}")
        self._orgs = random.Random(f"orgs-{seed}")
        self._projects = random.Random(f"projects-{seed}")
        self._app_count = 0

    def uuid(self) -> str:
        """A deterministic version-4 UUID string."""
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def app_name_id(self) -> str:
        """A slug like the ``appNameId`` ICR gives each app (``app1``...)."""
        self._app_count += 1
        return f"emulator-app{self._app_count}"

    def past_timestamp(self) -> float:
        """A reproducible moment in 2023, for ``createdAt`` of pre-existing objects."""
        return float(_EPOCH + self._orgs.randrange(_YEAR))

    def organization(
        self, overrides: dict[str, Any] | None = None, *, created: float | None = None
    ) -> dict[str, Any]:
        """A full organization object as ICR serves it, with ``overrides`` applied on top."""
        rng = self._orgs
        org_id = self.uuid()
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_SUFFIXES)}"
        country, city, zip_code = rng.choice(_PLACES)
        created_at = self.past_timestamp() if created is None else created
        slug = "-".join(name.lower().replace(".", "").split()) + "-" + org_id[:4]
        industries = rng.sample(_INDUSTRIES, k=rng.randint(1, 3))
        org: dict[str, Any] = {
            "id": org_id,
            "fullName": name,
            "countryCode": country,
            "type": rng.choice(ORGANIZATION_TYPES),
            "isPublic": rng.random() < 0.7,
            "createdAt": iso(created_at),
            "updatedAt": iso(created_at + rng.randrange(86_400 * 30)),
            "url": slug,
            "logo": f"https://static.icr-emulator.invalid/logos/{org_id}.png",
            "website": f"https://{slug}.example.com",
            "city": city,
            "zip": zip_code,
            "physicalAddress": f"{rng.choice(_STREETS)} {rng.randint(1, 200)}",
            "registrationNumber": f"{rng.randrange(10**9):09d}",
            "organizationIndustries": [
                {"id": self.uuid(), "name": industry} for industry in industries
            ],
        }
        if overrides:
            org.update(overrides)
        return org

    def projects(self, count: int = 25) -> list[dict[str, Any]]:
        """The public project list: ``count`` projects with stable ids and names."""
        rng = self._projects
        projects: list[dict[str, Any]] = []
        for number in range(1, count + 1):
            created = float(_EPOCH + rng.randrange(_YEAR))
            country = rng.choice(_PLACES)[0]
            kind = rng.choice(_PROJECT_KINDS)
            projects.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "name": f"{rng.choice(_ADJECTIVES)} {kind} Project #{number}",
                    "shortDescription": f"{kind} in {country}",
                    "country": country,
                    "methodology": rng.choice(_METHODOLOGIES),
                    "status": rng.choice(_PROJECT_STATUSES),
                    "vintageStart": 2018 + rng.randrange(5),
                    "isPublic": True,
                    "createdAt": iso(created),
                    "updatedAt": iso(created + rng.randrange(86_400 * 90)),
                }
            )
        return projects
