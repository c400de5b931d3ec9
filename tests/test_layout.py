"""The layout docs/architecture.md draws: who may import whom, one name per exception."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("producers", "workers", "devstack", "emulator", "benchmarks")

#: What each package may import of the others (docs/architecture.md, "Layout").
ALLOWED = {
    "producers": {"workers"},
    "workers": set(),
    "devstack": {"producers", "workers"},
    "emulator": set(),
    "benchmarks": {"devstack", "producers", "workers"},
}

#: The experiments that borrow the tests' servers (Redis cluster / Sentinel, or the fault
#: stack); they run from a checkout, never from ``nbq bench`` (benchmarks/harness.py).
BORROW_TEST_SERVERS = {
    Path("benchmarks/capacity_run.py"),
    Path("benchmarks/recovery_times.py"),
    Path("benchmarks/cluster_wait.py"),
    Path("benchmarks/redis_commands.py"),
    Path("benchmarks/sentinel_failover.py"),
    Path("benchmarks/soak.py"),
}

#: ``nbq`` itself: it lets each part register its own commands (docs/architecture.md).
ASSEMBLER = Path("producers/cli/main.py")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


#: The one import name the installed distribution adds (its parts link to the packages).
NAMESPACE = "nanobanana_queue"


def _absolute_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for name in _absolute_imports(path):
        parts = name.split(".")
        found.add(parts[1] if parts[0] == NAMESPACE and len(parts) > 1 else parts[0])
    return found & {*PACKAGES, "tests"}


def _python_files() -> list[Path]:
    skip = {".venv", ".git", NAMESPACE}
    return [
        path for path in sorted(ROOT.rglob("*.py")) if not skip & set(path.relative_to(ROOT).parts)
    ]


def test_every_import_of_a_part_goes_through_the_namespace() -> None:
    """``import workers`` would load a second copy of a module (and of the Celery app) next
    to ``nanobanana_queue.workers``, and fails in an installed wheel: only the namespace is
    installed (README, "Upgrading"). ``benchmarks`` stays a checkout-only package."""
    parts = set(PACKAGES) - {"benchmarks"}
    wrong = {
        str(path.relative_to(ROOT)): name
        for path in _python_files()
        for name in _absolute_imports(path)
        if name.split(".")[0] in parts
    }
    assert wrong == {}


def test_the_namespace_links_each_part_to_its_top_level_directory() -> None:
    for part in set(PACKAGES) - {"benchmarks"}:
        link = ROOT / NAMESPACE / part
        assert link.is_symlink() and link.resolve() == ROOT / part, part


#: The emulator's command logs in the project's one format (issue 30: every line JSON under
#: ``NBQ_LOG_JSON``): it borrows ``workers/logs.py``, and nothing else of the workers.
EMULATOR_LOGS = Path("emulator/cli.py")


def _borrowed(path: Path) -> set[str]:
    relative = path.relative_to(ROOT)
    if relative == EMULATOR_LOGS:
        return {"workers"}
    return {"tests"} if relative in BORROW_TEST_SERVERS else set()


def test_the_emulator_borrows_only_the_log_format_of_the_workers() -> None:
    borrowed = {name for name in _absolute_imports(ROOT / EMULATOR_LOGS) if ".workers" in name}
    assert borrowed == {f"{NAMESPACE}.workers.logs"}


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_the_layout_allows(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(extra)
        for path in _modules(package)
        if path.relative_to(ROOT) != ASSEMBLER
        and (extra := _imported_packages(path) - ALLOWED[package] - {package} - _borrowed(path))
    }
    assert wrong == {}


def test_every_exception_class_has_one_name_across_the_packages() -> None:
    """A caller catches one class whichever layer noticed (``workers/errors.py``)."""
    defined: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                    defined[node.name].append(str(path.relative_to(ROOT)))
    assert {name: where for name, where in defined.items() if len(where) > 1} == {}
    assert "JobNotCancellableError" in defined
