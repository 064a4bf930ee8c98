"""The shared Lib of both CervixTL Slicer modules (CervixTLTraining depends on CervixTL and imports it).

* :mod:`.engine` -- the ONE engine runner: every ``cervixtl`` command a separate process (trees killed on
  cancel), quick ones in a background :class:`~.engine.TaskQueue` polled by the panels' timers.
* :mod:`.contract` -- the engine's JSON contract (``"format": "cervixtl-<command>/1"``), read in one place.
* :mod:`.nodes` -- MRML volume / segmentation nodes <-> engine images and files, segmentation <-> CT ties
  (needs ``slicer``'s MRML classes and ``slicer.util`` array helpers only: tested against ``slicer-core``).
* :mod:`.geometry` -- Slicer RAS <-> engine LPS grid conversion (pure numpy).
* :mod:`.margins_preview` -- live CTV/PTV margin preview on segment labelmaps with the engine's margin code.
* :mod:`.deps` -- the first-use install of the engine's Python packages; supported Slicer / Python versions.
* :mod:`.ui` -- error display and Reload, the same in both panels.

When the modules run from a source checkout (the folders added to Slicer's *Additional module paths*), the
engine package beside them (``<checkout>/cervixtl``) is put on ``sys.path`` here; an installed extension has it
beside the scripted modules already.
"""

import sys
from pathlib import Path


def _engine_on_path() -> None:
    here = Path(__file__).resolve()
    for root in (here.parents[2], here.parents[1]):  # checkout root; an installed extension's module folder
        if (root / "cervixtl" / "runner.py").is_file():
            if str(root) not in sys.path:
                sys.path.append(str(root))
            return


try:
    import cervixtl.runner  # noqa: F401 - installed beside the modules, or on the path already
except ImportError:
    _engine_on_path()
