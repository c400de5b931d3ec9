"""The README is a promise to users: its commands and configuration table stay true."""

from __future__ import annotations

import re
from pathlib import Path

from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented_in_the_readme_table() -> None:
    documented = set(re.findall(r"`(NBQ_[A-Z0-9_]+)`", README))
    missing = {f"NBQ_{name.upper()}" for name in Settings.model_fields} - documented
    assert not missing, f"undocumented settings: {sorted(missing)}"


def test_the_readme_documents_no_setting_that_does_not_exist() -> None:
    known = {f"NBQ_{name.upper()}" for name in Settings.model_fields}
    known |= {f"{name}_FILE" for name in known}
    documented = set(re.findall(r"`(NBQ_[A-Z0-9_]+)`", README))
    assert documented <= known | {"NBQ_<NAME>_FILE"}, sorted(documented - known)


def test_ci_runs_the_readme_test_command() -> None:
    blocks = re.findall(r"\*\*Run the tests\*\*.*?```bash\n(.*?)\n```", README, re.S)
    assert blocks, "README lost its test command"
    venv, *rest = blocks[0].strip().splitlines()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    # CI creates the venv itself, then runs the rest of the README's command verbatim.
    assert venv.startswith("python3 -m venv .venv")
    assert rest and all(line in ci for line in rest)
    assert ci[-1] == rest[-1] and rest[-1].endswith("&& pytest")
