"""Images as the data layer hands them on: references that are opened only when something needs pixels.

``Example.images`` holds, per image, one of

- a file path (``str``), opened when a batch needs it;
- an encoded image ``{"bytes": b"...", "path": "name.png"}`` (the Hugging Face ``Image`` feature's storage,
  what parquet sets such as hiyouga/geometry3k embed);
- an :class:`EmbeddedImage`: a handle on such bytes still inside a memory-mapped Arrow table (what
  :class:`visent.data.table.ExampleTable` yields, so walking 40,000 rows reads no image bytes);
- a PIL image (the lab's synthetic tasks, and the eager loader's decoded embedded images).

:func:`open_image` turns any of them into an RGB PIL image; :func:`image_size` reads only the header.
"""

from __future__ import annotations

import io
from typing import Any


class EmbeddedImage:
    """Image ``position`` of row ``row`` of an Arrow ``images`` column, read on demand.

    Attributes:
        path: the file name recorded beside the bytes (informational; may be empty).
    """

    __slots__ = ("_column", "path", "position", "row")

    def __init__(self, column: Any, row: int, position: int, path: str | None) -> None:
        self._column = column  # pyarrow ChunkedArray of list<struct<bytes, path>> (memory-mapped)
        self.row, self.position, self.path = row, position, path

    def read_bytes(self) -> bytes:
        return self._column[self.row].values[self.position]["bytes"].as_py()

    def __repr__(self) -> str:
        return f"<embedded image {self.path or ''} (row {self.row})>"


def is_pil(ref: Any) -> bool:
    return hasattr(ref, "size") and hasattr(ref, "mode") and hasattr(ref, "convert")


def encoded_bytes(ref: Any) -> bytes | None:
    """The encoded bytes behind ``ref`` when it holds them (struct or embedded handle), else None."""
    if isinstance(ref, EmbeddedImage):
        return ref.read_bytes()
    if isinstance(ref, dict) and ref.get("bytes"):
        return ref["bytes"]
    return None


def _open(ref: Any) -> Any:
    from PIL import Image

    data = encoded_bytes(ref)
    if data is not None:
        return Image.open(io.BytesIO(data))
    if isinstance(ref, dict):
        ref = ref.get("path")
    if isinstance(ref, str):
        return Image.open(ref)
    raise TypeError(f"not an image reference: {type(ref).__name__}")


def open_image(ref: Any) -> Any:
    """An RGB PIL image for any reference above (decodes it fully). Raises OSError/ValueError on bad data."""
    if is_pil(ref):
        return ref if ref.mode == "RGB" else ref.convert("RGB")
    with _open(ref) as im:
        return im.convert("RGB")


def image_size(ref: Any) -> tuple[int, int]:
    """``(width, height)`` read from the header only."""
    if is_pil(ref):
        return int(ref.size[0]), int(ref.size[1])
    with _open(ref) as im:
        return int(im.width), int(im.height)


def to_struct(ref: Any) -> dict[str, Any]:
    """The ``{"bytes", "path"}`` struct an Arrow ``images`` column stores: paths stay paths, PIL images are
    encoded as PNG (lossless), encoded bytes are kept as they are."""
    if isinstance(ref, str):
        return {"bytes": None, "path": ref}
    if isinstance(ref, dict):
        return {"bytes": ref.get("bytes"), "path": ref.get("path")}
    if isinstance(ref, EmbeddedImage):
        return {"bytes": ref.read_bytes(), "path": ref.path}
    if is_pil(ref):
        buf = io.BytesIO()
        ref.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}
    raise TypeError(f"not an image reference: {type(ref).__name__}")
