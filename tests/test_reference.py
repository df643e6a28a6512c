"""One declaration per setting: the README tables, the JSON Schema and Pulumi.yaml's `config:` are
generated from core/settings.py, and the schema says what the parser says."""

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core.declarations import ConfigError, declared_fields
from core.names import config_key
from core.reference import SCHEMA, project_config, stack_schema
from core.settings import Settings, parse_settings
from core.stack_files import ROOT, stack_files

VALIDATOR = jsonschema.Draft202012Validator(stack_schema())


def test_generated_files_match_the_declarations():
    result = subprocess.run(
        [sys.executable, "-m", "core.reference", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(SCHEMA.read_text()) == stack_schema()


def test_the_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(stack_schema())


@pytest.mark.parametrize("path", stack_files(), ids=lambda p: p.name)
def test_every_stack_file_in_the_repo_validates_against_the_schema(path):
    VALIDATOR.validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"llm-gateway:vllm": {"replicaz": 1}}, "replicaz"),
        ({"llm-gateway:vllm": {"replicas": -1}}, "-1"),
        ({"llm-gateway:gamingMod": True}, "gamingMod"),
        ({"llm-gateway:openaiApiKey": "sk-in-clear"}, "openaiApiKey"),
        ({"llm-gateway:vllm": {"image": "vllm/vllm-openai:latest"}}, "latest"),
    ],
)
def test_the_schema_rejects_what_the_parser_rejects_in_a_stack_file(config, where):
    errors = list(VALIDATOR.iter_errors({"config": config}))
    assert errors and any(where in (str(e.instance) + str(e.path) + e.message) for e in errors)


def test_other_namespaces_in_a_stack_file_are_left_alone():
    VALIDATOR.validate({"config": {"kubernetes:context": "kind-dev"}})


def test_pulumi_yaml_declares_only_what_pulumi_can_type_and_never_requires_a_key():
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert declared == project_config()
    assert declared, "the top-level scalars should be declared"
    for key, declaration in declared.items():
        assert declaration["type"] in ("string", "integer", "boolean", "array"), key
        # A declared key without a default must be set in every stack: none may be.
        assert "default" in declaration, key
        assert parse_settings({key: declaration["default"]}, openai_key="secret") == parse_settings(
            {}, openai_key="secret"
        ), f"{key}: Pulumi.yaml's default differs from the program's"


def test_every_declared_setting_has_a_description():
    def walk(cls):
        for key, item in declared_fields(cls):
            assert item.metadata["doc"].strip(), key
            check = item.metadata["check"]
            if hasattr(check, "cls"):
                walk(check.cls)

    walk(Settings)


# Values that probe types and bounds: the schema and the parser must agree on each of them.
# (Two known differences stay out: a whole float such as 2.0 is an integer to JSON Schema, and
# a pattern's `$` accepts a trailing newline in Python's `re.search`.)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    st.sampled_from(["", "2", "true", "yes", "500m", "8Gi", "lots", "qwen2.5:3b", "a b", "x" * 70, "sha256:abc"]),
    st.lists(st.sampled_from(["--x", "", 1]), max_size=2),
    st.dictionaries(st.sampled_from(["cpu", "memory", "requests", "gpu", "key"]), st.just("1"), max_size=2),
)
FIELDS = {
    "vllm": ["replicas", "gpuCount", "model", "image", "imageDigest", "timeoutSeconds", "stallTimeoutSeconds",
             "nodeSelector", "extraArgs", "cacheSize", "resources", "replicaz"],
    "gateway": ["replicas", "modelName", "numRetries", "metrics", "databasePort", "resources"],
    "openai": ["enabled", "apiBase", "rpm", "maxBudgetUsd", "budgetPeriod"],
    "ingress": ["kind", "className", "annotations"],
}  # fmt: skip
CONFIGS = st.one_of(
    st.dictionaries(st.sampled_from(["namespace", "gamingMode", "networkPolicies", "renderYamlToDirectory"]), VALUES),
    *[
        st.fixed_dictionaries({top: st.dictionaries(st.sampled_from(keys), VALUES, max_size=3)})
        for top, keys in FIELDS.items()
    ],
)


@hypothesis_settings(max_examples=400, deadline=None)
@given(CONFIGS)
def test_the_schema_and_the_parser_agree(config):
    try:
        parse_settings(config, openai_key="secret")
        parser_ok = True
    except ConfigError as error:
        if error.cross_field:
            return  # one value against another: the parser's own rule
        parser_ok = False
    stack_file = {"config": {config_key(key): value for key, value in config.items() if value is not None}}
    nested_none = any(isinstance(v, dict) and None in v.values() for v in config.values())
    if nested_none:
        return  # an unset (null) nested key means "default" to the parser; YAML files do not write it
    assert VALIDATOR.is_valid(stack_file) == parser_ok, config
