"""An MkDocs hook (mkdocs.yml's ``hooks:``): the site's tour page is docs/tour.ipynb as it runs.

At every build the notebook is executed top to bottom with nbclient, in an IPython kernel of
the interpreter running MkDocs, against the daemon at ``$INCUS_SOCKET``, and the run becomes a
page of the site, ``tour.md``: each code cell as a Python block, then what it showed (the
SDK's HTML tables, the progress bars as they ended, the results' text). A reader sees what the
tour does without running it, and the page cannot drift from what the SDK does.

``nox -s docs`` builds under ``scripts/throwaway_incusd.py run --``, so the tour runs against a
daemon started for the build and removed after it. Without ``$INCUS_SOCKET`` the build fails
(never a page without outputs, never the machine's own daemon by accident), and so does a cell
that raises or writes to stderr. The repository's notebook is only read: it stays free of
outputs, and the site still offers it for download beside the page.
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

# MkDocs loads a hook by its path, without putting its folder (scripts/) on sys.path.
SCRIPTS = str(Path(__file__).resolve().parent)
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)
from run_notebook import execute  # noqa: E402 - after the path is set

NOTEBOOK = "tour.ipynb"
PAGE = "tour.md"
#: A cold kernel importing tqdm, ipywidgets and the SDK, on a loaded 2-core machine.
STARTUP_SECONDS = 120
CELL_SECONDS = 120
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    notebook = Path(config.docs_dir) / NOTEBOOK
    page = _page(_execute(notebook))
    files.append(File.generated(config, PAGE, content=page))
    return files


def _execute(path: Path) -> Any:
    try:
        import nbformat
        from nbclient.exceptions import CellExecutionError
    except ImportError as exc:
        raise PluginError(
            f"the tour page executes {path}: {exc} (the docs dependency group has what it needs)"
        ) from exc
    if not os.environ.get("INCUS_SOCKET"):
        raise PluginError(
            f"the tour page executes {path} against a daemon, and $INCUS_SOCKET names none: "
            "build under `python3 scripts/throwaway_incusd.py run -- mkdocs build` (as root), "
            "as `nox -s docs` does"
        )

    notebook = nbformat.read(path, as_version=4)
    try:
        execute(notebook, env=os.environ, timeout=CELL_SECONDS, startup_timeout=STARTUP_SECONDS)
    except CellExecutionError as exc:
        raise PluginError(f"a cell of {path} raised:\n{exc}") from exc
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == "stderr":
                raise PluginError(
                    f"a cell of {path} wrote to stderr (a warning?):\n{output.text}\n"
                    f"in the cell:\n{cell.source}"
                )
    return notebook


def _page(notebook: Any) -> str:
    widgets = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    parts = []
    for number, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            parts.append(cell.source)
        elif cell.cell_type == "code":
            parts.append(f"```python\n{cell.source}\n```")
            parts.extend(_output(output, widgets) for output in cell.outputs)
        if number == 0:
            parts.append(_ABOUT)
    return "\n\n".join(parts) + "\n"


_ABOUT = f"""\
!!! note "This page is the notebook, run"
    It shows [`{NOTEBOOK}`]({NOTEBOOK}) as it ran when this site was built, against a \
throwaway Incus daemon: each cell, then what it showed. Download the notebook to run it \
against a daemon of your own."""


def _output(output: Any, widgets: dict[str, Any]) -> str:
    """One output as a raw HTML block (Markdown leaves it as it is)."""
    if output.output_type == "stream":
        inner = _pre(output.text)
    else:
        data = output.get("data", {})
        if WIDGET_VIEW in data:
            inner = _widget(data[WIDGET_VIEW]["model_id"], widgets)
        elif "text/html" in data:
            # The SDK's own tables: every value in them is escaped already (see _display.py).
            inner = data["text/html"]
        else:
            inner = _pre(data.get("text/plain", ""))
    # One line: a blank line inside would end the raw HTML block.
    inner = inner.replace("\n", "&#10;") if "<pre>" in inner else inner.replace("\n", " ")
    return f'<div class="tour-output">{inner}</div>'


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text.rstrip())}</pre>"


def _widget(model_id: str, widgets: dict[str, Any]) -> str:
    """A widget drawn as it last was: the page has no kernel (or script) to draw it live.

    The tour's widgets are tqdm's bars, a row of a label, a progress bar and a text."""
    model = widgets.get(model_id)
    if model is None:
        raise PluginError(f"the tour shows widget {model_id}, whose state was not kept")
    name, state = model["model_name"], model["state"]
    if name == "HBoxModel":
        children = (
            _widget(child.removeprefix("IPY_MODEL_"), widgets) for child in state["children"]
        )
        return f'<div class="tour-widget-row">{"".join(children)}</div>'
    if name == "HTMLModel":
        # tqdm writes this HTML from its own numbers and the bar's description.
        return f"<span>{state.get('value', '')}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        value, most = state.get("value", 0), state.get("max", 100)
        return f'<progress value="{value}" max="{most}">{value}/{most}</progress>'
    raise PluginError(f"the tour shows a {name} widget, which its page cannot draw")
