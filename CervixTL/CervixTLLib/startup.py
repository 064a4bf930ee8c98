"""What the CervixTL module registers with Slicer once it has started (Qt-free; the Slicer pieces are passed in).

* :func:`register_sample_data` -- a phantom pelvic CT (``Resources/SampleData/CervixTLPhantomCT.nrrd``, made by
  ``cervixtl.phantom``: seed 7, site A, 4 x 4 x 5 mm) in the Sample Data module, so that a new user can try
  Propose contours in one click without their own data;
* :func:`register_terminology` -- the CervixTL terminology (``Resources/CervixTL.term.json``: GTV / CTV / PTV and
  the organs with their DICOM codes) with the Terminologies module, so that the Segment Editor's terminology
  picker offers it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["SAMPLE_NAME", "SAMPLE_FILE", "sample_data_source", "register_sample_data", "register_terminology"]

SAMPLE_NAME = "CervixTL phantom pelvis CT"
#: The sample CT, relative to the extension's Resources folder.
SAMPLE_FILE = Path("SampleData") / "CervixTLPhantomCT.nrrd"


def _resources_dir() -> Path:
    from cervixtl.resources import resources_dir

    return Path(resources_dir())


def sample_data_source(resources: Path | None = None) -> dict[str, Any]:
    """The keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource`` for the phantom
    CT: a ``file://`` URI into the extension's Resources and its SHA-256 checksum."""
    path = (resources or _resources_dir()) / SAMPLE_FILE
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"category": "CervixTL", "sampleName": SAMPLE_NAME, "uris": [path.resolve().as_uri()],
            "fileNames": [path.name], "nodeNames": ["CervixTL phantom CT"], "checksums": [f"SHA256:{digest}"],
            "loadFileTypes": ["VolumeFile"], "thumbnailFileName": str(resources_thumbnail(resources))}


def resources_thumbnail(resources: Path | None = None) -> Path:
    """The extension icon, used as the sample's thumbnail."""
    return (resources or _resources_dir()) / "CervixTL.png"


def register_sample_data(sample_data_logic: Any, resources: Path | None = None) -> dict[str, Any]:
    """Register the phantom CT with ``sample_data_logic`` (``SampleData.SampleDataLogic``); returns the source."""
    source = sample_data_source(resources)
    sample_data_logic.registerCustomSampleDataSource(**source)
    return source


def register_terminology(terminologies_logic: Any, resources: Path | None = None) -> str:
    """Load ``CervixTL.term.json`` into the Terminologies module (``slicer.modules.terminologies.logic()``);
    returns the terminology's context name.

    Raises:
        RuntimeError: the Terminologies module refused the file.
    """
    path = (resources or _resources_dir()) / "CervixTL.term.json"
    name = terminologies_logic.LoadTerminologyFromFile(str(path))
    if not name:
        raise RuntimeError(f"the Terminologies module could not load {path.name}")
    return name
