"""Move absolute imports and dotted module names under the ``nanobanana_queue`` namespace.

Why this exists: the installed distribution adds one import name, ``nanobanana_queue``
(issue 30: a service with its own ``workers`` module must not clash with ours), while the
repository keeps ``workers/``, ``producers/``, ``emulator/`` and ``devstack/`` at its top
level (``nanobanana_queue/<part>`` are symlinks to them). Every absolute reference to those
parts must therefore name the namespace. The rewrite is mechanical and idempotent, so a
branch started before the move can run it on itself and then merge ``main`` without a
conflict on every import line:

    python ops/scripts/namespace_imports.py [ROOT]

What it rewrites, in Python, Markdown, YAML, TOML, shell files and the Dockerfile:
``from workers.x import y`` / ``import workers.x`` (with an alias kept usable),
``-m emulator`` / ``"-m", "emulator"``, and a dotted name such as ``"workers.probes"`` or
``-A nanobanana_queue.workers.app`` whose second part is a real module of that package. Slash paths
(``workers/app.py``) are file paths in the repository and stay as they are.
"""

from __future__ import annotations

import io
import re
import sys
import tokenize
from pathlib import Path

NAMESPACE = "nanobanana_queue"
PARTS = ("workers", "producers", "emulator", "devstack")
SUFFIXES = {".py", ".md", ".yml", ".yaml", ".toml", ".sh", ".cfg", ".ini", ".txt", ".j2"}
NAMES = {"Dockerfile", "run"}
#: A namespaced dotted name in prose, shortened back to its repository-relative form.
SHORT = re.compile(rf"(?<![\w.]){NAMESPACE}\.({'|'.join(PARTS)})\.(?=[a-z_])")
#: This script, whose docstring shows the imports it moves (also when run from a copy).
SELF = Path("ops/scripts/namespace_imports.py")
SKIP_DIRS = {".git", ".venv", NAMESPACE, "node_modules", "__pycache__", "results"}


def _submodules(root: Path, part: str) -> set[str]:
    """The names directly inside a package: what may follow ``part.`` in a dotted name."""
    found = set()
    for child in (root / part).iterdir():
        if child.suffix == ".py" and child.stem != "__init__":
            found.add(child.stem)
        elif child.is_dir() and (child / "__init__.py").exists():
            found.add(child.name)
    return found


def _rules(root: Path) -> list[tuple[re.Pattern[str], str]]:
    parts = "|".join(PARTS)
    rules: list[tuple[re.Pattern[str], str]] = [
        # from workers.x import y  /  from workers import y
        (
            re.compile(rf"^(\s*)from ({parts})((?:\.\w+)*) import ", re.M),
            rf"\1from {NAMESPACE}.\2\3 import ",
        ),
        # import workers.x as y
        (
            re.compile(rf"^(\s*)import ({parts})((?:\.\w+)*) as ", re.M),
            rf"\1import {NAMESPACE}.\2\3 as ",
        ),
        # python -m nanobanana_queue.emulator  /  "-m", "nanobanana_queue.emulator"
        (
            re.compile(rf"(-m\s+|\"-m\",\s*\"|'-m',\s*')({parts})(?=[\s\"'.]|$)", re.M),
            rf"\1{NAMESPACE}.\2",
        ),
        # importlib.resources.files("workers")
        (re.compile(rf"\bfiles\((\"|')({parts})\1\)"), rf"files(\1{NAMESPACE}.\2\1)"),
    ]
    for part in PARTS:
        subs = "|".join(sorted(_submodules(root, part), key=len, reverse=True))
        rules.append(
            (
                re.compile(rf"(?<![\w./-])({part})\.({subs})(?!\w)"),
                rf"{NAMESPACE}.\1.\2",
            )
        )
    return rules


def _plain_imports(text: str) -> str:
    """``import workers.tasks`` binds ``workers``: keep that name bound after the move."""
    parts = "|".join(PARTS)

    def alias(match: re.Match[str]) -> str:
        indent, dotted, rest = match.group(1), match.group(2), match.group(3)
        names = [name.strip() for name in dotted.split(",")]
        if not all(name.split(".")[0] in PARTS for name in names):
            return match.group(0)
        lines = [f"{indent}import {NAMESPACE}.{name}{rest}" for name in names]
        return "\n".join(lines)

    return re.sub(
        rf"^(\s*)import ((?:{parts})(?:\.\w+)*(?:,\s*(?:{parts})(?:\.\w+)*)*)(\s*(?:#.*)?)$",
        alias,
        text,
        flags=re.M,
    )


def _files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if any(part in SKIP_DIRS for part in path.relative_to(root).parts):
            continue
        if path.is_symlink() or not path.is_file():
            continue
        if path.suffix in SUFFIXES or path.name in NAMES:
            found.append(path)
    return found


def _literal_spans(text: str) -> list[tuple[int, int]]:
    """Where a Python file's strings and comments are: a dotted module name is rewritten
    only there, never in code, where ``emulator.stats()`` calls a fixture's method."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in (tokenize.STRING, tokenize.COMMENT):
                (srow, scol), (erow, ecol) = token.start, token.end
                spans.append((starts[srow - 1] + scol, starts[erow - 1] + ecol))
    except (tokenize.TokenError, SyntaxError):
        return [(0, len(text))]
    return spans


def _sub_in_spans(pattern: re.Pattern[str], replacement: str, text: str) -> str:
    pieces, last = [], 0
    for start, end in _literal_spans(text):
        pieces.append(text[last:start])
        pieces.append(pattern.sub(replacement, text[start:end]))
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def _literal_spans(text: str) -> list[tuple[int, int, bool]]:
    """Where a Python file's strings and comments are, and whether each is prose (a
    docstring or a comment) rather than a value the code uses."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = []
    statement_start = True
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in (tokenize.STRING, tokenize.COMMENT):
                (srow, scol), (erow, ecol) = token.start, token.end
                prose = token.type == tokenize.COMMENT or statement_start
                spans.append((starts[srow - 1] + scol, starts[erow - 1] + ecol, prose))
            if token.type not in (tokenize.COMMENT, tokenize.NL):
                statement_start = token.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    except (tokenize.TokenError, SyntaxError):
        return [(0, len(text), False)]
    return spans


def rewrite(text: str, rules: list[tuple[re.Pattern[str], str]], python: bool) -> str:
    """One file's text with every reference moved under the namespace (idempotent).

    The first four rules (imports, ``-m``, ``files()``) are anchored enough to run on a
    whole file. A dotted name is moved everywhere in other files but, in a Python file, only
    in the strings the code uses: never in code (``emulator.stats()`` calls a fixture), and
    docstrings and comments keep the short, repository-relative name (``workers.app``), which
    keeps their lines within the line length and the rewrite a fixed point."""
    text = _plain_imports(text)
    for pattern, replacement in rules[:4]:
        text = pattern.sub(replacement, text)
    if not python:
        for pattern, replacement in rules[4:]:
            text = pattern.sub(replacement, text)
        return text
    pieces, last = [], 0
    for start, end, prose in _literal_spans(text):
        piece = text[start:end]
        if prose:
            piece = SHORT.sub(r"\1.", piece)
        else:
            for pattern, replacement in rules[4:]:
                piece = pattern.sub(replacement, piece)
        pieces += [text[last:start], piece]
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def main(root: Path) -> int:
    rules = _rules(root)
    changed = 0
    for path in _files(root):
        if path.relative_to(root) == SELF or path.resolve() == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        new = rewrite(text, rules, python=path.suffix == ".py")
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
            changed += 1
    print(f"{changed} files rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))
