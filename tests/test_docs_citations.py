"""Comments cite the project's own docs, and what they cite exists.

A citation is ``docs/<page>.md``, optionally followed by ``, "<section>"``: the page must exist
and, when a section is named, one of the page's headings must contain it. Notes outside the
repository (the team's private reference notes) are never cited.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(
    p
    for folder in ("echo_connhandler", "echo_connhandler_provider", "benchmarks")
    for p in (ROOT / folder).rglob("*.py")
)
CITATION = re.compile(r'docs/([\w/.-]+\.md)(?:,\s*(?:#\s*)?"([^"]+)")?')
PRIVATE_NOTES = re.compile(r"\b(services|anchors|airflow|style|contract)\.md\b")


def _citations() -> list[tuple[str, str, str | None]]:
    found = []
    for path in SOURCES:
        text = " ".join(path.read_text(encoding="utf-8").split())  # citations span lines
        for match in CITATION.finditer(text):
            found.append((path.relative_to(ROOT).as_posix(), match.group(1), match.group(2)))
    return found


def _headings(page: Path) -> list[str]:
    return [
        line.lstrip("#").strip().lower()
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    ]


def test_there_are_citations_to_check() -> None:
    assert len(_citations()) >= 20


@pytest.mark.parametrize(("source", "page", "section"), _citations())
def test_cited_page_and_section_exist(source: str, page: str, section: str | None) -> None:
    target = ROOT / "docs" / page
    assert target.is_file(), f"{source} cites docs/{page}, which does not exist"
    if section:
        wanted = section.lower()
        assert any(wanted in heading for heading in _headings(target)), (
            f'{source} cites docs/{page}, "{section}": no such heading'
        )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_citation_of_notes_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    outside = [
        m.group(0)
        for m in PRIVATE_NOTES.finditer(text)
        if not text[max(0, m.start() - 15) : m.start()]
        .rstrip("/")
        .endswith(("docs/services", "docs/airflow", "docs"))
    ]
    assert outside == []
