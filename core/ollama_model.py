"""What the Ollama pod calls its model: the name as Ollama parses it, where its manifest lives, and
the derived model the gateway serves with a thread count that fits the container's CPU limit.

Pure: no Pulumi import. Mirrors ollama/ollama v0.12.6:
- `types/model/name.go` (`ParseName`, `isValidPart`, `Filepath`): `[host/][namespace/]model[:tag]`,
  defaults `registry.ollama.ai`, `library`, `latest`. There is no digest part in 0.12.6 ("the
  digest check has been removed"): a model cannot be pulled as `name@sha256:…`, so a pin is a check
  of what was pulled (`ollama.modelDigest`).
- `server/manifest.go` (`ParseNamedManifest`): a model's digest (`ollama list`'s ID, `/api/tags`'
  `digest`) is the sha256 of its manifest file, `$OLLAMA_MODELS/manifests/<host>/<ns>/<model>/<tag>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
# The tag suffix of the model the init container derives (`ollama create`) for the gateway.
SERVED_TAG_SUFFIX = "-llm-gateway"

_FIRST = r"[A-Za-z0-9_]"
_PART_PATTERNS = {
    "host": (re.compile(_FIRST + r"[A-Za-z0-9_.:-]*"), 350),
    "namespace": (re.compile(_FIRST + r"[A-Za-z0-9_-]*"), 80),
    "model": (re.compile(_FIRST + r"[A-Za-z0-9_.-]*"), 80),
    "tag": (re.compile(_FIRST + r"[A-Za-z0-9_.-]*"), 80),
}
_QUANTITY_UNITS = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


@dataclass(frozen=True)
class OllamaName:
    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, name: str) -> OllamaName:
        """`ParseName`: the tag after the last ':' that follows the last '/', then model, namespace, host."""
        rest, tag = name, DEFAULT_TAG
        if rest.rfind(":") > rest.rfind("/"):
            rest, tag = rest.rsplit(":", 1)
        parts = rest.split("/")
        if len(parts) > 3:  # name.go keeps everything before the namespace as the host
            parts = ["/".join(parts[:-2]), *parts[-2:]]
        model = parts[-1]
        namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
        host = parts[-3].split("://", 1)[-1] if len(parts) == 3 else DEFAULT_HOST
        return cls(host, namespace, model, tag)

    def problem(self) -> str | None:
        """Why Ollama would refuse this name (`IsFullyQualified`), or None."""
        for kind in ("host", "namespace", "model", "tag"):
            value = getattr(self, kind)
            pattern, longest = _PART_PATTERNS[kind]
            if not 1 <= len(value) <= longest or not pattern.fullmatch(value):
                return f"its {kind} {value!r} is not one Ollama accepts (types/model/name.go)"
        return None

    @property
    def manifest_path(self) -> str:
        """Relative to $OLLAMA_MODELS, as `Name.Filepath` lays it out."""
        return f"manifests/{self.host}/{self.namespace}/{self.model}/{self.tag}"

    def with_tag(self, tag: str) -> OllamaName:
        return OllamaName(self.host, self.namespace, self.model, tag)

    def __str__(self) -> str:
        """The shortest form Ollama displays (`DisplayShortest`)."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"


def served_model(model: str) -> str:
    """The derived model the gateway, the warm-up and the readiness probe all call: the pulled
    model plus `PARAMETER num_thread` (see components/ollama.py for why a derived model)."""
    name = OllamaName.parse(model)
    return str(name.with_tag(name.tag + SERVED_TAG_SUFFIX))


def model_problem(model: str) -> str | None:
    """Why the Ollama pod could not pull or derive `model`, or None."""
    if "@" in model:
        return (
            "Ollama 0.12.6 cannot pull a model by digest (types/model/name.go has no digest part); "
            "give the name and tag, and pin the digest with ollama.modelDigest"
        )
    name = OllamaName.parse(model)
    return name.problem() or OllamaName.parse(served_model(model)).problem()


def quantity_value(quantity: str) -> Decimal:
    """A Kubernetes quantity as a number: cores for CPU ("500m" → 0.5), bytes for memory ("3Gi")."""
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", quantity).groups()
    return Decimal(number) * _QUANTITY_UNITS[unit]


def threads_for_cpu_limit(cpu: str) -> int:
    """Whole cores in a Kubernetes CPU quantity, rounded down, at least 1 ("3500m" → 3, "500m" → 1)."""
    return max(1, int(quantity_value(cpu)))
