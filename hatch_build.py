"""Hatchling build hook: generate the blocking ``_sync`` package from ``_async`` for every build.

``_sync/`` is not tracked by git, so each build (sdist, wheel, editable) makes it and registers
it as an artifact: hatchling would otherwise leave the git-ignored files out of the wheel.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class UnasyncBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "unasync"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        script = Path(self.root) / "scripts" / "run_unasync.py"
        spec = importlib.util.spec_from_file_location("_incus_images_run_unasync", script)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load the generator {script}")
        generator = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = generator
        spec.loader.exec_module(generator)
        generator.generate()
        build_data["artifacts"].append("/src/incus_images/_sync/")
        if self.target_name == "sdist":
            build_data["artifacts"].append("/tests/_sync/")
