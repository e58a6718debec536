"""The README states no figure of a demo run: the run writes its own (outputs/demo/summary.md), and dated figures
live in docs/performance.md with their machine."""
import re

from lib.schema import PROJECT_ROOT


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    following = text.find("\n## ", start + 1)
    return text[start:following if following >= 0 else None]


def test_the_demo_section_holds_no_figures():
    demo = section((PROJECT_ROOT / "README.md").read_text(encoding="utf-8"), "What the demo shows")
    prose = re.sub(r"`[^`]*`|\]\([^)]*\)", "", demo)  # code (file and notebook names) and link targets aside
    assert "outputs/demo/summary.md" in demo
    figures = re.findall(r".{0,30}(?<![A-Za-z])\d+(?:[.,]\d+)?(?![A-Za-z]).{0,30}", prose)  # E2E is a name
    assert not figures


def test_dated_figures_name_their_machine():
    performance = (PROJECT_ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    moved = section(performance, "A demo run")
    assert re.search(r"Measured on a 2-core [^,]+, \d{4}-\d\d-\d\d", moved)
