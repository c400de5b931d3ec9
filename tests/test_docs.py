"""What the docs restate of the code stays true: file paths, the names placed in them, the
settings they name, and the architecture's "stages are free of Celery".

The README's settings table has its own tests (tests/test_readme.py), the transitions
table in docs/job-states.md is generated and checked (tests/workers/jobs/), the import
layering too (tests/test_layout.py). These cover the prose: a doc that names
``workers/app.py`` for a function that moved to ``workers/startup.py`` fails here, not in a
newcomer's search.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from nanobanana_queue.workers.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The top-level folders whose files the docs name.
FOLDERS = ("workers", "producers", "emulator", "devstack", "benchmarks", "tests", "ops", "docs")
PATH = re.compile(
    r"(?<![\w/.-])((?:" + "|".join(FOLDERS) + r")/[A-Za-z0-9_./-]*[A-Za-z0-9_]"
    r"\.(?:py|lua|md|json|yaml|yml|toml|txt|sh))"
)
#: "`workers/x.py` (`name`)": a name the doc places in that file.
PLACED = re.compile(r"`((?:workers|producers|emulator|devstack|benchmarks)/[\w/]+\.py)` \(`(\w+)`")
#: Named on purpose though absent, with why.
GONE = {
    "ops/keda/scaledobject.yaml": "the README's upgrade note names the file it replaced",
}
NOT_SETTINGS = {
    "NBQ_REDIS_CLUSTER": "docs/operations.md: 'a URL scheme, not a NBQ_REDIS_CLUSTER switch'",
}
#: Stage modules that may import anything of Celery's (docs/architecture.md, Packages),
#: and what: the reconciler reads RabbitMQ queue lengths (catching kombu's and amqp's
#: errors) and the submit time limit from the Celery configuration.
#: (Our own modules by their path under ``workers/``: imports name them in the namespace.)
CELERY_IN_STAGES = {"reconcile.py": {"kombu", "amqp", "workers/app"}}
CELERY = ("celery", "kombu", "amqp", "workers/app", "workers/dispatch", "workers/tasks")


def _located(path: str) -> Path | None:
    """The file at ``path``, in the repository or under the namespace package."""
    for base in (ROOT, ROOT / "nanobanana_queue"):
        if (base / path).exists():
            return base / path
    return None


def _doc_id(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_every_file_a_doc_names_exists(doc: Path) -> None:
    named = set(PATH.findall(doc.read_text(encoding="utf-8")))
    missing = sorted(p for p in named - set(GONE) if _located(p) is None)
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_a_name_a_doc_places_in_a_file_is_defined_there(doc: Path) -> None:
    wrong = []
    for path, name in PLACED.findall(doc.read_text(encoding="utf-8")):
        located = _located(path)
        if located is None:
            continue  # reported by the test above
        tree = ast.parse(located.read_text(encoding="utf-8"))
        defined = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        } | {
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        if name not in defined:
            wrong.append(f"{path}: {name}")
    assert wrong == []


def test_every_setting_the_docs_name_exists() -> None:
    known = {
        field.validation_alias if isinstance(field.validation_alias, str) else f"NBQ_{n.upper()}"
        for n, field in Settings.model_fields.items()
    }
    known |= {f"{name}_FILE" for name in known}
    unknown = {
        f"{_doc_id(doc)}: {name}"
        for doc in DOCS[1:]  # the README: tests/test_readme.py
        for name in re.findall(r"\b(NBQ_[A-Z0-9_]*[A-Z0-9])\b", doc.read_text(encoding="utf-8"))
        if name not in known and name not in NOT_SETTINGS
    }
    assert sorted(unknown) == []


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_stages_import_nothing_of_celery_but_what_the_architecture_doc_says() -> None:
    stages = ROOT / "workers" / "stages"
    if not stages.exists():
        stages = ROOT / "nanobanana_queue" / "workers" / "stages"
    found = {}
    for path in sorted(stages.glob("*.py")):
        imported = {
            module.removeprefix("nanobanana_queue.").replace(".", "/") for module in _imports(path)
        }
        celery = {
            prefix
            for module in imported
            for prefix in CELERY
            if module == prefix or module.startswith(prefix + "/")
        }
        extra = celery - CELERY_IN_STAGES.get(path.name, set())
        if extra:
            found[path.name] = sorted(extra)
    assert found == {}
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert "pinned by `tests/test_docs.py`" in architecture  # the exception is stated there
