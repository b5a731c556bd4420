"""The README stays a front door that leads somewhere, and the docs keep up with the code.

`make docs` (mkdocs --strict, run by .ci/run) checks the links between the pages; the README
lives outside docs/, so its links are checked here, without mkdocs.
"""

from __future__ import annotations

import re

import click
import pytest

from conftest import ROOT
from e2b_matrix.cli import cli
from e2b_matrix.settings import VARS

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250

# [text](target): a Markdown inline link or image; the target up to the first space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(`{3,}|~{3,})")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks (a link shown in code is not a link)."""
    out, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line.lstrip())
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and line.lstrip().startswith(fence):
            fence = None
        elif fence is None:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc (and, for plain headings, GitHub) makes it."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", prose(path.read_text()), re.M)}


def local_links(text: str) -> list[str]:
    return [t for t in LINK.findall(prose(text)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def nav_pages() -> list[str]:
    """The pages the site's nav lists (mkdocs.yml: ``- Title: page.md`` under ``nav:``)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text.split("\nnav:\n", 1)[1]
    return re.findall(r"^\s+-\s+[^:\n]+:\s+(\S+\.md)\s*$", nav, re.M)


def test_readme_is_short_and_names_the_test_command():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move the detail into docs/"
    assert "make test" in README.read_text()


def test_readme_links_only_to_pages_and_anchors_that_exist():
    links = local_links(README.read_text())
    assert any(t.startswith("docs/") for t in links)
    for target in links:
        path, _, anchor = target.partition("#")
        file = (ROOT / path).resolve() if path else README
        assert file.is_relative_to(ROOT) and file.is_file(), f"README.md links to {target}: no such file"
        if anchor:
            assert anchor in anchors(file), f"README.md links to {target}: {path or 'README.md'} has no such heading"


def test_readme_links_every_page_of_the_site():
    linked = {t.partition("#")[0] for t in local_links(README.read_text())}
    missing = [p for p in nav_pages() if f"docs/{p}" not in linked]
    assert not missing, f"README.md does not link to {missing}"


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav_pages()) == pages


def test_the_link_checker_finds_a_broken_link_and_a_missing_anchor():
    text = "see [a](docs/lock.md#format), [b](docs/nope.md) and [c](https://e.example/x)\n```\n[d](in-code.md)\n```\n"
    assert local_links(text) == ["docs/lock.md#format", "docs/nope.md"]
    assert "format" in anchors(DOCS / "lock.md")
    assert "no-such-heading" not in anchors(DOCS / "lock.md")
    assert slug("`diff`: what changed between two builds") == "diff-what-changed-between-two-builds"


def test_every_environment_variable_is_documented():
    text = (DOCS / "environment.md").read_text()
    missing = [name for name in VARS if f"`{name}`" not in text]
    assert not missing, f"docs/environment.md does not document {missing} (settings.VARS)"


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += _commands(command, f"{prefix}{name} ")
        else:
            out.append(f"{prefix}{name}")
    return out


@pytest.mark.parametrize("page", [README, DOCS / "commands.md"], ids=["README.md", "docs/commands.md"])
def test_every_command_is_in_the_command_table(page):
    rows = [line for line in page.read_text().splitlines() if line.startswith("| `")]
    missing = [c for c in _commands(cli) if not any(f"`{c}" in row for row in rows)]
    assert not missing, f"{page.name}'s command table lacks {missing}"
