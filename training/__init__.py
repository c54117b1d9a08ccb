"""Training entry points (FlashI2V / Uniworld-OSP2.0 objective) built on uniworld_core."""
