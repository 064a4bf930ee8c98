"""Which compute devices the engine can use (the answer of ``cervixtl devices``).

Run in the engine's process, never in Slicer's: importing torch (and initialising CUDA) in the GUI process
freezes it for seconds and locks torch's files, so the Slicer modules ask ``cervixtl devices --json`` instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FORMAT", "probe_devices"]

#: ``format`` key of ``cervixtl devices --json``.
FORMAT = "cervixtl-devices/1"


def probe_devices() -> dict[str, Any]:
    """``{"format", "torch": version or None, "cuda": bool, "gpus": [{"index", "name", "memory_gib"}],
    "recommended": "cuda" | "cpu", "fast_default": bool}``: ``fast_default`` (the CPU-friendly "fast" mode of
    contouring) is on only without a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return {"format": FORMAT, "torch": None, "cuda": False, "gpus": [], "recommended": "cpu",
                "fast_default": True}
    cuda = bool(torch.cuda.is_available())
    gpus = []
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": str(props.name), "memory_gib": round(props.total_memory / 2**30, 1)})
    return {"format": FORMAT, "torch": str(torch.__version__), "cuda": cuda, "gpus": gpus,
            "recommended": "cuda" if cuda else "cpu", "fast_default": not cuda}
