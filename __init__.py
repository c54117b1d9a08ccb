"""ComfyUI entry point of the UniWorld-OSP2 node pack.

ComfyUI imports this folder as a package and reads NODE_CLASS_MAPPINGS.
Imports are relative: ComfyUI owns the top-level module name `nodes`.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
