"""Qt-free logic of the CervixTLTraining Slicer module.

Everything here runs without Qt and without the Slicer application, so that it can be tested against the real
MRML libraries of the ``slicer-core`` package:

* :mod:`.engine` -- runs the ``cervixtl`` command line as a separate process with :mod:`cervixtl.runner`: quick
  commands synchronously, long ones as a :class:`~.engine.BackgroundProcess` polled by the GUI timer,
* :mod:`.verdict` -- the plain-language verdict of a source-vs-new model comparison,
* :mod:`.estimates` -- time estimates from a measured step time, pre-flight checks, readable engine errors,
* :mod:`.tables` -- filling ``vtkMRMLTableNode`` / plot nodes,
* :mod:`.logic` -- :class:`~.logic.TrainingLogic`, what the module's Logic class delegates to.
"""
