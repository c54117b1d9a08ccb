"""Weight-file containers, read lazily and safely.

`open_weights(path)` returns a `WeightFile`: the tensor names, shapes and
dtypes without reading any data, and `get(name)` for one tensor at a time.
Supported: single `.safetensors`, sharded safetensors (an index JSON, or a
folder holding one), and `.pt/.pth/.bin/.ckpt` through
`torch.load(weights_only=True, mmap=True)`, which refuses pickled code.
Wrapped state dicts (`{"state_dict": ...}`, `{"model": ..., "optimizer": ...}`,
EMA copies, DDP/FSDP/compile name prefixes) are unwrapped.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import CheckpointError

MAX_HEADER_BYTES = 100 * 2**20
# Module-wrapper names that trainers insert into parameter names.
WRAPPER_PARTS = re.compile(r"(^|\.)(module|_fsdp_wrapped_module|_orig_mod|_checkpoint_wrapped_module)\.")
NESTED_KEYS = ("ema", "ema_state_dict", "state_dict", "model_state_dict", "model", "module", "params")
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


@dataclass
class TensorInfo:
    shape: tuple[int, ...]  # the logical shape (a GGUF tensor's bytes are reshaped to it)
    dtype: torch.dtype  # torch.uint8 for GGUF-quantised bytes
    ggml_type: str | None = None  # GGUF storage type ("Q4_K", "F16", ...), None for plain tensors
    stored_bytes: int | None = None


@dataclass
class WeightFile:
    """Names, shapes and dtypes of a weight file; tensors are read on demand."""

    path: Path
    format: str
    infos: dict[str, TensorInfo]
    reader: Callable[[str], torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # name, dtype -> the tensor converted while it is read from the file, for formats that can do it
    # without mapping the stored bytes into the process (see `read_converted`)
    converter: Callable[[str, torch.dtype], torch.Tensor] | None = None

    def keys(self) -> list[str]:
        return list(self.infos)

    def get(self, name: str) -> torch.Tensor:
        return self.reader(name)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.infos:
            yield name, self.reader(name)

    def dense(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """A tensor as `dtype`: GGUF blocks dequantised, fp8 multiplied by its `scale_weight`."""
        from ..quant.gguf_decode import dequantize
        from ..quant.layers import FP8_DTYPES

        info = self.infos[name]
        if (self.converter is not None and info.ggml_type is None and info.dtype != dtype
                and info.dtype not in FP8_DTYPES):
            return self.converter(name, dtype)
        tensor = self.reader(name)
        if info.ggml_type is not None:
            return dequantize(tensor, info.ggml_type, info.shape, dtype)
        if tensor.dtype in FP8_DTYPES:
            scale_name = name.rsplit(".", 1)[0] + ".scale_weight"
            scale = self.reader(scale_name).float() if scale_name in self.infos else 1.0
            return (tensor.float() * scale).to(dtype)
        return tensor.to(dtype)

    @property
    def nbytes(self) -> int:
        return sum(i.stored_bytes if i.stored_bytes is not None else _numel(i.shape) * i.dtype.itemsize
                   for i in self.infos.values())

    @property
    def num_params(self) -> int:
        return sum(_numel(i.shape) for i in self.infos.values())


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@contextmanager
def naming_the_file(path: str | Path) -> Iterator[None]:
    """Every CheckpointError raised inside names the file it is about (prefixed when it does not already)."""
    try:
        yield
    except CheckpointError as exc:
        name = Path(path).name
        if name in str(exc):
            raise
        raise CheckpointError(f"'{name}': {exc.found}", exc.expected, exc.fix) from exc


def _bad(path: Path, found: str, fix: str = "Re-download or re-export the file.") -> CheckpointError:
    return CheckpointError(f"'{path.name}' {found}", "a complete weight file (.safetensors, "
                           ".safetensors.index.json, .pt/.pth)", fix)


def _safetensors_header(path: Path) -> dict:
    """Validate the header and the data size before handing the file to safetensors."""
    size = path.stat().st_size
    if size == 0:
        raise _bad(path, "is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"is only {size} bytes long: too short for a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length == 0 or length > min(MAX_HEADER_BYTES, size - 8):
            raise _bad(path, "is not a safetensors file (its first 8 bytes are not a header length)")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"has a corrupt safetensors header ({exc.__class__.__name__})") from exc
    if not isinstance(header, dict):
        raise _bad(path, "has a corrupt safetensors header (not a JSON object)")
    data = size - 8 - length
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                  default=0)
    except (TypeError, KeyError, ValueError, IndexError) as exc:
        raise _bad(path, "has a corrupt safetensors header (bad tensor entry)") from exc
    if end > data:
        raise _bad(path, f"is truncated: its header describes {end} bytes of tensor data but only "
                   f"{data} are present")
    return header


CONVERT_CHUNK_BYTES = 64 * 2**20


def read_converted(path: Path, offset: int, shape: tuple[int, ...], stored: torch.dtype,
                   dtype: torch.dtype) -> torch.Tensor:
    """A tensor stored at `offset` of `path`, read in chunks and converted to `dtype` as it arrives.

    Converting a memory-mapped tensor (`tensor.to(dtype)`) maps its stored bytes
    into the process, where they stay resident next to the converted copy until
    the whole file is closed: a bf16 file loaded under the float32 policy would
    hold both. Read through a small staging buffer instead, the stored bytes
    only pass through the page cache, and the peak is the converted tensor.
    """
    out = torch.empty(shape, dtype=dtype)
    flat, size = out.view(-1), stored.itemsize
    per_chunk = max(1, CONVERT_CHUNK_BYTES // size)
    staging = torch.empty(min(flat.numel(), per_chunk) * size, dtype=torch.uint8)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        for start in range(0, flat.numel(), per_chunk):
            count = min(per_chunk, flat.numel() - start)
            chunk = staging[:count * size]
            view, got = memoryview(chunk.numpy()), 0
            while got < len(view):
                read = f.readinto(view[got:])
                if not read:
                    raise _bad(path, "ended before the tensor data its header describes")
                got += read
            flat[start:start + count].copy_(chunk.view(stored))
    return out


def _open_safetensors(path: Path) -> WeightFile:
    header = _safetensors_header(path)
    try:
        handle = safe_open(str(path), framework="pt")
    except Exception as exc:  # the library reports layout errors as several exception types
        raise _bad(path, f"could not be read as safetensors ({exc})") from exc
    infos = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise _bad(path, f"holds tensor '{name}' of unsupported dtype {entry.get('dtype')}")
        infos[name] = TensorInfo(tuple(int(s) for s in entry["shape"]), SAFETENSORS_DTYPES[entry["dtype"]])
    with open(path, "rb") as f:  # tensor offsets count from the end of the header
        data_start = 8 + struct.unpack("<Q", f.read(8))[0]

    def convert(name: str, dtype: torch.dtype) -> torch.Tensor:
        info = infos[name]
        return read_converted(path, data_start + int(header[name]["data_offsets"][0]), info.shape, info.dtype, dtype)
    return WeightFile(path, "safetensors", infos, handle.get_tensor, header.get("__metadata__") or {},
                      converter=convert)


def _open_sharded(index: Path) -> WeightFile:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise _bad(index, "is not a safetensors index (no readable 'weight_map')") from exc
    shards: dict[str, WeightFile] = {}
    infos, owner = {}, {}
    for shard_name in sorted(set(weight_map.values())):
        shard_path = index.parent / shard_name
        if not shard_path.is_file():
            raise _bad(index, f"names the shard '{shard_name}', which is missing",
                       "Download every shard listed in the index into the same folder.")
        shards[shard_name] = shard = _open_safetensors(shard_path)
        for name, info in shard.infos.items():
            infos[name], owner[name] = info, shard
    missing = [k for k in weight_map if k not in infos]
    if missing:
        raise _bad(index, f"lists tensors that no shard holds, e.g. {missing[:3]}")
    return WeightFile(index, f"safetensors, {len(shards)} shards", infos,
                      lambda name: owner[name].get(name),
                      converter=lambda name, dtype: owner[name].converter(name, dtype))


def _unwrap(state: object, path: Path, notes: list[str]) -> dict[str, torch.Tensor]:
    for _ in range(3):  # {'module': {'state_dict': {...}}} and the like
        if not isinstance(state, dict) or all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        key = next((k for k in NESTED_KEYS if isinstance(state.get(k), dict)), None)
        if key is None:
            break
        if key.startswith("ema"):
            notes.append("EMA weights")
        state = state[key]
    if not isinstance(state, dict) or not state:
        raise _bad(path, "holds no state dict of tensors", "Export the model's state_dict().")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise _bad(path, "holds no tensors at its top level", "Export the model's state_dict().")
    return tensors


def _open_torch(path: Path) -> WeightFile:
    if path.stat().st_size == 0:
        raise _bad(path, "is empty (0 bytes)")
    try:
        if EXTENSION_FORMAT.get(path.suffix.lower()) != "torch":
            with open(path, "rb") as f:  # by content: torch.load would pick a reader from the file name
                state = torch.load(f, map_location="cpu", weights_only=True)
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
                if "mmap" not in str(exc):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"'{path.name}' contains Python objects that loading would have to execute",
            "a plain tensor state dict", "It was not loaded. Convert it with a trusted tool, or get "
            "a .safetensors version of the model.") from exc
    except Exception as exc:  # truncated zip, bad magic, ... arrive as many exception types
        raise _bad(path, f"could not be read as a PyTorch file ({exc.__class__.__name__}: {exc})") from exc
    notes: list[str] = []
    tensors = _unwrap(state, path, notes)
    infos = {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in tensors.items()}
    return WeightFile(path, "pytorch (weights_only)", infos, tensors.__getitem__, notes=notes)


GGUF_DENSE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."  # city96's convention for tensors reshaped to fit GGUF
CONTINUATION_KEY = "uniworld_continuation"  # metadata of a DiT trained for continuation (training writes it)
GGUF_CONTINUATION_KEY = "uniworld.continuation"  # the same in a GGUF file's key-value data


def carried_metadata(wf: WeightFile) -> dict[str, str]:
    """What a converted or quantised copy of a file must keep saying about the model (its continuation training)."""
    return {CONTINUATION_KEY: wf.metadata[CONTINUATION_KEY]} if CONTINUATION_KEY in wf.metadata else {}
COMPANION_SUFFIXES = (".patch_embedding.safetensors", ".5d.safetensors")


def _gguf_field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    parts = [field.parts[i] for i in field.data]
    if len(parts) == 1 and parts[0].dtype == "uint8":
        return bytes(parts[0]).decode("utf-8", "replace")
    return [int(p[0]) for p in parts]


def _open_gguf(path: Path) -> WeightFile:
    try:
        import gguf
    except ImportError as exc:
        raise CheckpointError(f"'{path.name}' is a GGUF file and the 'gguf' package is missing",
                              "the gguf package", "pip install gguf") from exc
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/struct.error/... on damage
        raise _bad(path, f"could not be read as GGUF ({exc.__class__.__name__}: {exc})") from exc
    import numpy as np

    infos, arrays = {}, {}
    from ..quant.gguf_decode import BLOCKS

    for tensor in reader.tensors:
        type_name = tensor.tensor_type.name
        if type_name not in BLOCKS:
            raise CheckpointError(f"'{path.name}' stores '{tensor.name}' as GGUF type {type_name}",
                                  f"one of the supported types {', '.join(BLOCKS)}",
                                  "Re-quantise with `python -m uniworld_core quantize` to a supported type.")
        shape = tuple(reversed([int(n) for n in tensor.shape]))
        shape = tuple(_gguf_field(reader, ORIG_SHAPE_KEY + tensor.name) or shape)
        with warnings.catch_warnings():  # the memory map is read-only; the bytes are never written
            warnings.simplefilter("ignore", UserWarning)
            data = torch.from_numpy(np.asarray(tensor.data).view(np.uint8).reshape(-1))
        if type_name in GGUF_DENSE:
            infos[tensor.name] = TensorInfo(shape, GGUF_DENSE[type_name], stored_bytes=data.numel())
            arrays[tensor.name] = (data, type_name, shape)
        else:
            infos[tensor.name] = TensorInfo(shape, torch.uint8, type_name, data.numel())
            arrays[tensor.name] = (data, type_name, shape)

    def read(name: str) -> torch.Tensor:
        data, type_name, shape = arrays[name]
        return data.view(GGUF_DENSE[type_name]).reshape(shape) if type_name in GGUF_DENSE else data

    metadata = {"general.architecture": _gguf_field(reader, "general.architecture") or "?"}
    if _gguf_field(reader, GGUF_CONTINUATION_KEY):
        metadata[CONTINUATION_KEY] = _gguf_field(reader, GGUF_CONTINUATION_KEY)
    wf = WeightFile(path, "gguf", infos, read, metadata)
    return _add_companion(wf)


def _add_companion(wf: WeightFile) -> WeightFile:
    """City96-style files may keep the 5-D patch embedding in a companion safetensors file."""
    companions = [wf.path.with_name(wf.path.stem + s) for s in COMPANION_SUFFIXES]
    found = next((c for c in companions if c.is_file()), None)
    if found is None:
        return wf
    extra = _open_safetensors(found)
    base_read = wf.reader
    wf.infos.update(extra.infos)
    wf.reader = lambda name: extra.get(name) if name in extra.infos else base_read(name)
    wf.notes.append(f"5-D tensors from {found.name}")
    return wf


# What a file's extension promises, and how each format is named in messages.
EXTENSION_FORMAT = {".safetensors": "safetensors", ".sft": "safetensors", ".gguf": "gguf", ".pt": "torch",
                    ".pth": "torch", ".bin": "torch", ".ckpt": "torch"}
FORMAT_NAMES = {"safetensors": "safetensors", "gguf": "GGUF", "torch": "PyTorch"}


def _sniff(path: Path) -> str:
    """The format a file's first bytes show: a key of FORMAT_NAMES, or a description of what it is instead."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty (0 bytes)"
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "torch"  # a zip archive (torch.save) or a bare pickle (legacy torch.save)
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"  # 8-byte header length, then the JSON header
    text = head.lstrip()
    if text[:1] == b"<":
        return "an HTML/XML page (a failed download?)"
    if text[:1] in (b"{", b"["):
        return "JSON text"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "plain text"
    return f"unrecognised data (first bytes {head[:8].hex(' ')})"


