"""Run a Jupyter notebook top to bottom in an IPython kernel of this very interpreter.

The kernelspec is made for the run, in a scratch directory, and looked up only there: neither
another Python installed on the machine nor the machine's Jupyter or IPython set-up (its
kernels, profiles, start-up scripts) takes part. The kernel is reached over unix sockets in
that directory, not over TCP. nbclient writes the outputs into the notebook given.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KERNEL_NAME = "incus-images"


def execute(
    notebook: Any, *, env: Mapping[str, str], timeout: float, startup_timeout: float
) -> None:
    """Execute notebook (an nbformat notebook) in place, the kernel's environment env.

    Raises nbclient's CellExecutionError where a cell raises; the kernel is stopped either way.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="incus-images-notebook-") as scratch:
        spec = Path(scratch, "kernels", KERNEL_NAME)
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        kernel = {"argv": argv, "display_name": "incus_images", "language": "python"}
        (spec / "kernel.json").write_text(json.dumps(kernel))
        manager = KernelManager(
            kernel_name=KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]),
            transport="ipc",
            ip=str(Path(scratch, "kernel")),
        )
        work = Path(scratch, "work")
        work.mkdir()
        runner = NotebookClient(
            notebook,
            km=manager,
            timeout=timeout,
            startup_timeout=startup_timeout,
            resources={"metadata": {"path": str(work)}},
        )
        private = {
            "IPYTHONDIR": str(Path(scratch, "ipython")),
            "JUPYTER_CONFIG_DIR": str(Path(scratch, "jupyter-config")),
            "JUPYTER_DATA_DIR": str(Path(scratch, "jupyter")),
            "JUPYTER_PLATFORM_DIRS": "1",
        }
        try:
            # cleanup_kc: nbclient stops the kernel client's sockets only for a kernel manager
            # of its own; without it they are left to the garbage collector (ResourceWarning).
            runner.execute(env={**env, **private}, cleanup_kc=True)
        finally:
            # nbclient stops only the kernels it starts itself.
            if manager.has_kernel:
                manager.shutdown_kernel()
