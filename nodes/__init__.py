"""The thin ComfyUI layer: node classes that call uniworld_core (no model math here).

The node families (loaders, encoders, sampler, VAE) are registered here as
they are built; each module adds its classes to the two mappings.
"""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
