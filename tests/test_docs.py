"""The docs cannot drift silently: every setting key (qualified, dotted, a bare camelCase leaf, a
stack file's YAML), repository path, root file, plugin and `-m` module they name exists, every link
between pages resolves, the plugin lists name every plugin the ConfigMap ships, and every generated
block holds a generated table.

Pure and fast: reads the Markdown pages and the declarations, runs nothing else.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from components.monitoring import DASHBOARD_FILE
from core.names import CONFIG_FILE_NAME, GATEWAY_MODULES, PROJECT
from core.observability import alert_rules
from core.reference import MONITORING_PAGE, _every_alert_on, setting_keys
from core.stack_files import ROOT
from drill import benchmark, demo
from tests import created_resources

PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])

# `llm-gateway:vllm.replicas`, `--path 'llm-gateway:ingress.annotations["x"]'`, a stack file's
# `llm-gateway:alerts:`. Not the component type tokens (`llm-gateway:index:X`) nor placeholders.
QUALIFIED_KEY = re.compile(rf"{PROJECT}:(?!index:)([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)*)")
# A bare key in backticks whose first part is a settings object: `vllm.replicas`, `redis.mode`.
SETTING_OBJECTS = sorted({key.split(".")[0] for key in setting_keys() if "." in key and "[" not in key.split(".")[0]})
BARE_KEY = re.compile(rf"`((?:{'|'.join(SETTING_OBJECTS)})\.[A-Za-z][A-Za-z0-9.]*)`")
# A path in this repository: starts with one of its top-level directories, or is a stack file.
TRACKED = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
TOP_DIRECTORIES = sorted({line.split("/")[0] for line in TRACKED.splitlines() if "/" in line})
REPO_PATH = re.compile(
    rf"(?<![\w./:-])((?:{'|'.join(re.escape(d) for d in TOP_DIRECTORIES)})/[\w.*/-]*[\w*/]|Pulumi\.\w+\.yaml)"
)
# Keys the docs name on purpose although no setting has them, and why.
NOT_SETTINGS = {
    "vllm.replicaz": "the example of a typo the parser refuses",
    "gateway.databaseUrl": "why the database URL is a top-level secret instead",
}
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A bare camelCase name in backticks (`gamingMode`, `memoryPerContextToken`): a setting's leaf, or
# one of the names below. Checked against every part of every declared key.
CAMEL_CASE = re.compile(r"`([a-z][a-z0-9]*[A-Z][A-Za-z0-9]*)`")
STACK_OUTPUTS = set(re.findall(r'pulumi\.export\("(\w+)"', (ROOT / "__main__.py").read_text()))
# camelCase names the docs use on purpose although no setting has them: other tools' fields.
NOT_SETTING_LEAVES = {
    **dict.fromkeys(
        ["emptyDir", "postStart", "preStop", "runAsGroup", "runAsUser", "seccompProfile", "secretKeyRef"],
        "Kubernetes pod fields",
    ),
    "terminationGracePeriodSeconds": "a Kubernetes pod field",
    "embedApiKey": "an example key a chain's cloud tier names for its secret (`apiKey`)",
    "enableSecretMutable": "a pulumi-kubernetes provider option",
    "enableConfigMapMutable": "a pulumi-kubernetes provider option",
    "responseHeaderTimeout": "a Traefik setting",
    **dict.fromkeys(
        ["ruleSelector", "ruleSelectorNilUsesHelmValues", "serviceMonitorSelectorNilUsesHelmValues"],
        "kube-prometheus-stack values",
    ),
}
# A bare file name in backticks (`request_check.py`, `constraints.txt`): a file of the tree, or a
# file the program writes into a ConfigMap.
BARE_FILE = re.compile(r"`([\w-][\w.-]*\.(?:py|txt|ya?ml|toml|json|md|sh|cfg|png))`")
TRACKED_NAMES = {Path(line).name for line in TRACKED.splitlines()}
CONFIG_MAP_FILES = {CONFIG_FILE_NAME, DASHBOARD_FILE}
# `python -m drill.load`: a module of this repository (its first part a top-level directory).
MODULE = re.compile(r"-m ([A-Za-z_][\w.]*)")
PLACEHOLDER = "No run has written this block yet"
GENERATED_BLOCK = re.compile(r"<!-- generated:([\w-]+) -->\n(.*?)<!-- /generated:\1 -->", re.S)


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _known(key: str, known: set[str]) -> bool:
    """A declared key, an object of declared keys (`gateway`), or an entry of a declared map
    (`ingress.annotations["nginx…"]` is matched up to the bracket)."""
    return key in known or key in NOT_SETTINGS or any(k.startswith(key + ".") for k in known)


def _mentioned_keys(text: str) -> set[str]:
    return set(QUALIFIED_KEY.findall(text)) | set(BARE_KEY.findall(text))


def _setting_name_parts() -> set[str]:
    return {part for key in setting_keys() for part in key.split(".")}


def _stack_yaml_keys(text: str) -> set[str]:
    """The setting keys a ```yaml block of a stack file names, nested keys included
    (`llm-gateway:alerts:` → `enabled:` is `alerts.enabled`); a declared key's value (a map such as
    `ruleLabels`) is the user's, not a key."""
    declared, found = set(setting_keys()), set()

    def walk(key: str, value) -> None:
        found.add(key)
        if key not in declared and isinstance(value, dict):
            for child, child_value in value.items():
                walk(f"{key}.{child}", child_value)

    for block in re.findall(r"```ya?ml\n(.*?)```", text, flags=re.S):
        config = (yaml.safe_load(block) or {}).get("config") or {}
        for qualified, value in config.items():
            if str(qualified).startswith(f"{PROJECT}:"):
                walk(str(qualified).split(":", 1)[1], value)
    return found


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped except '-' and '_', spaces to '-'."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def _resolves(page: Path, target: str) -> bool:
    if re.match(r"[a-z]+:", target):
        return True  # https:, mailto: — outside the repository
    file_part, _, anchor = target.partition("#")
    linked = (page.parent / file_part).resolve() if file_part else page
    if not linked.exists():
        return False
    return not anchor or linked.suffix != ".md" or anchor in _anchors(linked)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_setting_key_the_docs_name_is_declared(page):
    known = set(setting_keys())
    unknown = sorted(key for key in _mentioned_keys(page.read_text()) if not _known(key, known))
    assert not unknown, f"{_page_id(page)} names settings core/settings.py does not declare: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_bare_camel_case_name_the_docs_name_is_a_setting(page):
    """`gamingMode`, `memoryPerContextToken`: a renamed setting left behind in the prose fails here."""
    known = _setting_name_parts() | STACK_OUTPUTS | set(NOT_SETTING_LEAVES)
    unknown = sorted(set(CAMEL_CASE.findall(page.read_text())) - known)
    assert not unknown, f"{_page_id(page)} names camelCase settings core/settings.py does not declare: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_key_of_a_stack_file_in_the_docs_is_declared(page):
    known = set(setting_keys())
    unknown = sorted(key for key in _stack_yaml_keys(page.read_text()) if not _known(key, known))
    assert not unknown, f"{_page_id(page)} has a stack file with keys the declarations do not have: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_bare_file_name_the_docs_name_exists(page):
    """`constraints.txt`, `request_check.py`: a file of the tree (by name) or of a ConfigMap."""
    names = set(BARE_FILE.findall(page.read_text()))
    missing = sorted(name for name in names - TRACKED_NAMES - CONFIG_MAP_FILES if "<" not in name)
    assert not missing, f"{_page_id(page)} names files this checkout does not have: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_module_the_docs_run_exists(page):
    """`python -m drill.load`: a module of this repository that a rename would leave behind."""
    ours = [m for m in set(MODULE.findall(page.read_text())) if m.split(".")[0] in TOP_DIRECTORIES]
    missing = sorted(m for m in ours if not (ROOT / f"{m.replace('.', '/')}.py").exists())
    assert not missing, f"{_page_id(page)} runs modules this checkout does not have: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_generated_block_holds_a_generated_table(page):
    """A block still holding its placeholder has figures no run wrote (for docs/benchmark.md, run
    `.venv/bin/python -m drill.benchmark --write` on a quiet machine)."""
    unwritten = sorted(name for name, body in GENERATED_BLOCK.findall(page.read_text()) if PLACEHOLDER in body)
    assert not unwritten, f"{_page_id(page)} has generated blocks no run has written: {unwritten}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_repository_path_the_docs_name_exists(page):
    text = page.read_text()
    missing = sorted(
        path for path in set(REPO_PATH.findall(text)) if "<" not in path and not list(ROOT.glob(path.rstrip("/")))
    )
    assert not missing, f"{_page_id(page)} names paths this checkout does not have: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_link_between_pages_resolves(page):
    broken = [target for target in LINK.findall(page.read_text()) if not _resolves(page, target)]
    assert not broken, f"{_page_id(page)} has links that do not resolve: {broken}"


def _layout() -> str:
    """The fenced block under the heading "Layout" (docs/development.md)."""
    for page in PAGES:
        found = re.search(r"^#+ Layout\n.*?```\n(.*?)```", page.read_text(), flags=re.S | re.M)
        if found:
            return found.group(1)
    raise AssertionError("no page has a Layout section")


def test_the_layout_names_every_module_of_the_program_and_the_gateway():
    """The layout is hand-written; a module added without a line there fails here (it once left
    out request_check.py and spoke of "three components" when there were six)."""
    layout = _layout()
    modules = [*(ROOT / "components").glob("*.py"), *(ROOT / "core").glob("*.py"), *(ROOT / "gateway").glob("*.py")]
    missing = sorted(str(m.relative_to(ROOT)) for m in modules if m.stem != "__init__" and m.name not in layout)
    assert not missing, f"the layout does not name: {missing}"
    shipped = {module.name for module in GATEWAY_MODULES}
    assert shipped <= set(re.findall(r"\w+\.py", layout)), "the layout leaves out a plugin the ConfigMap ships"


def test_the_table_of_what_pulumi_up_creates_is_the_programs_own():
    """docs/deploying.md's table comes from the mock run; a resource added without regenerating fails."""
    assert created_resources.PAGE.read_text() == created_resources.rendered(), (
        "docs/deploying.md is out of date: run .venv/bin/python -m tests.created_resources"
    )


def test_the_demo_draws_its_picture_where_git_ignores_it():
    """`bash scripts/demo` must leave the checkout clean: its picture goes to an ignored path."""
    relative = demo.PICTURE.relative_to(ROOT)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(relative)], cwd=ROOT)
    assert ignored.returncode == 0, f"{relative} is not git-ignored: the demo would dirty the checkout"
    assert demo.DOCS_PICTURE.exists()  # the README's picture, refreshed only with --refresh-picture


def test_the_alert_table_names_every_alert_the_rules_can_hold():
    """docs/monitoring.md's table comes from core/observability.py (it once left out
    `LlmGatewayVllmProgressBlind`)."""
    page = MONITORING_PAGE.read_text()
    missing = [rule["alert"] for rule in alert_rules(_every_alert_on()) if f"\n| `{rule['alert']}`" not in page]
    assert not missing, f"docs/monitoring.md's alert table leaves out {missing}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("`pulumi config set --path llm-gateway:vllm.replicaz 2`", {"vllm.replicaz"}),
        ("set `ollama.modle`", {"ollama.modle"}),
        ("`llm-gateway:index:VllmBackend`, `vllm_progress.py`", set()),
    ],
)
def test_the_key_finder_sees_keys_in_both_spellings(text, expected):
    assert _mentioned_keys(text) == expected


def test_the_benchmark_writes_its_own_table_with_date_and_machine(tmp_path):
    """`drill.benchmark --write` replaces its block in docs/benchmark.md: figures never copied by hand."""
    page = tmp_path / "benchmark.md"
    page.write_text(benchmark.BENCHMARK_PAGE.read_text())
    rows = ["| measurement | figure |", "|---|---|", "| failover, refused vLLM | first 0.045 s |"]
    benchmark.write_table(rows, "benchmark", page)
    block = page.read_text().split("<!-- generated:benchmark -->\n")[1].split("<!-- /generated:benchmark -->")[0]
    assert block.startswith("Run of ") and f"{os.cpu_count()} cores" in block and "LiteLLM 1." in block
    assert block.endswith("| failover, refused vLLM | first 0.045 s |\n")
    assert "<!-- generated:benchmark-trials -->" in page.read_text()  # the trials' block is left alone


def test_a_full_benchmark_run_writes_both_blocks_with_targets(tmp_path):
    """A full `--write` fills the trials' block too, and every row keeps its target column."""
    page = tmp_path / "benchmark.md"
    page.write_text(benchmark.BENCHMARK_PAGE.read_text())
    trials = [benchmark.row("overhead, as deployed, c=1", "p50 11.0 ms / p99 20.0 ms added", "p50 ≤ 10 ms added")]
    rows = [benchmark.row("recovery after a hang (vLLM back → served by vLLM)", "9.6 s", benchmark.RECOVERY_TARGET)]
    benchmark.write_run(trials, rows, page)
    blocks = dict(GENERATED_BLOCK.findall(page.read_text()))
    for marker, row in (("benchmark-trials", trials[0]), ("benchmark", rows[0])):
        assert blocks[marker].startswith("Run of ") and PLACEHOLDER not in blocks[marker], marker
        assert "| measurement | figure | target |" in blocks[marker] and blocks[marker].endswith(row + "\n"), marker


def test_the_stack_yaml_finder_sees_nested_keys_and_stops_at_a_declared_one():
    text = "```yaml\nconfig:\n  llm-gateway:alerts:\n    enabeld: true\n    ruleLabels: {release: x}\n```\n"
    assert _stack_yaml_keys(text) == {"alerts", "alerts.enabeld", "alerts.ruleLabels"}
