"""Still images: decoding a camera frame safely, and the two copies the pipeline needs (full
resolution for embedding, area-downscaled for the detector)."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lambda_image.errors import ImageTooLarge, InvalidImage
from lambda_image.video import Frame

#: Decoded size limit of one frame: a 24-megapixel camera passes, a decompression bomb does not.
DEFAULT_MAX_PIXELS = 25_000_000


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGB image from encoded bytes (EXIF orientation applied).

    Raises InvalidImage for empty or undecodable bytes and ImageTooLarge for more than
    *max_pixels* pixels, which is checked from the header before any pixel is decoded.
    """
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                pixels = im.width * im.height
                if pixels > max_pixels:
                    raise ImageTooLarge(f"{im.width}x{im.height} is {pixels} pixels, over the "
                                        f"limit of {max_pixels}")
                image = ImageOps.exif_transpose(im).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image too large to decode: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"not a decodable image: {exc}") from exc
    return image


def still_frame(image: Image.Image, *, detect_max_side: int) -> Frame:
    """One still as the recognizer's frame: full-resolution RGB plus the detector's copy."""
    rgb = np.ascontiguousarray(np.asarray(image))
    scale = min(1.0, detect_max_side / max(image.size))
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.BOX) if scale < 1.0 else image
    return Frame(index=0, time_s=0.0, rgb=rgb, small=small, scale=scale)


def encode_jpeg(rgb: np.ndarray, *, quality: int = 95) -> bytes:
    """JPEG bytes of an H×W×3 array; 4:4:4 (no chroma subsampling) so a face crop loses little."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()
