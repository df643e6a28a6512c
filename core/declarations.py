"""How a stack setting is declared once, and everything derived from that one declaration.

Pure: no Pulumi import. A settings class is a frozen dataclass whose fields are declared with
`setting(default, check, doc)`. From those fields come:
- the parser (`parse_object`): every key read and checked, unknown keys refused with a did-you-mean,
  nested objects filled from the field's own default, then the class's cross-field `check`;
- the JSON Schema of the stack configuration (`json_schema`);
- the README's configuration rows (`doc_rows`).
The config key is the field name in camelCase (`gpu_count` → `gpuCount`) unless a field says
otherwise. Each check is a small object that parses a value and describes itself twice: as JSON
Schema and in words for the README. Errors name the full key, the value and the fix (ConfigError).

Why not pydantic: its errors would need a translation layer per error type to keep naming
`llm-gateway:<key>`, the value and the fix; its lax mode coerces "2" and 2.0 into 2, which this
project refuses ("unquoted"); and its strict mode refuses the "true"/"false" strings Pulumi hands a
program for top-level booleans. These checks are short, and give the schema and the docs too.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from core.names import config_key


class ConfigError(ValueError):
    """A stack-config value is wrong. The message names the key, the value and the fix."""

    def __init__(self, key: str, value: Any, fix: str, *, state: str | None = None) -> None:
        self.key = config_key(key)
        self.value = value
        self.fix = fix
        self.cross_field = False
        # `state` replaces the value where it must not be shown (a secret) or does not exist.
        problem = state or f"= {_shown(value)} is invalid"
        # A key can be user input too (an unknown one, any length): shown shortened, like values.
        shown_key = self.key if len(self.key) <= 120 else self.key[:117] + "..."
        super().__init__(f"{shown_key} {problem}: {fix}")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."


EMPTY_MAP: Mapping[str, str] = MappingProxyType({})


# ---------------------------------------------------------------------------------------------
# Checks: parse one value; describe it as JSON Schema and in words
# ---------------------------------------------------------------------------------------------


class Check:
    schema: ClassVar[dict[str, Any]] = {}
    words = ""

    def __call__(self, key: str, value: Any) -> Any:
        raise NotImplementedError


class Whole(Check):
    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.schema = {"type": "integer", "minimum": low, "maximum": high}
        self.words = f"{low} to {high}"

    def __call__(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, f"expected a whole number from {self.low} to {self.high}, unquoted")
        if not self.low <= value <= self.high:
            raise ConfigError(key, value, f"expected a whole number from {self.low} to {self.high}")
        return value


class Amount(Check):
    """A positive decimal number (dollars)."""

    def __init__(self, high: float, unit: str) -> None:
        self.high, self.unit = high, unit
        self.schema = {"type": "number", "exclusiveMinimum": 0, "maximum": high}
        self.words = f"above 0, at most {high:g}"

    def __call__(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= self.high:
            raise ConfigError(
                key, value, f"expected an amount in {self.unit} above 0 and at most {self.high:g}, unquoted"
            )
        return float(value)


class Flag(Check):
    # Top-level scalars reach a Pulumi program as the strings "true" / "false".
    schema: ClassVar[dict[str, Any]] = {"enum": [True, False, "true", "false"]}
    words = "`true` / `false`"

    def __call__(self, key: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise ConfigError(key, value, "expected true or false")


class Text(Check):
    """A string matching `pattern` (written so that Python and JSON Schema read it alike)."""

    def __init__(self, pattern: str, what: str, forbidden: tuple[str, str] | None = None) -> None:
        self.pattern = re.compile(pattern)
        self.what = what
        # (a pattern the value must not match anywhere, the fix to show when it does)
        self.forbidden = forbidden
        self.schema = {"type": "string", "pattern": f"^(?:{pattern})$"}
        if forbidden:
            self.schema["not"] = {"pattern": forbidden[0]}
        self.words = what

    def __call__(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise ConfigError(key, value, f"expected {self.what}")
        if self.forbidden and re.search(self.forbidden[0], value):
            raise ConfigError(key, value, self.forbidden[1])
        return value


class OneOf(Check):
    def __init__(self, *allowed: str) -> None:
        self.allowed = allowed
        self.schema = {"enum": list(allowed)}
        self.words = " / ".join(f"`{item}`" for item in allowed)

    def __call__(self, key: str, value: Any) -> str:
        if value not in self.allowed:
            raise ConfigError(key, value, f"expected one of: {', '.join(self.allowed)}")
        return value


class ListOf(Check):
    def __init__(self, item: Check, most: int = 32) -> None:
        self.item, self.most = item, most
        self.schema = {"type": "array", "items": item.schema, "maxItems": most}
        self.words = f"list of {item.words}, at most {most}"

    def __call__(self, key: str, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ConfigError(key, value, "expected a list")
        if len(value) > self.most:
            raise ConfigError(key, value, f"at most {self.most} entries")
        return tuple(self.item(f"{key}[{index}]", entry) for index, entry in enumerate(value))


_MAP_KEY = r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"


class KeyedStrings(Check):
    """A map from Kubernetes-style keys (labels, annotations) to string values."""

    def __init__(self, kind: str, value: Text, longest: int, value_fix: str) -> None:
        self.kind, self.value, self.longest, self.value_fix = kind, value, longest, value_fix
        self.schema = {
            "type": "object",
            "propertyNames": {"pattern": f"^{_MAP_KEY}$", "maxLength": 316},
            "additionalProperties": {**value.schema, "maxLength": longest},
        }
        self.words = f"map of {kind}s"

    def __call__(self, key: str, value: Any) -> Mapping[str, str]:
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, f"expected an object of {self.kind} keys to string values")
        for name, item in value.items():
            if not isinstance(name, str) or len(name) > 316 or not re.fullmatch(_MAP_KEY, name):
                raise ConfigError(f"{key}.{name}", item, f"invalid {self.kind} key")
            if not isinstance(item, str) or len(item) > self.longest or not self.value.pattern.fullmatch(item):
                raise ConfigError(f"{key}.{name}", item, self.value_fix)
        return MappingProxyType(dict(value))


class Nested(Check):
    """An object whose keys are the fields of a settings dataclass. `optional`: unset stays None
    (one of several kinds of object, e.g. a tier's `vllm` or `ollama`), instead of the defaults."""

    def __init__(self, cls: type, optional: bool = False) -> None:
        self.cls = cls
        self.optional = optional
        self.words = "object"

    @property
    def schema(self) -> dict[str, Any]:  # type: ignore[override]
        return object_schema(self.cls, self.cls())

    def __call__(self, key: str, value: Any, default: Any = None) -> Any:
        return parse_object(self.cls, key, value, default)


def _json_object(key: str, value: Any, what: str = "an object") -> Any:
    """Object-valued top-level keys reach a Pulumi program as JSON text; tests may pass dicts."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ConfigError(key, value, f"expected {what} (set it with `pulumi config set --path`)") from None
    return value


# ---------------------------------------------------------------------------------------------
# The kinds of value this project uses (each a check, a JSON Schema fragment and README words)
# ---------------------------------------------------------------------------------------------

DNS_LABEL = Text(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", "a DNS label: lowercase letters, digits and '-', at most 63")
QUANTITY = Text(
    r"([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?",
    'a Kubernetes quantity such as "500m", "2", "8Gi"',
)
# Model names go into YAML, URLs and command lines: printable ASCII without spaces or quotes.
MODEL = Text(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}", "a model name: ASCII letters, digits and ._:/@+- (no spaces)")
IMAGE = Text(
    r"[a-z0-9][a-z0-9._/-]*(:[0-9]+)?[a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
    '"repository:tag" with an exact tag',
    forbidden=(r":(latest|main|stable|nightly)$", "pin an exact version tag; moving tags change under you"),
)
DIGEST = Text(r"sha256:[0-9a-f]{64}", 'an image digest "sha256:" followed by 64 hex digits, or leave it unset')
MODEL_DIGEST = Text(
    r"sha256:[0-9a-f]{64}",
    'the model\'s digest "sha256:" followed by 64 hex digits (the pull-model log prints it), or leave it unset',
)
PRINTABLE = Text(r"[\x21-\x7e]{1,253}", "a non-empty string of printable ASCII without spaces")
HTTPS_URL = Text(r"https://[A-Za-z0-9.-]+(:[0-9]+)?(/[\x21-\x7e]*)?", "an https:// URL")
HOSTNAME = Text(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*",
    "a DNS host name such as llm.example.com",
)
DIRECTORY = Text(
    r"[A-Za-z0-9._/~-]{1,255}",
    "a directory path (letters, digits, ._/~-; no '..')",
    forbidden=(r"(^|/)\.\.(/|$)", "expected a directory path (letters, digits, ._/~-; no '..')"),
)
ARGUMENT = Text(r"[\x20-\x7e]{1,200}", "a command-line argument: printable ASCII, 1-200 chars")
LABEL_VALUE = Text(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", "a label value")
LABELS = KeyedStrings("label", LABEL_VALUE, 63, "expected a label value string (quote numbers)")
ANNOTATIONS = KeyedStrings(
    "annotation", Text(r"[\s\S]*", "a string"), 4096, "expected a string value (quote numbers and booleans)"
)

# ---------------------------------------------------------------------------------------------
# Declaring a field
# ---------------------------------------------------------------------------------------------


def setting(default: Any, check: Check, doc: str, *, key: str | None = None) -> Any:
    """A settings field: its default, how a value is checked, and a one-line description."""
    metadata = {"check": check, "doc": doc, "key": key}
    if isinstance(check, Nested) and default is None and not check.optional:
        return dataclasses.field(default_factory=check.cls, metadata=metadata)
    if isinstance(default, Mapping):  # a read-only map, but unhashable: dataclasses want a factory
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def derived(default: Any) -> Any:
    """A field the program fills in itself (never a config key)."""
    return dataclasses.field(default=default, metadata={"derived": True})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def declared_fields(cls: type) -> Iterator[tuple[str, dataclasses.Field]]:
    """(config key, field) for every declared field of a settings class, in declaration order."""
    for item in dataclasses.fields(cls):
        if "check" in item.metadata:
            yield item.metadata["key"] or _camel(item.name), item


def _path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def parse_object(cls: type, path: str, raw: Any, default: Any = None, also_known: tuple[str, ...] = ()) -> Any:
    """Read one config object into `cls`: each declared key checked, a missing key taken from
    `default` (the enclosing default's value), unknown keys refused, then `cls.check` if any.
    `also_known` are keys read elsewhere (secrets): not refused, and offered as did-you-means."""
    if not isinstance(raw, Mapping):
        raise ConfigError(path, raw, "expected an object of keys and values (a YAML mapping)")
    default = default if default is not None else cls()
    values: dict[str, Any] = {}
    known = list(also_known)
    for key, item in declared_fields(cls):
        known.append(key)
        value = raw.get(key)
        if value is None:
            continue
        check = item.metadata["check"]
        if isinstance(check, Nested | ListOf) and not path:
            value = _json_object(key, value, "an object" if isinstance(check, Nested) else "a list")
        if isinstance(check, Nested):
            values[item.name] = check(_path(path, key), value, getattr(default, item.name))
        else:
            values[item.name] = check(_path(path, key), value)
    for name in raw:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise ConfigError(
                _path(path, str(name)), raw[name], f"unknown key; {hint}known keys here: {', '.join(sorted(known))}"
            )
    parsed = dataclasses.replace(default, **values)
    cross_check: Callable[[str], None] | None = getattr(parsed, "check", None)
    if cross_check is not None:
        try:
            cross_check(path)
        except ConfigError as error:
            error.cross_field = True  # one value against another: beyond what the JSON Schema says
            raise
    return parsed


# ---------------------------------------------------------------------------------------------
# What the declarations give: JSON Schema and documentation rows
# ---------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A default as JSON data (tuples → lists, maps → dicts, dataclasses → their declared keys)."""
    if dataclasses.is_dataclass(value):
        return {key: plain(getattr(value, item.name)) for key, item in declared_fields(type(value))}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def object_schema(cls: type, default: Any) -> dict[str, Any]:
    properties = {}
    for key, item in declared_fields(cls):
        check = item.metadata["check"]
        value = getattr(default, item.name)
        schema = object_schema(check.cls, value or check.cls()) if isinstance(check, Nested) else dict(check.schema)
        schema["description"] = item.metadata["doc"]
        if value is not None:
            schema["default"] = plain(value)
        properties[key] = schema
    return {"type": "object", "properties": properties, "additionalProperties": False}


def doc_rows(cls: type, default: Any, parent: str = "") -> Iterator[tuple[str, Any, str, str]]:
    """(full key, default, allowed values in words, description) for every leaf setting."""
    for key, item in declared_fields(cls):
        check = item.metadata["check"]
        value = getattr(default, item.name)
        if isinstance(check, Nested):
            yield from doc_rows(check.cls, value or check.cls(), _path(parent, key))
            continue
        yield _path(parent, key), value, check.words, item.metadata["doc"]
        if isinstance(check, ListOf) and isinstance(check.item, Nested) and _documented_items(check.item.cls):
            yield from doc_rows(check.item.cls, check.item.cls(), f"{_path(parent, key)}[]")


def _documented_items(cls: type) -> bool:
    """A list's item object gets rows of its own (`chains[].tiers[].vllm.model`) if it says so."""
    return getattr(cls, "DOCUMENT_ITEMS", False)


def key_path(root: type, cls: type, field_name: str, parent: str = "") -> str | None:
    """The config key of `cls.field_name` wherever `cls` sits under `root` ("vllm.imageDigest")."""
    for key, item in declared_fields(root):
        path = _path(parent, key)
        if root is cls and item.name == field_name:
            return path
        check = item.metadata["check"]
        if isinstance(check, Nested):
            found = key_path(check.cls, cls, field_name, path)
            if found:
                return found
    return None
