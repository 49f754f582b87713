"""Every example DAG shows its module docstring in the UI (``doc_md``, the DAG's Docs)."""

from __future__ import annotations

import ast
from typing import Any

import pytest

from deploy.local_airflow import DAGS_FOLDER

NAMES = sorted(p.stem for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("name", NAMES)
def test_doc_md_is_the_module_docstring(name: str, load_dag: Any) -> None:
    dag = load_dag(name)
    docstring = ast.get_docstring(ast.parse((DAGS_FOLDER / f"{name}.py").read_text()), clean=False)
    assert docstring
    assert dag.doc_md == docstring
