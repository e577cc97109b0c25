"""docs/tour.ipynb runs, top to bottom, against the session's throwaway daemon.

The notebook is documentation; this test keeps it true. It is executed with nbclient in an
IPython kernel of this very interpreter (scripts/run_notebook.py, which the documentation
site's build uses too: no other Python or Jupyter set-up of the machine takes part), the
daemon is found the normal way ($INCUS_SOCKET), and the outputs are read as a reader would
see them: no cell raised, the images show as an HTML table, the export checked out, and the
daemon is left without the image.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from run_notebook import execute  # scripts/ is on the pytest pythonpath

from tests.conftest import _unavailable

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tour.ipynb"
#: A cold kernel with tqdm, ipywidgets and the SDK to import, on a loaded 2-core machine.
STARTUP_SECONDS = 120
CELL_SECONDS = 120

pytestmark = pytest.mark.incusd


def _text(output: Any) -> str:
    """What an output shows as text: a stream's text, or a result's text/plain."""
    if output.output_type == "stream":
        return str(output.text)
    return str(output.get("data", {}).get("text/plain", ""))


def _html(cell: Any) -> str:
    return "".join(output.get("data", {}).get("text/html", "") for output in cell.outputs)


def _fingerprints(incusd: Any) -> set[str]:
    """The fingerprints of the images on the daemon, read behind the SDK's back."""
    urls = incusd.request("GET", "/1.0/images?recursion=0")["metadata"]
    return {url.rsplit("/", 1)[-1] for url in urls}


def _cell(cells: list[Any], fragment: str) -> Any:
    """The one code cell whose source holds fragment."""
    (found,) = [cell for cell in cells if cell.cell_type == "code" and fragment in cell.source]
    return found


def test_the_tour_notebook_runs_against_a_daemon(incusd: Any) -> None:
    try:
        import nbformat
        from nbclient.exceptions import CellExecutionError
    except ImportError as exc:
        _unavailable(f"cannot execute notebooks: {exc} (the test dependency group has it)")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    stored = notebook.cells
    assert all(cell.get("outputs", []) == [] for cell in stored), "store it without outputs"
    # A last cell, added here only, says which interpreter the kernel really runs.
    notebook.cells = [*stored, nbformat.v4.new_code_cell("import sys; print(sys.executable)")]

    before = _fingerprints(incusd)
    try:
        # Client() in the notebook finds the daemon as it would any: $INCUS_SOCKET.
        execute(
            notebook,
            env={**os.environ, "INCUS_SOCKET": incusd.socket_path},
            timeout=CELL_SECONDS,
            startup_timeout=STARTUP_SECONDS,
        )
    except CellExecutionError as exc:
        pytest.fail(f"a cell of {NOTEBOOK.name} raised:\n{exc}", pytrace=False)
    finally:
        # What a failed run left behind goes, so the session daemon's other tests see the
        # store as it was.
        left_behind = _fingerprints(incusd) - before
        for leftover in left_behind:
            incusd.request("DELETE", f"/1.0/images/{leftover}")

    cells = notebook.cells
    outputs = [output for cell in cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.output_type == "error"]
    # Nothing on stderr: no warning (tqdm's, without ipywidgets), no traceback.
    assert not [output for output in outputs if output.get("name") == "stderr"]
    assert _text(cells[-1].outputs[0]).strip() == sys.executable

    # The image the notebook made: the full fingerprint is the short one's hover title.
    created = _html(_cell(cells, "client.images.create("))
    (fingerprint,) = re.findall(r'<code title="([0-9a-f]{64})">', created)
    assert f'<b>Image</b> <code title="{fingerprint}">{fingerprint[:12]}</code>' in created
    assert "<tr><th>os</th><td>tour</td></tr>" in created

    # The list: one table, the image a row of it.
    listed = _html(_cell(cells, 'images = client.images.list(filter="properties.os eq tour")'))
    assert listed.count("<table") == 1
    row = re.search(
        rf'<tr><td>tour/demo</td><td><code title="{fingerprint}">([^<]*)</code>', listed
    )
    assert row is not None
    assert row.group(1) == fingerprint[:12]
    aliases = _html(_cell(cells, "client.images.list_aliases()"))
    assert f'<tr><td>tour/demo</td><td><code title="{fingerprint}">' in aliases

    # The import and the export drew progress bars as widgets (tqdm.auto found ipywidgets).
    for fragment in ('TqdmProgress("import")', 'TqdmProgress("export")'):
        kinds = {
            kind for output in _cell(cells, fragment).outputs for kind in output.get("data", {})
        }
        assert "application/vnd.jupyter.widget-view+json" in kinds, fragment

    # The async client read the updated image.
    updated = _cell(cells, "async with AsyncClient() as async_client")
    assert "'release': '2'" in _text(updated.outputs[-1])

    # The watcher, a task on the kernel's loop, heard the two alias changes the cell above
    # made from the blocking client, in order, as typed events (their text view).
    watched = "\n".join(map(_text, _cell(cells, "await asyncio.wait_for(listening").outputs))
    created_at = watched.find("image-alias-created")
    renamed_at = watched.find("image-alias-renamed")
    assert 0 <= created_at < renamed_at, watched
    assert "tour/watched" in watched[created_at:renamed_at]
    assert "tour/heard" in watched[renamed_at:]
    assert "EventGap" not in watched
    # And they show as cards, as the other models do.
    cards = _html(_cell(cells, "await asyncio.wait_for(listening"))
    assert cards.count("<b>ImageEvent</b> image-alias-") == 2, cards

    # The export was written and matched the fingerprint.
    exported = _text(_cell(cells, "client.images.export(").outputs[-1])
    assert exported == "(['tour.tar.gz'], True)"

    # The clean-up: the list said the image was gone, and the daemon has nothing new.
    assert "0 images" in _html(_cell(cells, "client.images.delete("))
    assert fingerprint not in before
    assert left_behind == set()
