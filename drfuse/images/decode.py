"""Decode one chest X-ray file (JPEG, PNG or DICOM) into a square uint8 grayscale array.

One reader per source, chosen by the file's magic bytes (not its suffix):

- **JPEG** (MIMIC-CXR-JPG): Pillow's `draft('L', ...)` lets libjpeg decode at 1/2, 1/4 or 1/8 scale,
  the largest reduction that stays at or above the target, so a 2544 x 3056 image is never decoded
  in full for a 256 px cache. Truncated files are rejected (end-of-image marker checked first),
  never accepted with a grey bottom. (Stopping the decoder below the centre square through
  Pillow's private decoder API gained 11 %, 50 -> 56 img/s per core: not worth a private API.)
- **PNG** (any mode): RGB/RGBA/P/LA -> luminance; 16-bit (`I;16`, `I`) scaled by its bit depth.
- **DICOM** (MIMIC-CXR): modality LUT (rescale slope/intercept), VOI LUT or windowing when present,
  then the real value range mapped to 0..255 (as MIMIC-CXR-JPG was made), MONOCHROME1 inverted.
  JPEG-compressed transfer syntaxes need pylibjpeg, an optional extra (`pip install
  'drfuse[dicom]'`; GPLv3): MIMIC-CXR-JPG holds JPEGs only, so only DICOM users need it.

Every reader returns a Pillow 'L' image; `square` resizes the shorter side to the cache size and
keeps the centre square in one area-averaging (BOX) step. `decode_task` is the process-pool worker: it finds
the file (falling back from `.jpg` to `.dcm`/`.png`, as MIMIC-CXR DICOM has the same layout) and
turns any failure into a reason string instead of an exception.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

# Tried in order when the stays table's path (MIMIC-CXR-JPG layout, `.jpg`) does not exist.
FALLBACK_SUFFIXES = (".dcm", ".png")
# The JPEG end-of-image marker must sit near the end; 0xFFD9 cannot occur inside entropy-coded
# data (0xFF is always byte-stuffed there), so finding it in the tail proves the file is whole.
_JPEG_MAGIC = b"\xff\xd8\xff"
_EOI = b"\xff\xd9"
_EOI_TAIL = 4096
# Area averaging: from a 1/8 draft (each pixel already the mean of an 8 x 8 block) it keeps the
# cache an area mean of the original, and it is the cheapest antialiased filter (LANCZOS costs
# ~4x more per image and only sharpens the block means).
RESAMPLE = Image.Resampling.BOX
# Modules of the optional `dicom` extra, through which pydicom decodes JPEG-compressed DICOM.
PYLIBJPEG_MODULES = ("pylibjpeg", "libjpeg")


class DecodeError(Exception):
    """The file exists but is not a usable image; the message is the reason recorded."""


def _square_box(w: int, h: int) -> tuple[float, float, float, float]:
    """The centre square of a w x h image as a resize box."""
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return left, top, left + side, top + side


def square(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side resized to `size`, centre square kept, as a (size, size) uint8 array."""
    # Resampling straight from the centre box skips the part that the crop would throw away;
    # Pillow's resize filters are area-aware when shrinking, so this is an antialiased reduction.
    return np.asarray(img.resize((size, size), RESAMPLE, box=_square_box(*img.size)), dtype=np.uint8)