def _open_by_content(path: Path) -> WeightFile:
    """Open a file by what it holds; messages name the format its extension promised."""
    given, content = EXTENSION_FORMAT.get(path.suffix.lower()), _sniff(path)
    promised = FORMAT_NAMES.get(given, "weight")
    if content not in FORMAT_NAMES:
        raise _bad(path, f"is not a {promised} file: it is {content}")
    opener = {"gguf": _open_gguf, "torch": _open_torch, "safetensors": _open_safetensors}[content]
    if given is None or given == content:
        return opener(path)
    try:
        return opener(path)
    except CheckpointError as exc:  # say both: what the name promised and what the bytes are
        detail = exc.found.removeprefix(f"'{path.name}' ")
        raise CheckpointError(f"'{path.name}' is not a {promised} file: it holds {FORMAT_NAMES[content]} data, "
                              f"which {detail}", exc.expected, exc.fix) from exc


def _unwrapped_name(name: str) -> str:
    while (shorter := WRAPPER_PARTS.sub(r"\1", name)) != name:  # nested wrappers
        name = shorter
    return name


def _strip_wrappers(wf: WeightFile) -> WeightFile:
    renamed = {_unwrapped_name(k): k for k in wf.infos}
    if all(new == old for new, old in renamed.items()):
        return wf
    reader, converter = wf.reader, wf.converter
    wf.infos = {new: wf.infos[old] for new, old in renamed.items()}
    wf.reader = lambda name: reader(renamed[name])
    if converter is not None:
        wf.converter = lambda name, dtype: converter(renamed[name], dtype)
    wf.notes.append("trainer wrapper prefixes removed")
    return wf


def in_memory(state: dict[str, torch.Tensor], name: str = "<state dict>") -> WeightFile:
    """A WeightFile over tensors already in memory (same detection and renaming as files)."""
    infos = {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in state.items()}
    return _strip_wrappers(WeightFile(Path(name), "in-memory", infos, state.__getitem__))


def open_weights(path: str | Path) -> WeightFile:
    """Open any supported weight file (or a folder holding one) without reading tensor data."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        singles = sorted(path.glob("*.safetensors"))
        if indexes or len(singles) == 1:
            path = indexes[0] if indexes else singles[0]
        else:
            raise CheckpointError(f"the folder '{path}' holds {len(singles)} .safetensors files "
                                  "and no index", "one weight file or a sharded set with its index")
    if not path.is_file():
        raise CheckpointError(f"no file at '{path}'", "an existing weight file",
                              "Check the path, or the ComfyUI models folder.")
    if path.name.endswith(".index.json"):
        return _strip_wrappers(_open_sharded(path))
    return _strip_wrappers(_open_by_content(path))
