"""Which files and folders each loader offers: what ComfyUI lists, sorted by kind (header sniffing, cached).

ComfyUI lists every file of a model folder that has a registered extension
(relative names, sub-folders included); a loader offers only those of its
kind, so the DiT combo shows no adapters and the umT5 tokenizer combo no Qwen
tokenizer. The kind comes from the tensor names and shapes in the file's
header (`uniworld_core.weights.identify`), never from the file name, and is
cached per path, size and modification time, so a long list costs one read
per file once. Files inside a model folder belong to the folder (a Hugging
Face Qwen2.5-VL folder is one entry, not its shards), and the shards of a
sharded checkpoint to its index file. A file that cannot be read at all is
offered by every loader of its folder: picking it gives the loader's clear
error (a truncated download, a pickled file), where hiding it would only
puzzle.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..uniworld_core.weights import identify, is_single_file_vlm, open_weights

# the kinds each loader accepts (uniworld_core.weights.identify's names, plus "vlm" for Qwen2.5-VL)
DIT = ("flashi2v_dit", "wan_t2v_dit")
ADAPTER = ("vlm_adapter",)
VAE = ("wan21_vae",)
VLM = ("vlm",)
UMT5 = ("umt5",)
LORA = ("lora",)
UNREADABLE = "unreadable"

WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt", ".gguf", ".safetensors.index.json")
# files whose presence makes a folder a model or tokenizer folder
FOLDER_MARKERS = ("config.json", "tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")
SHARD = re.compile(r"-\d+-of-\d+\.safetensors$")

_kinds: dict[tuple, str] = {}


def _stamp(path: Path, *parts: str) -> tuple:
    """What a cached kind depends on: the path, and the size and time of it (or of the named files in it)."""
    stats = [(path / p).stat() for p in parts if (path / p).exists()] if parts else [path.stat()]
    return (str(path), parts, tuple((s.st_size, s.st_mtime_ns) for s in stats))


def _cached(key: tuple, sniff) -> str:
    if key not in _kinds:
        _kinds[key] = sniff()
    return _kinds[key]


def file_kind(path: Path) -> str:
    """The kind of model a weight file holds, read from its header; UNREADABLE when it cannot be opened."""
    def sniff() -> str:
        try:
            weights = open_weights(path)
        except Exception:  # any failure to read the header means "cannot tell", never a broken node list
            return UNREADABLE
        return "vlm" if is_single_file_vlm(weights.keys()) else identify(weights).kind

    return _cached(_stamp(path), sniff)


def _config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def folder_kind(folder: Path) -> str:
    """The kind of model a folder holds ("" for none): Qwen2.5-VL by its config, others by their weights."""
    def sniff() -> str:
        if _config(folder).get("model_type") == "qwen2_5_vl":
            return "vlm"
        if not any(folder.glob("*.safetensors")):
            return ""
        try:
            return identify(open_weights(folder)).kind
        except Exception:  # a folder of several unindexed files, a broken shard: not a model of ours
            return ""

    return _cached(_stamp(folder, "config.json", *sorted(p.name for p in folder.glob("*.safetensors*"))), sniff)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def tokenizer_kind(folder: Path) -> str:
    """"qwen" for a tokenizer that knows Qwen2.5-VL's image token, "t5" for a SentencePiece (umT5) one, else ""."""
    def sniff() -> str:
        config, full = _text(folder / "tokenizer_config.json"), _text(folder / "tokenizer.json")
        if "<|image_pad|>" in config or "<|image_pad|>" in full:
            return "qwen"
        t5_class = re.search(r'"tokenizer_class":\s*"\w*T5', config)
        if (folder / "spiece.model").is_file() or '"Unigram"' in full or t5_class:
            return "t5"
        return ""

    return _cached(_stamp(folder, *FOLDER_MARKERS), sniff)


def _inside_any(name: str, folders) -> bool:
    parent = os.path.dirname(name)
    while parent:
        if parent in folders:
            return True
        parent = os.path.dirname(parent)
    return False


def candidates(entries: list[tuple[Path, str]]) -> tuple[dict[str, Path], dict[str, Path]]:
    """(files, folders): relative name -> path of each weight file and each model or tokenizer folder."""
    folders: dict[str, Path] = {}
    for root, name in entries:
        parent = os.path.dirname(name)
        if parent and os.path.basename(name) in FOLDER_MARKERS:
            folders.setdefault(parent, root / parent)
    indexed = {os.path.dirname(n) for _, n in entries if n.endswith(".safetensors.index.json")}
    files = {}
    for root, name in entries:
        if not name.lower().endswith(WEIGHT_SUFFIXES) or _inside_any(name, folders):
            continue
        if SHARD.search(name) and os.path.dirname(name) in indexed:
            continue  # a shard: its index file is the entry
        files.setdefault(name, root / name)
    return files, folders


def offered(entries: list[tuple[Path, str]], kinds: tuple[str, ...], folders: bool = True) -> list[str]:
    """The names a loader of `kinds` offers: weight files of those kinds (or unreadable) and model folders."""
    files, dirs = candidates(entries)
    names = [n for n, path in files.items() if file_kind(path) in (*kinds, UNREADABLE)]
    if folders:
        names += [n for n, path in dirs.items() if folder_kind(path) in kinds]
    return sorted(names)


def tokenizer_folders(entries: list[tuple[Path, str]], family: str) -> list[str]:
    """Folders holding a tokenizer of `family` ("qwen" or "t5")."""
    return sorted(n for n, path in candidates(entries)[1].items() if tokenizer_kind(path) == family)
