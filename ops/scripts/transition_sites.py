"""Count the call sites that choose a job transition's fields (issue 24, item 2).

A *field-choosing call site* is a call of ``<store>.apply(...)`` or ``fail_job(...)`` in
the shipped code (``workers/``, ``producers/``) that passes a field to write: a keyword
other than the write's options (``expect``, ``incr``, ``durable``, ``outage_patience_s``,
``via``) or a ``**mapping``. Also counted: the field keywords in all, those whose value is
a literal constant (a value the transition itself could own), the ``**`` splats, and the
named transitions and ``JobRecord`` fields. Run from the repository root::

    python ops/scripts/transition_sites.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

OPTIONS = {"expect", "incr", "durable", "outage_patience_s", "via"}


def _is_write(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "apply":
        return "store" in ast.unparse(func.value)
    return isinstance(func, ast.Name) and func.id == "fail_job"


def main() -> int:
    sites = fields = constants = splats = 0
    by_module: dict[str, int] = {}
    for root in ("workers", "producers"):
        for path in sorted(Path(root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call) or not _is_write(node):
                    continue
                chosen = [k for k in node.keywords if k.arg not in OPTIONS]
                if not chosen:
                    continue
                sites += 1
                by_module[path.name] = by_module.get(path.name, 0) + 1
                for k in chosen:
                    if k.arg is None:
                        splats += 1
                        continue
                    fields += 1
                    constants += isinstance(k.value, ast.Constant)
    sys.path.insert(0, ".")
    from nanobanana_queue.workers.jobs import lifecycle
    from nanobanana_queue.workers.jobs.record import JobRecord

    where = ", ".join(f"{m} {n}" for m, n in sorted(by_module.items(), key=lambda i: -i[1]))
    print(f"field-choosing call sites: {sites} in {len(by_module)} modules ({where})")
    print(f"field keywords at those sites: {fields} (literal constants: {constants})")
    print(f"**mapping splats at those sites: {splats}")
    print(f"named transitions in the table: {len(lifecycle.ALL)}")
    print(f"JobRecord fields: {len(JobRecord.model_fields)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
