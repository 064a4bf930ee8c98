"""CervixTL engine: transfer-learned contouring of cervical cancer radiotherapy targets on planning CT.

The engine is a plain Python package (numpy, SimpleITK, torch, MONAI, pydicom); it never imports ``slicer``.
Geometry conventions: arrays (z, y, x); spacing/origin (x, y, z); physical coordinates LPS in mm.
"""

__version__ = "0.1.0"
