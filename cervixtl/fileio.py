"""Old name of :mod:`cervixtl.atomic` (atomic writes), kept only so that branches written against it still
import; new code imports :mod:`cervixtl.atomic`."""

from .atomic import *
from .atomic import __all__  # noqa: F401
