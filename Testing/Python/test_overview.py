"""The demo overview PNG: every structure outlined (targets and organs) and the patient directions written."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from matplotlib.axes import Axes  # noqa: E402 - after choosing the backend

from cervixtl.overview import EDGE_LETTERS, write_overview  # noqa: E402
from cervixtl.phantom import make_phantom  # noqa: E402


def test_overview_draws_organs_and_orientation_letters(tmp_path, monkeypatch):
    texts: list[str] = []
    colours: list[tuple] = []
    real_text, real_contour = Axes.text, Axes.contour
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, *a, **k: (texts.append(s), real_text(self, x, y, s, *a, **k))[1])
    monkeypatch.setattr(Axes, "contour", lambda self, *a, **k: (colours.append(tuple(k["colors"][0])),
                                                                  real_contour(self, *a, **k))[1])
    ct, seg = make_phantom(3, "A")
    p = write_overview(ct, tmp_path / "o.png", seg)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # radiological display: patient right on the image's left in axial/coronal, anterior left in sagittal
    assert EDGE_LETTERS == {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"),
                            "sagittal": ("A", "P", "S", "I")}
    assert sorted(texts) == sorted(sum((list(v) for v in EDGE_LETTERS.values()), []))
    drawn = {tuple(s.color) for s in seg.segments if tuple(s.color) in colours}
    organs = {tuple(seg["Bladder"].color), tuple(seg["Rectum"].color)}
    assert organs <= drawn and tuple(seg["GTV"].color) in drawn
