"""Every script under benchmarks/ still imports: the README gives their commands, and a name the library renamed
(``set_search_threads`` once) had left ``benchmarks/search.py`` failing before it parsed ``--help``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_the_benchmark_script_imports_and_has_a_main(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import each other's helpers, as when run
    spec = importlib.util.spec_from_file_location(f"_benchmark_{script[:-3]}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # the module's top level: its imports (main runs only under __main__)
    assert callable(getattr(module, "main", None)), f"{script} has no main()"
