"""The Redis configuration the program deploys (and the drill runs): pure, no Pulumi import.

What Redis holds for the fleet is small and must outlive restarts: the spend guard's windows (a
30-day budget that forgot every restart would cap nothing) and LiteLLM's cooldowns (seconds long,
losing them is harmless). Hence:
- the append-only file, fsynced every second: a restart replays it; a crash loses at most the last
  second of counts (`save ""`: no snapshots besides, one format to reason about);
- `noeviction`: under `maxmemory` Redis refuses writes instead of silently dropping a budget key;
  the guard treats a refused write as Redis being away (`redis.cloudGuardWhenDown`);
- a password (`requirepass`): the file lives in a Secret, never in a ConfigMap.
"""

from __future__ import annotations

REDIS_DATA_DIR = "/data"  # the image's WORKDIR and VOLUME, owned by its `redis` user (UID 999)


def redis_conf(password: str, data_dir: str = REDIS_DATA_DIR, max_memory_mb: int = 192) -> str:
    return "\n".join(
        [
            f"requirepass {password}",
            f"dir {data_dir}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            f"maxmemory {max_memory_mb}mb",
            "maxmemory-policy noeviction",
            "",
        ]
    )


def redis_url(password: str, host: str, port: int) -> str:
    return f"redis://:{password}@{host}:{port}/0"
