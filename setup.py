"""Build step that ships the engine's data with the package (everything else is in pyproject.toml).

``Resources/`` stays at the top level for the Slicer extension; a (non-editable) build copies the parts the
engine reads -- the bundled demo model, the ``Models.json`` catalogue, the terminology, the ROI name mapping
and the JSON Schemas -- into ``cervixtl/resources/`` of the wheel, where :mod:`cervixtl.resources` finds them.
The weights are never duplicated in git.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: What the engine needs from Resources/ (files or folders).
SHIPPED = ("CervixTL.term.json", "Models.json", "roi_mapping.json", "source_structures.json", "Models", "schemas")


class BuildPyWithResources(build_py):
    """``build_py`` plus a copy of :data:`SHIPPED` into ``<build_lib>/cervixtl/resources``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads Resources/ in the checkout
        src = Path(__file__).resolve().parent / "Resources"
        dest = Path(self.build_lib) / "cervixtl" / "resources"
        for name in SHIPPED:
            item, target = src / name, dest / name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            elif item.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item, target)


setup(cmdclass={"build_py": BuildPyWithResources})
