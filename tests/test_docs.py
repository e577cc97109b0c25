"""The documentation's own checks that do not need mkdocs (nox -s docs builds the site;
tests/test_docs_site.py checks what it built).

The API reference documents every public name and nothing else, the examples are Python and
fit the page's column, and the README's links into docs/ lead somewhere.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import incus_images

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
#: Public names that live in a public module of their own rather than in incus_images.
OTHER_PUBLIC = {"progress.TqdmProgress"}
#: The longest code line a page shows whole, without scrolling, in a 1280 px wide window: the
#: theme's grid is 61rem (1220 px; 1rem is 20 px there), less the navigation (12.1rem, with the
#: contents folded into it: mkdocs.yml's toc.integrate) and the column's margins (2 x 1.2rem)
#: leaves about 930 px; less a code block's padding (2 x 1.18em of 13.6 px code text) about
#: 900 px. A monospace character is about 0.6em, 8.2 px: 110 characters fit. 100, ruff's line
#: length, leaves room for a wider monospace font. Text blocks (messages, output) wrap instead.
LONGEST_CODE_LINE = 100


def test_the_reference_documents_exactly_the_public_names() -> None:
    directives = [
        match[1]
        for page in sorted((DOCS / "reference").glob("*.md"))
        for match in re.finditer(r"^::: incus_images\.(\S+)$", page.read_text(), re.MULTILINE)
    ]
    assert len(directives) == len(set(directives)), "a name is documented twice"
    public = set(incus_images.__all__) - {"__version__"}
    assert set(directives) == public | OTHER_PUBLIC


def _code_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line, language, code) of each fenced block, its indentation removed."""
    text = page.read_text()
    blocks = []
    for match in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL):
        indent = len(match[1])
        code = "\n".join(line[indent:] for line in match[3].splitlines())
        blocks.append((text.count("\n", 0, match.start()) + 1, match[2], code))
    return blocks


def _python_blocks(page: Path) -> list[tuple[int, str]]:
    return [(line, code) for line, language, code in _code_blocks(page) if language == "python"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(DOCS)))
def test_every_python_example_compiles(page: Path) -> None:
    for line, code in _python_blocks(page):
        # Notebook cells may await at the top level (docs/async.md).
        compile(code, f"{page.name}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(DOCS)))
def test_every_code_line_fits_the_column(page: Path) -> None:
    too_long = [
        line
        for _, language, code in _code_blocks(page)
        if language != "text"
        for line in code.splitlines()
        if len(line) > LONGEST_CODE_LINE
    ]
    assert too_long == []


def test_the_examples_were_found() -> None:
    assert sum(len(_python_blocks(page)) for page in PAGES) >= 20


def test_the_readme_links_pages_that_exist() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)", (ROOT / "README.md").read_text())
    assert {"docs/getting-started.md", "docs/errors.md"} <= set(links)
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert missing == []


#: The one way to install, from a checkout: the SDK, or with the progress extra (other
#: packages may follow, e.g. ipywidgets for the notebook's bars).
FROM_A_CHECKOUT = {".", "'.[progress]'"}
#: What to write once the package is published; only ever said as such.
ONCE_PUBLISHED = {"incus_images", "'incus_images[progress]'"}


def _install_mentions() -> list[tuple[str, str, str]]:
    """(file, the first argument, the text just before) of every pip install the user reads."""
    files = [ROOT / "README.md", *PAGES, *DOCS.glob("*.ipynb")]
    files += sorted((ROOT / "src").rglob("*.py"))
    mentions = []
    for path in files:
        # A notebook's JSON strings are read as their text.
        text = path.read_text().replace('\\"', '"').replace("\\n", "\n")
        # The argument: quoted whole, or up to a space, a backtick or a quote.
        for match in re.finditer(r"pip install +('[^']*'|[^\s`'\"]+)", text):
            before = " ".join(text[max(0, match.start() - 80) : match.start()].split())
            mentions.append((str(path.relative_to(ROOT)), match[1], before))
    return mentions


def test_every_install_instruction_is_the_one_agreed_form() -> None:
    mentions = _install_mentions()
    assert len(mentions) >= 6, mentions
    wrong = [
        mention
        for mention in mentions
        if not (
            mention[1] in FROM_A_CHECKOUT
            or (mention[1] in ONCE_PUBLISHED and "published" in mention[2])
        )
    ]
    assert wrong == []


def test_the_readme_first_screen_says_how_to_install() -> None:
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "pip install .  " in first_screen
    assert "pip install '.[progress]'" in first_screen
    assert "pip install 'incus_images[progress]'" in first_screen
