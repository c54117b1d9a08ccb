"""The thin ComfyUI layer: node classes that call uniworld_core (no model math here)."""

from . import encode, loaders, sampling, vae_nodes

_ALL = {**loaders.NODES, **encode.NODES, **sampling.NODES, **vae_nodes.NODES}

NODE_CLASS_MAPPINGS: dict[str, type] = {name: cls for name, (cls, _) in _ALL.items()}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: title for name, (_, title) in _ALL.items()}
