"""The built documentation site works opened as files, and its tour page shows the tour run.

``nox -s docs`` builds site/ and then runs this module on it (``DOCS_SITE=site``). Run on its
own, or in the test suite (``nox -s tests`` installs the docs dependency group too), the
module builds the site once, into a temporary directory, with the tour executed against the
session's throwaway daemon; without mkdocs it fails.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.test_docs import LONGEST_CODE_LINE

ROOT = Path(__file__).resolve().parent.parent

# Building the site runs the tour against a daemon (scripts/docs_tour_page.py).
pytestmark = pytest.mark.incusd


class _Page(HTMLParser):
    """What a built page links to and which fragments it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append((tag, value))
            elif name in ("id", "name") and value is not None:
                self.ids.add(value)


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = os.environ.get("DOCS_SITE")
    if built:
        directory = Path(built).resolve()
        assert (directory / "index.html").is_file(), f"DOCS_SITE={built} holds no built site"
        return directory
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        # The test session installs the docs group: without it, the suite is not whole.
        pytest.fail("mkdocs is not installed: install the docs dependency group", pytrace=False)
    incusd = request.getfixturevalue("incusd")
    directory = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)]
    env = {**os.environ, "INCUS_SOCKET": incusd.socket_path, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


@pytest.fixture(scope="module")
def pages(site: Path) -> dict[Path, _Page]:
    parsed = {}
    for path in sorted(site.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text())
        parsed[path] = page
    return parsed


def _internal(link: str) -> bool:
    # A scheme (https:, mailto:, data:) or a host is a link out of the site.
    parts = urlsplit(link)
    return not parts.scheme and not parts.netloc


def test_every_link_inside_the_site_is_a_file(site: Path, pages: dict[Path, _Page]) -> None:
    """As file:// resolves them: a link to a folder would show its listing, not a page."""
    broken = []
    checked = 0
    for path, page in pages.items():
        if path == site / "404.html":
            # A web server's answer to any missing address, so its links start at the site's
            # root (/assets/...); opened as files there is nothing that leads to it.
            continue
        for tag, link in page.links:
            if not _internal(link):
                continue
            parts = urlsplit(link)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            checked += 1
            if not target.is_file() or not target.is_relative_to(site):
                broken.append(f"{path.relative_to(site)}: <{tag}> {link}")
            elif (
                parts.fragment
                and target.suffix == ".html"
                and unquote(parts.fragment) not in pages[target].ids
            ):
                broken.append(f"{path.relative_to(site)}: <{tag}> {link} (no such anchor)")
    assert broken == []
    # Every page links the others through the navigation: the links were found.
    assert checked > 40 * len(pages)
    assert (site / "getting-started.html").is_file()


def test_nothing_is_loaded_from_the_network(pages: dict[Path, _Page]) -> None:
    """No script, style sheet, font or image from elsewhere: the site works offline."""
    remote = [
        f"{path.name}: <{tag}> {link}"
        for path, page in pages.items()
        for tag, link in page.links
        if tag in ("script", "link", "img", "iframe") and not _internal(link)
    ]
    assert remote == []


def test_search_works_from_files(site: Path, pages: dict[Path, _Page]) -> None:
    """Opened as files, Material's search reads its index from a script (a page from file://
    cannot fetch the JSON one), and runs its worker in a frame (a page from file:// cannot
    start a worker): every page loads that shim, before Material's own script."""
    index = (site / "search" / "search_index.js").read_text()
    assert index.startswith("var __index = {")
    assert '"location":"tour.html"' in index
    assert '"location":"getting-started.html' in index
    for path, page in pages.items():
        scripts = [link for tag, link in page.links if tag == "script"]
        shim = [
            n for n, link in enumerate(scripts) if link.endswith("javascripts/iframe-worker.js")
        ]
        bundle = [n for n, link in enumerate(scripts) if "/javascripts/bundle." in f"/{link}"]
        assert shim and bundle and shim[0] < bundle[0], path
    assert "window.Worker = FrameWorker" in (site / "javascripts" / "iframe-worker.js").read_text()


def _outputs(tour: str) -> list[str]:
    return re.findall(r'<div class="tour-output">(.*?)</div>\n', tour)


def test_the_tour_page_shows_the_tour_run(site: Path) -> None:
    tour = (site / "tour.html").read_text()
    outputs = _outputs(tour)
    # The cells ran: each printed or showed something, none raised.
    assert len(outputs) >= 12
    assert not [output for output in outputs if "Traceback" in output or "Error" in output]

    # The image list: the SDK's table, a row of it the image the tour imported.
    (listing,) = [output for output in outputs if "<caption>1 image</caption>" in output]
    assert listing.count('<table class="incus-images">') == 1
    row = re.search(
        r'<tr><td>tour/demo</td><td><code title="([0-9a-f]{64})">([0-9a-f]{12})<', listing
    )
    assert row is not None
    assert row[2] == row[1][:12]
    # The same image as a card, and at the end the empty list.
    assert f'<b>Image</b> <code title="{row[1]}">{row[2]}</code>' in tour
    assert "<caption>0 images</caption>" in outputs[-1]

    # The two progress bars, drawn as they ended: full. (tqdm spaces its text with U+2007.)
    bars = re.findall(
        r'<span>(import|export):\s100%</span><progress value="([^"]+)" max="([^"]+)"', tour
    )
    assert [(name, value == most) for name, value, most in bars] == [
        ("import", True),
        ("export", True),
    ]
    # Results as text: the export checked out.
    assert "<pre>([&#x27;tour.tar.gz&#x27;], True)</pre>" in outputs
    # No widget left for a script to draw (there is none on the page).
    assert "application/vnd.jupyter" not in tour


def test_the_downloadable_notebook_is_the_repositorys(site: Path) -> None:
    """The site offers docs/tour.ipynb as it is stored: without outputs."""
    assert (site / "tour.ipynb").read_bytes() == (ROOT / "docs" / "tour.ipynb").read_bytes()
    assert '"outputs": []' in (site / "tour.ipynb").read_text()


def _code_blocks(text: str) -> Iterator[tuple[str, str]]:
    """(class, text) of each highlighted block of a built page."""
    pattern = r'<div class="([^"]*highlight[^"]*)"><pre>(?:<span></span>)?<code>(.*?)</code></pre>'
    for match in re.finditer(pattern, text, re.DOTALL):
        yield match[1], html.unescape(re.sub(r"<[^>]+>", "", match[2]))


def test_code_lines_fit_the_column(pages: dict[Path, Any], site: Path) -> None:
    """The examples, the tour's cells and the reference's signatures: see LONGEST_CODE_LINE.
    A text block (a message, output) wraps instead (docs/stylesheets/extra.css)."""
    blocks = [(path, kind, code) for path in pages for kind, code in _code_blocks(path.read_text())]
    assert len(blocks) > 100
    too_long = [
        f"{path.relative_to(site)}: {line}"
        for path, kind, code in blocks
        if "language-text" not in kind
        for line in code.splitlines()
        if len(line) > LONGEST_CODE_LINE
    ]
    assert too_long == []
    assert any("language-text" in kind for _, kind, _ in blocks)
