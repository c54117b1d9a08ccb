"""uniworld_core: the Uniworld-OSP2.0 / FlashI2V model stack, usable without ComfyUI.

Start with `uniworld_core.pipeline.generate` (image + context -> frames), or
the command line `python -m uniworld_core generate --help`.
"""

__version__ = "0.1.0"
