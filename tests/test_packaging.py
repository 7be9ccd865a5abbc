"""The installed suite owns only the ``fednlp_bench`` import name.

``tasks/`` and ``partitioners/`` sit at the top of the repository but install as
``fednlp_bench.tasks`` and ``fednlp_bench.partitioners`` (setup.cfg ``package_dir``),
so a user project with its own ``tasks`` module (Celery, invoke) and the suite work together.
"""
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_user_modules_named_tasks_and_partitioners_coexist_with_the_suite(tmp_path):
    (tmp_path / "tasks.py").write_text("WHO = 'user tasks'\n")
    (tmp_path / "partitioners.py").write_text("WHO = 'user partitioners'\n")
    code = (
        "import tasks, partitioners\n"
        "from fednlp_bench import tasks as t, partitioners as p\n"
        "import fednlp_bench.run, fednlp_bench.cli\n"
        "print(tasks.WHO, '|', partitioners.WHO, '|', ','.join(t.available()), '|', ','.join(p.available()))\n"
        "print(type(t.get('tc')).__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first.startswith("user tasks | user partitioners | ")
    assert "tc" in first.split("|")[2] and "dirichlet_label" in first.split("|")[3]
    assert second == "fednlp_bench.tasks.text_classification"


def test_no_module_imports_the_top_level_names():
    offenders = []
    for folder in ("fednlp_bench", "tasks", "partitioners", "tests", "benchmarks", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                s = line.strip()
                if s.startswith(("import tasks", "import partitioners", "from tasks", "from partitioners")):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {s}")
    assert not offenders, offenders


def test_setup_cfg_lists_every_package():
    """``packages`` is an explicit list (find: cannot see through package_dir): nothing may be missing."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    mapping = dict(line.split(" = ") for line in cfg["options"]["package_dir"].strip().splitlines())
    found = set()
    for init in (ROOT / "fednlp_bench").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(ROOT / folder).parts]))
    assert found == listed
