"""Qt-free logic of the CervixTLTraining Slicer module.

Everything here runs without Qt and without the Slicer application, so that it can be tested against the real
MRML libraries of the ``slicer-core`` package:

* (the engine runner, the JSON contract reader and node <-> file conversion are CervixTL's: ``CervixTLLib.engine``,
  ``CervixTLLib.contract``, ``CervixTLLib.nodes``; this module depends on CervixTL),
* :mod:`.verdict` -- the plain-language verdict of a source-vs-new model comparison,
* :mod:`.estimates` -- time estimates from a measured step time, pre-flight checks,
* :mod:`.tables` -- filling ``vtkMRMLTableNode`` / plot nodes,
* :mod:`.logic` -- :class:`~.logic.TrainingLogic`, what the module's Logic class delegates to.
"""
