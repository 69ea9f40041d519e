"""The README is a newcomer's page pointing into the docs site, whose pages are all reachable.

The site itself is built by `make docs` (`mkdocs build --strict`: a broken link or anchor fails).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_a_newcomer_reads_a_short_readme_with_the_two_commands() -> None:
    assert len(README.splitlines()) <= 250
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "playground", "docs"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
    assert "dify-bridge chat" in README  # the console adapter


def test_every_link_from_the_readme_into_the_docs_leads_to_a_page() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", README)
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), link


def test_every_docs_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:\n", 1)[1]
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    listed = set(re.findall(r":\s*(\S+\.md)\s*$", nav, flags=re.M))
    assert pages == listed
