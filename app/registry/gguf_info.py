"""GGUF header reader: key/value metadata and tensor infos (names, shapes, ggml types, byte sizes), never the data.

The one GGUF parser of the project: the registry takes model facts from it, the hardware estimate takes tensor
shapes to split quantised from unquantised weights. Pure Python over an mmap of the file, so only the header pages
are read: `gguf.GGUFReader` maps every tokenizer array into numpy fields and takes seconds on a small model, too
slow for /api/tags and `hugllama list`. The `gguf` package (numpy) is only used in tests to check the tables below.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
MAX_ARRAY_KEPT = 5  # longer arrays are summarised in `metadata` (Ollama sends them as [] unless verbose)
MAX_ARRAY_VALUES = 1024  # arrays up to this long (per-layer head counts) are also kept whole for `value()`
# (prefix, suffix, middle) spellings of FIM-trained tokenizers (StarCoder/SantaCoder, Qwen2.5-Coder, DeepSeek-Coder):
# the prompt renderer fills the middle with the first complete one, and `insert` is advertised from the same list.
FIM_SPELLINGS = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"),
)
FIM_TOKENS = frozenset(t for spelling in FIM_SPELLINGS for t in spelling)
_FIM_BYTES = frozenset(t.encode() for t in FIM_TOKENS)

# llama.cpp's LlamaFileType (general.file_type) names, as gguf.LlamaFileType spells them without "MOSTLY_".
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip

# ggml tensor type -> (elements per block, bytes per block), as gguf.GGML_QUANT_SIZES has them.
GGML_BLOCK_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip

# value type -> struct format (scalars)
_SCALARS: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 1 << 26  # bytes; a longer length field means a corrupt header


class GGUFError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # GGUF order, innermost dimension first: a Linear weight is [in, out]
    ggml_type: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int | None:
        """Size of the tensor's data; None for a ggml type this reader does not know."""
        block = GGML_BLOCK_SIZES.get(self.ggml_type)
        return None if block is None else self.n_elements // block[0] * block[1]


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    version: int
    metadata: dict[str, Any]  # arrays longer than MAX_ARRAY_KEPT are replaced by []
    array_lengths: dict[str, int]
    array_values: dict[str, list[Any]]  # every array of at most MAX_ARRAY_VALUES items, whole
    tensors: tuple[GGUFTensor, ...]
    fim_tokens: frozenset[str] = field(default_factory=frozenset)

    def value(self, key: str) -> Any:
        """A metadata value with arrays up to MAX_ARRAY_VALUES items whole; longer ones are [] as in `metadata`."""
        return self.array_values[key] if key in self.array_values else self.metadata.get(key)

    @property
    def tensor_count(self) -> int:
        return len(self.tensors)

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

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
        return any(all(t in self.fim_tokens for t in spelling) for spelling in FIM_SPELLINGS)


class _Cursor:
    """Reads forward through the mapped header; a read past the end of the file is a truncated header."""

    def __init__(self, buf: mmap.mmap, pos: int, endian: str) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.structs = {fmt: struct.Struct(endian + fmt) for fmt in _SCALARS.values()}

    def take(self, n: int) -> int:
        """Advance past n bytes; returns where they start."""
        start = self.pos
        if start + n > self.end:
            raise GGUFError("truncated GGUF header")
        self.pos = start + n
        return start

    def scalar(self, fmt: str) -> Any:
        s = self.structs[fmt]
        return s.unpack_from(self.buf, self.take(s.size))[0]

    def string_bytes(self) -> bytes:
        n = self.scalar("Q")
        if n > _MAX_STRING:
            raise GGUFError("implausible string length")
        start = self.take(n)
        return self.buf[start : start + n]

    def skip_strings(self, count: int, watch: frozenset[bytes]) -> set[bytes]:
        """Step over `count` strings (the hot loop of a 150k-token vocabulary); returns those found in `watch`."""
        buf, end, length = self.buf, self.end, self.structs["Q"]
        pos, found = self.pos, set()
        for _ in range(count):
            if pos + 8 > end:
                raise GGUFError("truncated GGUF header")
            (n,) = length.unpack_from(buf, pos)
            if n > _MAX_STRING:
                raise GGUFError("implausible string length")
            pos += 8
            if pos + n > end:
                raise GGUFError("truncated GGUF header")
            if watch and buf[pos : pos + n] in watch:
                found.add(buf[pos : pos + n])
            pos += n
        self.pos = pos
        return found

    def string(self) -> str:
        return self.string_bytes().decode("utf-8", errors="replace")

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
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(_Cursor(buf, 8, endian), version)


def _parse(r: _Cursor, version: int) -> GGUFInfo:
    if version == 1:
        tensor_count, kv_count = r.scalar("I"), r.scalar("I")
    else:
        tensor_count, kv_count = r.scalar("Q"), r.scalar("Q")
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    values: dict[str, list[Any]] = {}
    fim: set[str] = set()
    for _ in range(kv_count):
        key = r.string()
        vtype = r.scalar("I")
        if vtype != _ARRAY:
            metadata[key] = r.value(vtype)
            continue
        itype, count = r.scalar("I"), r.scalar("Q")
        lengths[key] = count
        if count <= MAX_ARRAY_VALUES:
            if itype != _STRING and itype not in _SCALARS:
                raise GGUFError(f"unsupported nested array in {key}")
            items = [r.value(itype) for _ in range(count)]
            values[key] = items
            metadata[key] = items if count <= MAX_ARRAY_KEPT else []
            if key == "tokenizer.ggml.tokens":
                fim.update(t for t in items if t in FIM_TOKENS)
        elif itype == _STRING:  # token lists and merges: skipped, not decoded
            found = r.skip_strings(count, watch=_FIM_BYTES if key == "tokenizer.ggml.tokens" else frozenset())
            fim.update(t.decode() for t in found)
            metadata[key] = []
        elif itype in _SCALARS:
            r.pos += struct.calcsize(_SCALARS[itype]) * count
            metadata[key] = []
        else:
            raise GGUFError(f"unsupported nested array in {key}")
    tensors: list[GGUFTensor] = []
    for _ in range(tensor_count):
        name = r.string()
        n_dims = r.scalar("I")
        shape = tuple(r.scalar("Q") for _ in range(n_dims))
        ggml_type = r.scalar("I")
        r.scalar("Q")  # offset of the data
        tensors.append(GGUFTensor(name, shape, ggml_type))
    return GGUFInfo(
        version=version,
        metadata=metadata,
        array_lengths=lengths,
        array_values=values,
        tensors=tuple(tensors),
        fim_tokens=frozenset(fim),
    )


@lru_cache(maxsize=64)
def _cached(path: str, mtime_ns: int, size: int) -> GGUFInfo:
    return _read(Path(path))


def read_gguf_info(path: Path) -> GGUFInfo:
    """Header facts of a GGUF file (cached per path, mtime and size: listings and residency checks ask again).

    Raises:
        GGUFError: not a GGUF file, or a truncated/corrupt header.
    """
    p = Path(path).resolve()
    st = p.stat()
    try:
        return _cached(str(p), st.st_mtime_ns, st.st_size)
    except (struct.error, UnicodeDecodeError, MemoryError) as exc:
        raise GGUFError(f"cannot read GGUF header of {p}: {exc}") from exc
