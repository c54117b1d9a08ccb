"""The thin ComfyUI layer: node classes that call uniworld_core (no model math here)."""

from . import comfy_env, encode, loaders, long_video, sampling, vae_nodes

# Inside ComfyUI, list .gguf DiTs, sharded index files and model/tokenizer folders under keys of our own.
comfy_env.register_model_folders()

_ALL = {**loaders.NODES, **encode.NODES, **sampling.NODES, **long_video.NODES, **vae_nodes.NODES}

NODE_CLASS_MAPPINGS: dict[str, type] = {name: cls for name, (cls, _) in _ALL.items()}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: title for name, (_, title) in _ALL.items()}