def _draft_target(size_wh: tuple[int, int], size: int) -> tuple[int, int]:
    """Requested draft size whose shorter side is `size` (draft never goes below a request)."""
    w, h = size_wh
    side = min(w, h)
    return max(1, -(-w * size // side)), max(1, -(-h * size // side))


def _pil_gray(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit 'L'; 16/32-bit integer modes scaled by their bit depth."""
    if img.mode == "L":
        return img
    if img.mode == "F":
        return Image.fromarray(_to_u8(np.asarray(img, dtype=np.float64)))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.clip(np.asarray(img).astype(np.float64), 0, None)
        top = float(arr.max())
        # A 12-bit image stored in 16 bits is scaled by 4095, a full 16-bit one by 65535: the
        # brightness of the original is kept (an 8-bit image saved x257 comes back unchanged).
        bits = max(8, int(np.ceil(np.log2(top + 1))))
        return Image.fromarray(np.clip(np.rint(arr * (255.0 / (2**bits - 1))), 0, 255).astype(np.uint8))
    # RGB, RGBA, LA, P, 1, CMYK...: Pillow's ITU-R 601 luminance (alpha ignored).
    return img.convert("L")


def _open_jpeg(data: bytes, size: int) -> ImageFile.ImageFile:
    if data.rfind(_EOI, max(0, len(data) - _EOI_TAIL)) < 0:
        raise DecodeError("truncated JPEG (no end-of-image marker)")
    img = Image.open(io.BytesIO(data))
    img.draft("L", _draft_target(img.size, size))
    return img


def read_jpeg(data: bytes, size: int) -> Image.Image:
    img = _open_jpeg(data, size)
    img.load()  # raises OSError "image file is truncated" on short data
    return _pil_gray(img)


def read_png(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return _pil_gray(img)


def _to_u8(arr: np.ndarray) -> np.ndarray:
    """Real value range to 0..255."""
    lo, hi = float(arr.min()), float(arr.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        raise DecodeError("constant or non-finite pixel values")
    return np.rint((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _voi_functions():
    try:  # pydicom >= 3
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def read_dicom(data: bytes) -> Image.Image:
    import pydicom

    apply_modality_lut, apply_voi_lut = _voi_functions()
    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds:
        raise DecodeError("DICOM without pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID")
        missing = [m for m in PYLIBJPEG_MODULES if importlib.util.find_spec(m) is None]
        if syntax is not None and syntax.is_compressed and missing:
            raise DecodeError(
                f"compressed DICOM ({syntax.name}) needs the optional extra: pip install 'drfuse[dicom]' "
                f"(pylibjpeg, pylibjpeg-libjpeg; {', '.join(missing)} not installed)"
            ) from exc
        raise
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]  # radiographs are single-frame; a multi-frame file keeps its first frame
    if int(getattr(ds, "SamplesPerPixel", 1)) == 3:
        # pydicom converts YBR to RGB by default; reduce to luminance like the other sources.
        return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).convert("L")
    values = apply_modality_lut(arr, ds)
    values = apply_voi_lut(values, ds)
    out = _to_u8(np.asarray(values, dtype=np.float64))
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1: low values are white
    return Image.fromarray(out)


def read_image(data: bytes, size: int) -> Image.Image:
    """Dispatch on the magic bytes; `size` is the cache size (used by JPEG draft decoding)."""
    if data[:3] == _JPEG_MAGIC:
        return read_jpeg(data, size)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return read_png(data)
    if data[128:132] == b"DICM":
        return read_dicom(data)
    raise DecodeError("not a JPEG, PNG or DICOM file")


def resolve(root: Path, rel: str) -> Path | None:
    """The file to read for a stays `cxr_path`: itself, else the same path as `.dcm` or `.png`."""
    path = root / rel
    if path.is_file():
        return path
    for suffix in FALLBACK_SUFFIXES:
        alt = path.with_suffix(suffix)
        if alt.is_file():
            return alt
    return None


def decode_task(task: tuple[str, str | None, str, int]) -> tuple[str, str, np.ndarray | None, str | None]:
    """Worker: (dicom_id, cxr_path, root, size) -> (dicom_id, path read, array or None, reason)."""
    dicom_id, rel, root, size = task
    if rel is None:
        return dicom_id, "", None, "no cxr_path in the stays table"
    path = resolve(Path(root), rel)
    if path is None:
        return dicom_id, rel, None, "missing file (no .jpg, .dcm or .png)"
    source = path.relative_to(root).as_posix()
    try:
        return dicom_id, source, square(read_image(path.read_bytes(), size), size), None
    except DecodeError as exc:
        return dicom_id, source, None, str(exc)
    except Exception as exc:  # any decoder failure (truncated, corrupt, unsupported) is recorded
        return dicom_id, source, None, f"unreadable: {type(exc).__name__}: {exc}"
