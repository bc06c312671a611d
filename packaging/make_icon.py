"""Draw the LEM Desktop icon with Qt and write resources/icon.png (512 px) and resources/icon.icns.

The design is ours: a blue rounded tile (the app's accent colour) holding a "sandwich" of three bars, the
ethical kernel around a prompt, with the middle bar in gold (the gold answers), ringed by five dots (the five
axioms). Each size is drawn from vectors, not scaled down from one bitmap, and small sizes drop the fine detail.

`iconutil` exists only on macOS, so the .icns container is written here: the magic `icns`, the total length,
then one element per image: a 4-byte type, its length (header included) and PNG data (PNG elements are
accepted by macOS 10.7 and later). Run from the repository root:

    .venv/bin/python packaging/make_icon.py            # rewrite resources/icon.png and resources/icon.icns
    .venv/bin/python packaging/make_icon.py --check    # parse the written .icns back and list its images
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = ROOT / "resources"

# .icns element types holding PNG data, and the pixel size of each (the @2x types hold the doubled size).
ICNS_TYPES: list[tuple[bytes, int]] = [
    (b"icp4", 16),
    (b"icp5", 32),
    (b"ic11", 32),    # 16@2x
    (b"ic12", 64),    # 32@2x
    (b"ic07", 128),
    (b"ic13", 256),   # 128@2x
    (b"ic08", 256),
    (b"ic14", 512),   # 256@2x
    (b"ic09", 512),
    (b"ic10", 1024),  # 512@2x
]
PNG_SIZE = 512  # resources/icon.png: window and tray icon on Linux and Windows


def _app():  # noqa: ANN202 - a QGuiApplication, created once, offscreen
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    return QGuiApplication.instance() or QGuiApplication([sys.argv[0]])


def draw(size: int):  # noqa: ANN201 - a QImage
    """The icon as a size x size ARGB image."""
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QBrush, QColor, QImage, QLinearGradient, QPainter, QPainterPath, QPen

    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = size / 1024.0  # design units: a 1024 canvas, as Apple's icon grid

    # The tile: 824 units with a 100-unit margin (macOS grid); small sizes use more of the canvas.
    margin = 100 if size >= 128 else 40
    tile = QRectF(margin * s, margin * s, (1024 - 2 * margin) * s, (1024 - 2 * margin) * s)
    radius = tile.width() * 0.225
    if size >= 128:  # a soft shadow under the tile
        for i, alpha in enumerate((18, 14, 10, 6)):
            grow = (i + 1) * 6 * s
            shadow = tile.adjusted(-grow * 0.5, grow * 0.2, grow * 0.5, grow * 1.1)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(10, 20, 60, alpha))
            p.drawRoundedRect(shadow, radius + grow, radius + grow)
    gradient = QLinearGradient(tile.topLeft(), tile.bottomRight())
    gradient.setColorAt(0.0, QColor("#4a8cf5"))
    gradient.setColorAt(1.0, QColor("#1d3f9e"))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(gradient))
    p.drawRoundedRect(tile, radius, radius)

    cx, cy = 512 * s, 512 * s
    detailed = size >= 48
    if detailed:
        # Five axioms: dots on a ring, joined by a thin circle.
        ring_r = 300 * s
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QPen(QColor(255, 255, 255, 90), max(1.0, 10 * s)))
        p.drawEllipse(QPointF(cx, cy), ring_r, ring_r)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor("white"))
        dot_r = 34 * s
        for k in range(5):
            angle = -math.pi / 2 + k * 2 * math.pi / 5
            p.drawEllipse(QPointF(cx + ring_r * math.cos(angle), cy + ring_r * math.sin(angle)), dot_r, dot_r)

    # The sandwich: kernel / prompt (gold) / kernel.
    bar_w = (380 if detailed else 560) * s
    bar_h = (70 if detailed else 120) * s
    gap = (34 if detailed else 60) * s
    for i, colour in enumerate(("#ffffff", "#ffc94a", "#ffffff")):
        y = cy + (i - 1) * (bar_h + gap) - bar_h / 2
        width = bar_w if i != 1 else bar_w * 0.82
        path = QPainterPath()
        path.addRoundedRect(QRectF(cx - width / 2, y, width, bar_h), bar_h / 2, bar_h / 2)
        p.fillPath(path, QColor(colour))
    p.end()
    return image


def png_bytes(size: int) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not draw(size).save(buffer, "PNG"):
        raise RuntimeError(f"could not encode the {size}px icon as PNG")
    buffer.close()
    return bytes(data)


def icns_bytes(images: dict[int, bytes]) -> bytes:
    """An .icns container holding the PNG for every type in ICNS_TYPES (`images` maps size -> PNG)."""
    body = b"".join(kind + struct.pack(">I", 8 + len(images[px])) + images[px] for kind, px in ICNS_TYPES)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def read_icns(data: bytes) -> list[tuple[str, bytes]]:
    """(type, payload) for each element; raises ValueError on a malformed file."""
    if data[:4] != b"icns" or struct.unpack(">I", data[4:8])[0] != len(data):
        raise ValueError("not an .icns file (bad magic or length)")
    out, pos = [], 8
    while pos < len(data):
        kind, length = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])[0]
        if length < 8 or pos + length > len(data):
            raise ValueError(f"bad element length at offset {pos}")
        out.append((kind.decode("ascii"), data[pos + 8:pos + length]))
        pos += length
    return out


def write_icons(folder: Path = RESOURCES) -> tuple[Path, Path]:
    _app()
    images = {px: png_bytes(px) for px in sorted({px for _, px in ICNS_TYPES} | {PNG_SIZE})}
    folder.mkdir(parents=True, exist_ok=True)
    png, icns = folder / "icon.png", folder / "icon.icns"
    png.write_bytes(images[PNG_SIZE])
    icns.write_bytes(icns_bytes(images))
    return png, icns


def check(icns: Path) -> list[str]:
    from PySide6.QtGui import QImage

    _app()
    lines = []
    for kind, payload in read_icns(icns.read_bytes()):
        image = QImage.fromData(payload, "PNG")
        if image.isNull():
            raise ValueError(f"{kind}: payload is not a readable PNG")
        lines.append(f"{kind}: {image.width()}x{image.height()} PNG, {len(payload)} bytes")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only parse resources/icon.icns and list its images")
    parser.add_argument("--out", type=Path, default=RESOURCES, help="folder to write into (default: resources/)")
    args = parser.parse_args(argv)
    icns = args.out / "icon.icns"
    if not args.check:
        png, icns = write_icons(args.out)
        print(f"wrote {png} and {icns}")
    for line in check(icns):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
