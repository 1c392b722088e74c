"""``examples/fleet_inventory_job.py`` run as its users would: a producer and two worker
processes on a job queue in a real redis-server, against the emulator."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from _redis_server import RedisServer
from cli_support import REPO, EmulatorThread

pytestmark = pytest.mark.redis

EXAMPLE = REPO / "examples" / "fleet_inventory_job.py"


def test_the_job_fetches_every_inventory_once_across_workers(
    redis_server: RedisServer, private_key_pem: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if importlib.util.find_spec("taskiq_redis") is None:
        # CI installs the fleet-example group and sets this: a skip there would hide a break.
        assert os.environ.get("ICR_REQUIRE_TASKIQ") != "1", "taskiq-redis is not installed"
        pytest.skip("the recipe needs the fleet-example group (taskiq, taskiq-redis)")
    with EmulatorThread(
        private_key_pem, tmp_path_factory.mktemp("fleet-job"), installations=12
    ) as emu:
        env = {**emu.env, "ICR_REDIS_URL": redis_server.url, "ICR_REDIS_KEY": "ab" * 32}
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), "--workers", "2"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        progress = [line for line in lines if line.startswith("progress: ")]
        assert progress[-1] == "progress: 12/12"
        assert lines[-2] == "fetched 12 inventories with 2 workers"
        assert "credit lines" in lines[-1]
        # Two workers shared the tokens through Redis: one mint per installation.
        assert sum(emu.emulator.stats.mints.values()) == 12
        assert all(n == 1 for n in emu.emulator.stats.mints.values())
