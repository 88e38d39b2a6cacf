"""Reading safetensors files one tensor at a time with plain file reads.

The safetensors library memory-maps the file, and every page it touches stays in this process's resident
set until the file is closed: converting a bf16 checkpoint to an fp32 model then peaks at the model plus
the whole file. Reading each tensor with plain file reads into one reusable buffer, and converting it from
there, keeps the peak at the model plus the largest tensor (the format is an 8-byte header length, a JSON
header of dtype, shape and byte offsets, then data). A fresh buffer per tensor, freed after conversion, left
the allocator's heap fragmented and the full-size peak up to 1.2 GB higher, varying run to run.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


@dataclass(frozen=True)
class Entry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


def read_header(path: str | os.PathLike) -> dict[str, Entry]:
    """Every tensor's dtype, shape and byte range; a malformed header raises ValueError naming the file."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                raise ValueError(f"header length {length} exceeds the file size {size}")
            header = json.loads(f.read(length))
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file ({e})") from e
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = DTYPES[info["dtype"]], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: tensor {name} has an unreadable header entry {info!r}") from e
        nbytes = math.prod(shape) * dtype.itemsize
        if end - start != nbytes or 8 + length + end > size:
            raise ValueError(f"{path}: tensor {name} claims bytes {start}..{end} for {nbytes} bytes of data; file truncated or corrupt")
        entries[name] = Entry(dtype, shape, 8 + length + start, 8 + length + end)
    return entries


def read_tensor(f, entry: Entry, buffer: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ANN001 - an open binary file
    """The tensor's bytes read into `buffer` (uint8, at least entry.end - entry.start long) and returned as a
    view of it, valid until the buffer is reused; without a buffer, into a tensor of its own."""
    nbytes = entry.end - entry.start
    raw = torch.empty(nbytes, dtype=torch.uint8) if buffer is None else buffer[:nbytes]
    f.seek(entry.start)
    if f.readinto(memoryview(raw.numpy())) != nbytes:
        raise ValueError(f"{getattr(f, 'name', 'file')}: ended inside a tensor's data; file truncated")
    return raw.view(entry.dtype).view(entry.shape)
