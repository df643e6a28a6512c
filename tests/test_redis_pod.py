"""The deployed Redis as its pod would run it: the rendered Deployment under bubblewrap.

From the Redis Deployment the program registers (under mocks): the container's UID and GID in a
user namespace, a read-only root, the config Secret laid out as the kubelet lays out a secret
volume, the data volume (a tmpfs here, a PVC there), the container's env (`REDISCLI_AUTH` resolved
from the Secret), its own network namespace, and the container's args after the image's entrypoint
(docker-library/redis 7.0 `docker-entrypoint.sh`: a lone `*.conf` argument becomes
`redis-server <file>`; as a non-root user it skips its chown-and-gosu step). Then the pod's own
probe commands, inside the sandbox, as the kubelet execs them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from drill.pod import bubblewrap, container_environment, container_sandbox, service_environment, volume_args
from pulumi_harness import DEPLOYMENT, SECRET, SERVICE, auto_name, run_program

pytestmark = pytest.mark.skipif(
    bubblewrap() is None or shutil.which("redis-server") is None,
    reason="bubblewrap and redis-server are installed by scripts/test",
)


def redis_pod():
    run = run_program({"redis": {"mode": "deploy"}}, {"openaiApiKey": "sk-redis-pod"})
    deployment = run.one(DEPLOYMENT, "redis").inputs
    spec = deployment["spec"]["template"]["spec"]
    secrets = {auto_name(r.name): r.inputs["stringData"] for r in run.of_type(SECRET)}
    links = service_environment(spec, deployment["metadata"]["namespace"], [r.inputs for r in run.of_type(SERVICE)])
    return spec, secrets, links


def sandbox(spec: dict, secrets: dict, links: dict, script: str, workdir: Path) -> list[str]:
    """The container's sandbox (drill/pod.py) in its own network namespace, running `script`."""
    container = spec["containers"][0]
    environment = container_environment(container, secrets, service_env=links)
    volumes = volume_args(spec, container, lambda name: {}, secrets, workdir)  # the data claim: an empty tmpfs
    command = container_sandbox(spec, container, environment, volumes)
    # The pod's /tmp: the script's own log (Redis itself writes nothing outside /data).
    return [*command, "--unshare-net", "--tmpfs", "/tmp", "--chdir", "/data", "/bin/sh", "-c", script]


def test_redis_starts_as_its_pod_passes_its_probes_and_writes_only_its_volume():
    spec, secrets, links = redis_pod()
    container = spec["containers"][0]
    (argument,) = container["args"]
    assert spec["securityContext"]["runAsNonRoot"] and container["securityContext"]["runAsNonRoot"]
    assert argument.endswith(".conf")  # what the image's entrypoint turns into `redis-server <file>`
    probe = container["readinessProbe"]["exec"]["command"]
    script = f"""
redis-server {argument} > /tmp/redis.log 2>&1 &
started=no
for attempt in $(seq 1 100); do
  if {" ".join(f"'{word}'" for word in probe)}; then started=yes; break; fi
  sleep 0.1
done
echo "probe: $started"
echo "user: $(id -u)"
echo "anonymous: $(env -u REDISCLI_AUTH redis-cli ping 2>&1 | head -c 40)"
redis-cli set guard-check 1 > /dev/null
sleep 1.2
echo "aof: $(ls /data/appendonlydir 2>/dev/null | tr '\\n' ' ')"
echo "root writable: $( (touch /written-by-redis-pod 2>/dev/null && echo yes) || echo no)"
redis-cli shutdown nosave > /dev/null 2>&1
"""
    with tempfile.TemporaryDirectory(prefix="llm-gateway-redis-pod-") as workdir:
        command = sandbox(spec, secrets, links, script, Path(workdir))
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    report = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    print(f"\n[redis pod] {report}\n{result.stderr[-500:]}")
    assert report["probe"] == "yes"  # readiness: redis-cli ping with REDISCLI_AUTH from the Secret
    assert report["user"] == str(spec["securityContext"]["runAsUser"]) == "999"
    assert "NOAUTH" in report["anonymous"]  # no password, no answer
    assert "appendonly" in report["aof"]  # the append-only file is on the data volume
    assert report["root writable"] == "no"
