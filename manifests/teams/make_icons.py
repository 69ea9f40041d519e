"""Draw the Teams app icons (color.png 192x192, outline.png 32x32) with the standard library only.

Teams wants a full-colour 192x192 icon and a 32x32 outline icon that is white on a transparent
background. Run ``python manifests/teams/make_icons.py`` to regenerate both next to this file; the
output is deterministic, so the committed PNGs only change when this script does.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

Pixel = tuple[int, int, int, int]
Painter = Callable[[float, float], Pixel]

BRAND: Pixel = (29, 78, 216, 255)  # the accentColor in manifest.json (#1D4ED8)
WHITE: Pixel = (255, 255, 255, 255)
CLEAR: Pixel = (0, 0, 0, 0)


def png_bytes(width: int, height: int, paint: Painter) -> bytes:
    """Encode an RGBA image; ``paint(x, y)`` gets coordinates scaled to 0..1."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type "None" for every scanline
        for x in range(width):
            rows.extend(paint((x + 0.5) / width, (y + 0.5) / height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        crc = zlib.crc32(body) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def _in_bubble(x: float, y: float, inset: float = 0.0) -> bool:
    """A speech bubble: a rounded box with a small tail at the bottom left."""
    left, top, right, bottom, radius = 0.18 + inset, 0.22 + inset, 0.82 - inset, 0.68 - inset, 0.1
    cx = min(max(x, left + radius), right - radius)
    cy = min(max(y, top + radius), bottom - radius)
    if left <= x <= right and top <= y <= bottom and (x - cx) ** 2 + (y - cy) ** 2 <= radius**2:
        return True
    # Tail: a triangle below the box.
    tail_top = bottom - 0.01
    return tail_top <= y <= 0.82 - inset and 0.3 <= x <= 0.3 + (0.82 - inset - y) * 1.2


def _color(x: float, y: float) -> Pixel:
    if _in_bubble(x, y):
        # Three "typing" dots inside the bubble.
        for dot_x in (0.36, 0.5, 0.64):
            if (x - dot_x) ** 2 + (y - 0.45) ** 2 <= 0.045**2:
                return BRAND
        return WHITE
    return BRAND


def _outline(x: float, y: float) -> Pixel:
    # White border of the bubble only; Teams tints it, so no other colour may appear.
    return WHITE if _in_bubble(x, y) and not _in_bubble(x, y, inset=0.07) else CLEAR


def main(out_dir: Path) -> None:
    (out_dir / "color.png").write_bytes(png_bytes(192, 192, _color))
    (out_dir / "outline.png").write_bytes(png_bytes(32, 32, _outline))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
