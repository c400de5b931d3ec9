"""What ``pip install nanobanana-queue`` puts in a user's environment (issue 30).

One import name (``nanobanana_queue``) and the ``nbq`` script, nothing else at the top of
site-packages — a service with its own ``workers`` module must keep it — with ``py.typed``
so the user's type checker reads our annotations, and no benchmark or its result files.
The wheel is built from this checkout and installed, without its dependencies, into a
fresh venv that borrows the test venv's packages through a ``.pth`` line (the editable
install's own finder is not carried over: ``.pth`` files are read in site directories only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The installed venv's environment: no PYTHONPATH, which would put a checkout (and its
#: top-level ``workers``) back on the path.
CLEAN_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300, env=CLEAN_ENV,
    )  # fmt: skip
    (built,) = out.glob("nanobanana_queue-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; returns its python."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=CLEAN_ENV
    )
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True, capture_output=True, text=True, env=CLEAN_ENV,
        ).stdout.strip()
    )  # fmt: skip
    (site / "borrowed-test-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=300, env=CLEAN_ENV,
    )  # fmt: skip
    return python


def _top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist()}


def test_the_wheel_adds_one_import_name_and_its_metadata(wheel: Path) -> None:
    top = _top_level(wheel)
    assert {name for name in top if not name.endswith(".dist-info")} == {"nanobanana_queue"}


def test_the_wheel_ships_py_typed_and_no_benchmark_or_result_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "nanobanana_queue/py.typed" in names
    assert not [name for name in names if "benchmarks" in name]
    assert "nanobanana_queue/workers/app.py" in names
    assert any(name.endswith(".lua") for name in names)


def test_an_installed_package_imports_by_its_namespace_only(
    installed: Path, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        """
        import importlib.util, json
        from nanobanana_queue import Producer
        import nanobanana_queue.workers.app
        print(json.dumps({
            "producer": Producer.__module__,
            "workers": importlib.util.find_spec("workers") is not None,
            "producers": importlib.util.find_spec("producers") is not None,
            "emulator": importlib.util.find_spec("emulator") is not None,
            "benchmarks": importlib.util.find_spec("benchmarks") is not None,
        }))
        """
    )
    done = subprocess.run(
        [str(installed), "-c", script], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False, env=CLEAN_ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        '{"producer": "nanobanana_queue.producers.api", "workers": false, '
        '"producers": false, "emulator": false, "benchmarks": false}'
    )


def test_a_users_type_checker_sees_the_packages_types(installed: Path, tmp_path: Path) -> None:
    """mypy on a user's script sees ``Producer.enqueue``'s real signature, which it can only
    if the installed package is typed (``py.typed``; without it: ``Any``)."""
    (tmp_path / "user.py").write_text(
        textwrap.dedent(
            """
            from nanobanana_queue import Producer

            def enqueue(producer: Producer) -> None:
                reveal_type(producer.enqueue)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(installed),
         "--no-incremental", "--follow-imports=silent", "user.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False, env=CLEAN_ENV,
    )  # fmt: skip
    assert "nanobanana_queue.producers.api.JobHandle" in done.stdout, done.stdout + done.stderr


def test_nbq_bench_outside_a_checkout_says_where_it_runs(installed: Path, tmp_path: Path) -> None:
    nbq = installed.parent / "nbq"
    done = subprocess.run(
        [str(nbq), "bench", "--only", "B1"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False, env=CLEAN_ENV,
    )  # fmt: skip
    assert done.returncode != 0
    assert "checkout" in done.stdout + done.stderr
