"""The README is a promise to users: its commands and configuration table stay true."""

from __future__ import annotations

import re
from pathlib import Path

from nanobanana_queue.workers.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


#: The variable each setting reads: ``NBQ_<NAME>``, or the standard name it is bound to
#: (the OpenTelemetry switch reads ``OTEL_*``).
VARIABLES = {
    field.validation_alias if isinstance(field.validation_alias, str) else f"NBQ_{name.upper()}"
    for name, field in Settings.model_fields.items()
}
DOCUMENTED = set(re.findall(r"`((?:NBQ|OTEL)_[A-Z0-9_]+)`", README))


def test_every_setting_is_documented_in_the_readme_table() -> None:
    missing = VARIABLES - DOCUMENTED
    assert not missing, f"undocumented settings: {sorted(missing)}"


def test_the_readme_documents_no_setting_that_does_not_exist() -> None:
    known = VARIABLES | {f"{name}_FILE" for name in VARIABLES if name.startswith("NBQ_")}
    # Other OTEL_* variables are the SDK's own (named in the Tracing row), not settings.
    documented = {name for name in DOCUMENTED if name.startswith("NBQ_")}
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
