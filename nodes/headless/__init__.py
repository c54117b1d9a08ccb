"""Running workflows without ComfyUI: the workflow reader, the runner and stand-ins of core nodes."""
