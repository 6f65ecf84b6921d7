"""docs/README.md lists every page under docs/, and every page it links exists."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_doc_is_listed_and_every_link_exists():
    index = (DOCS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([^)]+\.md)\)", index))
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert pages <= linked, f"pages missing from docs/README.md: {sorted(pages - linked)}"
    assert linked <= pages, f"docs/README.md links pages that do not exist: {sorted(linked - pages)}"
