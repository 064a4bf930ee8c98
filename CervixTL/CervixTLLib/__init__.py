"""Qt-free helpers of the CervixTL Slicer module.

* :mod:`.geometry` -- Slicer RAS <-> engine LPS grid conversion (pure numpy).
* :mod:`.engine` -- the ``cervixtl`` command line as a separate process, JSON progress, cancel.
* :mod:`.nodes` -- MRML volume / segmentation nodes <-> engine images and files (needs ``slicer``'s MRML
  classes and ``slicer.util`` array helpers only, so it runs against the ``slicer-core`` package in tests).
* :mod:`.margins_preview` -- live CTV/PTV margin preview on segment labelmaps with the engine's margin code.
* :mod:`.deps` -- which engine Python dependencies are missing in Slicer's Python.
"""
