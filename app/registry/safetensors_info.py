"""safetensors header reader: the JSON table of tensor names, dtypes and shapes, never the data.

The one safetensors parser of the project: the registry takes parameter counts and dtypes from it for `show`
and `list`, the hardware estimate takes shapes to split linear from embedding weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit; a larger length means a corrupt or foreign file


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of one .safetensors file (8-byte little-endian length, then JSON). Raises ValueError/OSError."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: implausible safetensors header length {n}")
        data = json.loads(f.read(n))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: safetensors header is not an object")
    return data
