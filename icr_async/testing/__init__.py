"""Test tools: an ICR Apps API emulator that runs on loopback, and a pytest plugin.

The emulator checks app JWTs for real (RS256 against the app's registered public keys),
mints and revokes access tokens, serves installations, organizations and projects, and can
inject faults (error statuses, resets, truncated or mislabelled bodies, hangs)::

    from icr_async.testing import ICREmulator, ManualClock

    emulator = ICREmulator(clock=ManualClock())
    app = emulator.create_app(installations=3)
    async with emulator.serve() as server:
        ...  # point the client at server.url, sign JWTs with app.private_key_pem

Every reading ICR's docs leave open (page numbering, ``nextPage`` at the ends, 200 or 201
on POSTs, the server's clock, token lifetimes, ``Retry-After`` form, request-id header) is an
option of :class:`ICREmulator`; :data:`VARIANTS` names plausible ICRs to test against::

    for name, variant in VARIANTS.items():
        emulator = ICREmulator(clock=clock, **variant.kwargs())

Run it standalone with ``python -m icr_async.testing --help`` (``--variant NAME``).
"""

from __future__ import annotations

from .._clock import ManualClock
from ._crypto import generate_private_key_pem
from ._emulator import EmulatorApp, EmulatorServer, ICREmulator
from ._faults import Fault, FaultInjector
from ._stats import EmulatorStats
from ._variants import VARIANTS, EmulatorOptions, EmulatorVariant

__all__ = [
    "VARIANTS",
    "EmulatorApp",
    "EmulatorOptions",
    "EmulatorServer",
    "EmulatorStats",
    "EmulatorVariant",
    "Fault",
    "FaultInjector",
    "ICREmulator",
    "ManualClock",
    "generate_private_key_pem",
]
