"""The image pipeline behind ``resize_and_watermark``: decode, resize, watermark, encode, write."""

from __future__ import annotations

import base64
import binascii
import io
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

MIN_WIDTH = 1
MAX_WIDTH = 8192
MAX_WATERMARK_LENGTH = 100
# Refuse images bigger than this before decoding them fully (decompression bombs).
MAX_PIXELS = 50_000_000
JPEG_QUALITY = 85

STEPS = ("decode", "resize", "watermark", "encode", "write")

#: Called after each step with (step number from 1, number of steps, message).
StepCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ImageResult:
    """Where the processed image went and what it looks like."""

    path: str
    width: int
    height: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        """Return the result as the JSON-ready dict the task returns."""
        return asdict(self)


def decode_image(image_b64: str) -> Image.Image:
    """Decode a base64 image (a ``data:`` URL is accepted); raise ValueError if it is not one."""
    if not isinstance(image_b64, str) or not image_b64.strip():
        raise ValueError("image_b64 must be a non-empty base64 string")
    data = image_b64.strip()
    if data.startswith("data:"):
        # Browsers hand out data URLs (FileReader.readAsDataURL); accept them as is.
        _, _, data = data.partition(",")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image_b64 is not valid base64: {exc}") from None
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise ValueError(f"image is too large: {width}x{height} pixels (max {MAX_PIXELS})")
            probe.load()
            # Phones store rotation in EXIF; without this, portraits come out sideways.
            image = ImageOps.exif_transpose(probe)
    except ValueError:
        raise
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"image_b64 does not contain a readable image: {exc}") from None
    # Palette, CMYK and 16-bit modes resample badly or not at all: work in RGB(A).
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def generate_test_image(width: int = 1280, height: int = 800) -> Image.Image:
    """Draw a colourful gradient test image, for runs that send no image."""
    vertical = Image.linear_gradient("L")
    red = vertical.resize((width, height))
    green = vertical.rotate(90).resize((width, height))
    image = Image.merge("RGB", (red, green, Image.new("L", (width, height), 160)))
    draw = ImageDraw.Draw(image)
    for i in range(0, width, max(1, width // 8)):
        draw.ellipse((i, height // 4, i + width // 10, height // 4 + width // 10), outline="white", width=3)
    return image


def validate_width(width: Any) -> int:
    """Return ``width`` if it is an int in range; raise ValueError otherwise."""
    if isinstance(width, bool) or not isinstance(width, int) or not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"width must be an integer between {MIN_WIDTH} and {MAX_WIDTH}, got {width!r}")
    return width


def resize_to_width(image: Image.Image, width: int) -> Image.Image:
    """Scale ``image`` to ``width`` pixels wide, keeping its aspect ratio."""
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def draw_watermark(image: Image.Image, text: str) -> Image.Image:
    """Return ``image`` with ``text`` drawn half-transparent in the bottom-right corner."""
    if not text:
        return image
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=max(10, base.width // 24))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(4, base.width // 80)
    x = base.width - (right - left) - margin - left
    y = base.height - (bottom - top) - margin - top
    # A dark outline keeps white text readable on light images too.
    draw.text((x, y), text, font=font, fill=(255, 255, 255, 160), stroke_width=1, stroke_fill=(0, 0, 0, 120))
    watermarked = Image.alpha_composite(base, layer)
    return watermarked if _has_alpha(image) else watermarked.convert("RGB")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def encode_image(image: Image.Image) -> tuple[bytes, str]:
    """Encode ``image`` as PNG when it has transparency, else JPEG; return (data, extension)."""
    buffer = io.BytesIO()
    if _has_alpha(image):
        image.convert("RGBA").save(buffer, format="PNG", optimize=True)
        return buffer.getvalue(), "png"
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue(), "jpg"


def write_output(data: bytes, media_dir: Path, stem: str, extension: str) -> Path:
    """Write ``data`` to ``media_dir/stem.extension`` atomically and return the path."""
    media_dir.mkdir(parents=True, exist_ok=True)
    path = media_dir / f"{stem}.{extension}"
    # Rename into place so a browser fetching the file never gets half of it.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def process_image(
    image_b64: str | None,
    width: int,
    watermark: str,
    media_dir: Path,
    stem: str,
    on_step: StepCallback | None = None,
) -> ImageResult:
    """Run the whole pipeline, calling ``on_step`` after each step, and return what was written."""
    width = validate_width(width)
    if not isinstance(watermark, str) or len(watermark) > MAX_WATERMARK_LENGTH:
        raise ValueError(f"watermark must be a string of at most {MAX_WATERMARK_LENGTH} characters")
    total = len(STEPS)

    def step(number: int, message: str) -> None:
        if on_step is not None:
            on_step(number, total, message)

    image = decode_image(image_b64) if image_b64 is not None else generate_test_image()
    step(
        1,
        f"decoded {image.width}x{image.height} image"
        if image_b64 is not None
        else f"generated {image.width}x{image.height} test image",
    )
    image = resize_to_width(image, width)
    step(2, f"resized to {image.width}x{image.height}")
    image = draw_watermark(image, watermark)
    step(3, "watermarked" if watermark else "no watermark requested")
    data, extension = encode_image(image)
    step(4, f"encoded {extension.upper()} ({len(data)} bytes)")
    path = write_output(data, media_dir, stem, extension)
    step(5, f"written to {path.name}")
    return ImageResult(path=str(path), width=image.width, height=image.height, bytes=len(data))
