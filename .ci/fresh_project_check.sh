#!/usr/bin/env bash
# The pytest plugin as a new user meets it (issue 15): a fresh project whose environment holds
# only the wheel, pytest and pytest-asyncio. Its async tests pass under asyncio_mode=auto and
# strict, a plain synchronous test drives the blocking client, and a pytest session that uses
# no fixture imports no aiohttp (`python -X importtime`). Usage: fresh_project_check.sh WHEEL
set -euo pipefail
WHEEL="$(realpath "$1")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q "$WHEEL" pytest pytest-asyncio
mkdir "$WORK/project"
cd "$WORK/project"
cat > test_app.py <<'PYTEST'
import pytest

from icr_async import AsyncICRClient, ICRClient


@pytest.fixture
async def client(icr_app):
    async with AsyncICRClient(
        icr_app.app_id, icr_app.private_key_pem, base_url=icr_app.base_url, env=False
    ) as client:
        yield client


@pytest.mark.asyncio
async def test_async_listing(client, icr_app):
    ids = [installation.id async for installation in client.iter_installations()]
    assert ids == list(icr_app.installation_ids) and ids


@pytest.mark.asyncio
async def test_async_token(client, icr_app):
    token = await client.installation(icr_app.installation_ids[0]).get_token()
    assert token.expires_at.tzinfo is not None


def test_blocking_client(icr_app, icr_emulator_server):
    with ICRClient(icr_app.app_id, icr_app.private_key_pem, base_url=icr_app.base_url,
                   env=False) as client:
        assert [i.id for i in client.iter_installations()] == list(icr_app.installation_ids)
PYTEST
# Strict mode needs pytest_asyncio.fixture for an async fixture; auto mode takes the plain one.
sed 's/^@pytest.fixture$/@pytest_asyncio.fixture/; 1i import pytest_asyncio' test_app.py > strict_app.py
for mode in auto strict; do
  file=test_app.py
  [ "$mode" = strict ] && file=strict_app.py
  echo "-- asyncio_mode=$mode"
  "$PY" -m pytest -q -p no:cacheprovider -o asyncio_mode=$mode \
    -o asyncio_default_fixture_loop_scope=function "$file" 2>&1 | tail -3
  "$PY" -m pytest -q -p no:cacheprovider -o asyncio_mode=$mode \
    -o asyncio_default_fixture_loop_scope=function "$file" >/dev/null
done
cat > test_plain.py <<'PYTEST'
def test_nothing_heavy():
    assert 1 + 1 == 2
PYTEST
# -s: with capture on, pytest swallows what importtime writes to stderr during the session.
"$PY" -X importtime -m pytest -s -q -p no:cacheprovider \
  -o asyncio_default_fixture_loop_scope=function --co test_plain.py 2>importtime.txt >/dev/null
if grep -qE '\| +aiohttp$' importtime.txt; then
  echo "a pytest session that uses no fixture imported aiohttp" >&2
  exit 1
fi
# pytest imports entry-point plugins outside importtime's view: ask pytest itself.
"$PY" -m pytest -q -p no:cacheprovider -o asyncio_default_fixture_loop_scope=function --co \
  --trace-config test_plain.py >trace.txt
grep -q "PLUGIN registered: <module '_icr_async_pytest_plugin'" trace.txt || {
  echo "the plugin was not loaded" >&2
  exit 1
}
echo "-- importtime: the plugin loaded, aiohttp not imported"
