"""A real Redis server (Debian's `redis-server`) on loopback, started and stopped by PID.

It runs the configuration the program deploys (core/redis_config.py: password, append-only
file fsynced every second, no eviction) with only the port and the data directory changed, so the
drill sees what a pod would: a restart keeps what the append-only file kept, a SIGKILL loses at most
the last second, SIGSTOP freezes it (connections open, nothing answers: Redis slow or hung).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from core.redis_config import redis_conf
from drill.standins import LOOPBACK

DRILL_REDIS_PASSWORD = "drill-redis-password"  # guards only a loopback server of the drill


class RedisServer:
    def __init__(self, port: int, password: str = DRILL_REDIS_PASSWORD) -> None:
        self.port, self.password = port, password
        self.data_dir = Path(tempfile.mkdtemp(prefix="llm-gateway-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{LOOPBACK}:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `bash scripts/test` (it installs it)")
        conf = self.data_dir / "redis.conf"
        conf.write_text(redis_conf(self.password, data_dir=str(self.data_dir)) + f"bind {LOOPBACK}\nport {self.port}\n")
        self.process = subprocess.Popen(
            [binary, str(conf)],
            stdout=open(self.data_dir / "redis.log", "wb"),  # noqa: SIM115 - the child keeps it open
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()
        return self

    def wait_ready(self, limit: float = 20.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not ready after {limit} s: {self.log_tail()}")

    def ping(self) -> bool:
        """The server answers an authenticated PING (a loading Redis answers -LOADING)."""
        try:
            return self.command("PING") == "PONG"
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return False

    def command(self, *words: str) -> str:
        """One command through redis-cli, as an operator would type it (readiness, and what the guard wrote)."""
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", self.password, *words],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout.strip()

    def kill(self) -> None:
        """SIGKILL, as an OOM kill or a node loss would: no shutdown save."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()
