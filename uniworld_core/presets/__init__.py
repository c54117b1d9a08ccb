"""Ready-made model stacks: the built-in miniature model and the random-weight tiny stack.

May import every other subpackage; nothing in the library imports presets
except the façade and the command line.
"""

from . import miniature
from .miniature import Miniature, load_miniature
from .tiny import tiny_context, tiny_stack

__all__ = [
    "miniature", "Miniature", "load_miniature", "tiny_context", "tiny_stack",
]
