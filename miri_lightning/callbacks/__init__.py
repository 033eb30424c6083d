from miri_lightning.callbacks.miri import MIRICallback

__all__ = ["MIRICallback"]
