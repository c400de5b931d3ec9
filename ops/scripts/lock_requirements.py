"""The project's one lock, ``requirements.lock``: every dependency of every extra, hash-pinned.

What CI tests is what ships: the README's test command (and so ``.ci/run``) installs
exactly this file (``pip install --require-hashes -r requirements.lock``, then the project
with ``--no-deps``), and the image installs the part of the same file its roles need.

Regenerate after changing dependencies in ``pyproject.toml`` (uv resolves against PyPI;
pins already in the file are kept unless asked to move)::

    pip install uv
    python ops/scripts/lock_requirements.py                          # keep the other pins
    python ops/scripts/lock_requirements.py --upgrade-package redis  # move one
    python ops/scripts/lock_requirements.py --upgrade                # move everything

The resolution is universal (every platform, Python 3.11 and newer, each line carrying the
markers it needs) and lists the hashes of every file of each pinned release, so the same
file serves CI, a developer's machine and an image built for another architecture.

The image (``Dockerfile``) selects its part with ``--image``: the closure of the base
dependencies and ``IMAGE_EXTRAS``, read from the lock's ``# via`` lines, printed as lock
lines (pins, markers and hashes unchanged). This runs with the build stage's bare Python,
so this module uses the standard library only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
#: The extras the Dockerfile installs (``pip install --no-deps ".[worker,ingress,emulator,otel]"``;
#: tracing stays off until ``OTEL_*`` turns it on).
IMAGE_EXTRAS = ("worker", "ingress", "emulator", "otel")
#: How the lock is made; every option is explained in the module docstring.
UV_COMPILE = (
    "pip",
    "compile",
    "pyproject.toml",
    "--all-extras",
    "--universal",
    "--python-version",
    "3.11",
    "--generate-hashes",
    "--annotation-style",
    "split",
    "--custom-compile-command",
    "python ops/scripts/lock_requirements.py",
    "--output-file",
    "requirements.lock",
)


def normalize(name: str) -> str:
    """PEP 503 name: ``Foo_bar.baz`` and ``foo-bar-baz`` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The project a PEP 508 requirement names (``celery[redis]>=5.7`` → ``celery``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return normalize(match.group(1))


@dataclass(frozen=True)
class Entry:
    """One pinned release in the lock: its lines as written, and who needs it."""

    name: str
    version: str
    marker: str
    text: str
    via: frozenset[str]


def parse_lock(text: str) -> list[Entry]:
    """The lock's entries, in file order (a project resolved per Python version appears
    once per version, each with its marker)."""
    entries: list[Entry] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line or line[0] in "# ":
            i += 1
            continue
        block = [line]
        while block[-1].endswith("\\"):
            i += 1
            block.append(lines[i])
        i += 1
        via: set[str] = set()
        while i < len(lines) and lines[i].startswith("    #"):
            comment = lines[i].strip().lstrip("#").strip()
            comment = comment.removeprefix("via").strip()
            if comment:
                via.add(requirement_name(comment))
            i += 1
        head = block[0].rstrip("\\").strip()
        spec, _, marker = head.partition(";")
        name, _, version = spec.strip().partition("==")
        entries.append(
            Entry(
                normalize(name), version.strip(), marker.strip(), "\n".join(block), frozenset(via)
            )
        )
    return entries


def roots(project: dict[str, Any], extras: tuple[str, ...]) -> list[str]:
    """The base dependencies plus ``extras``', with the package's references to its own
    extras (``nanobanana-queue[s3]``) expanded."""
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found = list(project["dependencies"])
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional[extra]:
            if requirement_name(line) == normalize(project["name"]):
                todo.extend(re.findall(r"[\w-]+", line.split("[", 1)[1].split("]", 1)[0]))
            else:
                found.append(line)
    return found


def select(entries: list[Entry], root_names: set[str]) -> list[Entry]:
    """The entries reachable from ``root_names`` along the lock's ``# via`` edges."""
    children: dict[str, set[str]] = {}
    for entry in entries:
        for parent in entry.via:
            children.setdefault(parent, set()).add(entry.name)
    wanted, todo = set(), list(root_names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(children.get(name, ()))
    return [entry for entry in entries if entry.name in wanted]


def load_project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    return project


def image_lines() -> str:
    """The lock's lines for the image: its roles' closure, pins and hashes unchanged."""
    names = {requirement_name(line) for line in roots(load_project(), IMAGE_EXTRAS)}
    chosen = select(parse_lock(LOCK.read_text("utf-8")), names)
    return "".join(f"{entry.text}\n" for entry in chosen)


def main(argv: list[str]) -> int:
    if argv == ["--image"]:
        sys.stdout.write(image_lines())
        return 0
    uv = shutil.which("uv")
    if uv is None:
        print("uv is not installed: pip install uv", file=sys.stderr)
        return 2
    return subprocess.run([uv, *UV_COMPILE, *argv], cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
