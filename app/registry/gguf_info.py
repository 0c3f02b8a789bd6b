"""GGUF header reader: key/value metadata, tensor count and parameter count, without loading tensors.

A streaming parser of the GGUF header in pure Python: `gguf.GGUFReader` maps every tokenizer array into
numpy fields and takes seconds on a small model, too slow for /api/tags. The `gguf` package (numpy) is only
used in tests to check the file-type names below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"
MAX_ARRAY_KEPT = 5  # longer arrays are summarised (Ollama sends them as [] unless verbose)
FIM_TOKENS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")

# llama.cpp's LlamaFileType (general.file_type) names, as gguf.LlamaFileType spells them without "MOSTLY_".
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip

# value type -> struct format (scalars)
_SCALARS: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    version: int
    metadata: dict[str, Any]  # arrays longer than MAX_ARRAY_KEPT are replaced by []
    array_lengths: dict[str, int]
    tensor_count: int
    parameter_count: int
    fim_tokens: frozenset[str] = field(default_factory=frozenset)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture") or "")

    @property
    def file_type_name(self) -> str:
        ft = self.metadata.get("general.file_type")
        if isinstance(ft, int):
            return FILE_TYPE_NAMES.get(ft, f"FT{ft}")
        return ""

    @property
    def context_length(self) -> int | None:
        v = self.metadata.get(f"{self.architecture}.context_length")
        return int(v) if isinstance(v, int) else None

    @property
    def chat_template(self) -> str | None:
        v = self.metadata.get("tokenizer.chat_template")
        return v if isinstance(v, str) else None

    @property
    def has_fim(self) -> bool:
        return all(t in self.fim_tokens for t in FIM_TOKENS)


class _Reader:
    def __init__(self, f: BinaryIO, endian: str) -> None:
        self.f = f
        self.e = endian

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise GGUFError("truncated GGUF header")
        return b

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(self.e + fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("Q")
        if n > 1 << 26:
            raise GGUFError("implausible string length")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        raise GGUFError(f"unknown value type {vtype}")


def _read(path: Path) -> GGUFInfo:
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise GGUFError(f"{path} is not a GGUF file")
        raw_version = f.read(4)
        endian = "<"
        version = struct.unpack("<I", raw_version)[0]
        if version > 0xFFFF:  # big-endian file
            endian, version = ">", struct.unpack(">I", raw_version)[0]
        r = _Reader(f, endian)
        if version == 1:
            tensor_count, kv_count = r.scalar("I"), r.scalar("I")
        else:
            tensor_count, kv_count = r.scalar("Q"), r.scalar("Q")
        metadata: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        fim: set[str] = set()
        for _ in range(kv_count):
            key = r.string()
            vtype = r.scalar("I")
            if vtype != _ARRAY:
                metadata[key] = r.value(vtype)
                continue
            itype, count = r.scalar("I"), r.scalar("Q")
            lengths[key] = count
            keep = count <= MAX_ARRAY_KEPT
            if itype == _STRING:
                items: list[Any] = []
                watch = key == "tokenizer.ggml.tokens"
                for _ in range(count):
                    s = r.string()
                    if keep:
                        items.append(s)
                    if watch and s in FIM_TOKENS:
                        fim.add(s)
                metadata[key] = items if keep else []
            elif itype in _SCALARS:
                fmt = _SCALARS[itype]
                size = struct.calcsize(fmt)
                if keep:
                    metadata[key] = [r.scalar(fmt) for _ in range(count)]
                else:
                    f.seek(size * count, 1)
                    metadata[key] = []
            else:
                raise GGUFError(f"unsupported nested array in {key}")
        params = 0
        for _ in range(tensor_count):
            r.string()
            n_dims = r.scalar("I")
            n = 1
            for _ in range(n_dims):
                n *= r.scalar("Q")
            r.scalar("I")  # ggml type
            r.scalar("Q")  # offset
            params += n
    return GGUFInfo(
        version=version,
        metadata=metadata,
        array_lengths=lengths,
        tensor_count=tensor_count,
        parameter_count=params,
        fim_tokens=frozenset(fim),
    )


@lru_cache(maxsize=64)
def _cached(path: str, mtime_ns: int, size: int) -> GGUFInfo:
    return _read(Path(path))


def read_gguf_info(path: Path) -> GGUFInfo:
    """Header facts of a GGUF file (cached per path, mtime and size).

    Raises:
        GGUFError: not a GGUF file, or a truncated/corrupt header.
    """
    p = Path(path).resolve()
    st = p.stat()
    try:
        return _cached(str(p), st.st_mtime_ns, st.st_size)
    except (struct.error, UnicodeDecodeError, MemoryError) as exc:
        raise GGUFError(f"cannot read GGUF header of {p}: {exc}") from exc
