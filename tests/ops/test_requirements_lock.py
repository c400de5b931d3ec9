"""``requirements.lock`` is what CI installs and what the image ships, and it agrees with
``pyproject.toml``: a dependency added, dropped or re-bounded there without regenerating the
lock (``python ops/scripts/lock_requirements.py``) fails here, not on a fresh machine."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ops" / "scripts" / "lock_requirements.py"


@cache
def lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_requirements", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]  # type: ignore[no-any-return]


def entries() -> list[Any]:
    return lock_script().parse_lock((ROOT / "requirements.lock").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def applies_here(entry: Any) -> bool:
    return not entry.marker or Marker(entry.marker).evaluate()


def every_pyproject_requirement() -> list[Requirement]:
    """The base dependencies and every extra's, without the package's own extras."""
    lines = list(project()["dependencies"])
    for extra in project()["optional-dependencies"].values():
        lines += extra
    own = lock_script().normalize(project()["name"])
    return [Requirement(line) for line in lines if lock_script().requirement_name(line) != own]


def test_every_locked_release_is_pinned_with_its_hashes() -> None:
    locked = entries()
    assert len(locked) > 50
    for entry in locked:
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", entry.version), entry.text
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry.text), entry.name


def test_every_pyproject_requirement_is_locked_at_a_version_it_allows() -> None:
    locked = entries()
    for requirement in every_pyproject_requirement():
        name = lock_script().normalize(requirement.name)
        versions = [entry.version for entry in locked if entry.name == name]
        assert versions, f"{name} is in pyproject.toml, not in requirements.lock"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}, pyproject.toml asks {requirement}"
            )


def test_the_lock_holds_only_what_pyproject_needs() -> None:
    script = lock_script()
    locked = entries()
    root_names = {script.normalize(r.name) for r in every_pyproject_requirement()}
    reachable = {entry.name for entry in script.select(locked, root_names)}
    assert {entry.name for entry in locked} == reachable


def test_this_environment_runs_the_locked_versions() -> None:
    """CI installs the lock and nothing else: a package moved by hand (or installed from
    ``pyproject.toml`` unpinned) shows up here."""
    moved = {}
    for entry in filter(applies_here, entries()):
        try:
            installed = metadata.version(entry.name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != entry.version:
            moved[entry.name] = f"locked {entry.version}, installed {installed}"
    assert not moved, moved


def installed_closure(requirements: list[str]) -> set[str]:
    """Every distribution ``requirements`` reach through the installed packages' metadata."""
    env = {key: str(value) for key, value in default_environment().items()}
    todo = [Requirement(line) for line in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        requirement = todo.pop()
        key = (lock_script().normalize(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        for line in metadata.requires(requirement.name) or []:
            child = Requirement(line)
            extras = requirement.extras or {""}
            if child.marker is None or any(
                child.marker.evaluate({**env, "extra": extra}) for extra in extras
            ):
                todo.append(child)
    return names


def test_the_image_part_of_the_lock_is_its_roles_whole_closure() -> None:
    """``lock_requirements.py --image`` (what the Dockerfile installs) reads the graph from the
    lock's ``# via`` lines; the installed packages' own metadata draws the same one."""
    script = lock_script()
    roots = script.roots(project(), script.IMAGE_EXTRAS)
    image = script.parse_lock(script.image_lines())
    applicable = [
        line for line in roots if (marker := Requirement(line).marker) is None or marker.evaluate()
    ]
    expected = installed_closure(applicable)
    assert {entry.name for entry in image if applies_here(entry)} == expected
    assert {entry.text for entry in image} <= {entry.text for entry in entries()}


def test_the_image_installs_its_part_of_the_lock_with_hashes_then_the_package_alone() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    extras = ",".join(lock_script().IMAGE_EXTRAS)
    assert "COPY requirements.lock" in dockerfile
    assert "lock_requirements.py --image" in dockerfile
    assert "--require-hashes" in dockerfile
    assert f'--no-deps ".[{extras}]"' in dockerfile
    assert "pip check" in dockerfile


def test_ci_installs_the_lock_and_the_package_without_resolving_again() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install --require-hashes -r requirements.lock && pip install --no-deps -e ." in ci
    assert not re.search(r'pip install[^\n]*-e "?\.\[', ci), "an unpinned install of an extra"


def test_the_typed_packages_ship_their_py_typed_marker() -> None:
    """PEP 561: without ``py.typed`` users' type checkers ignore the packages' annotations."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["*"]
    for package in ("workers", "producers"):
        assert (ROOT / package / "py.typed").is_file(), package
