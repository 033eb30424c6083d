"""Velocity fields v(a, b, observed, t): zero on observed entries."""

from miri_lightning.nets.cnn import ResidualCNN
from miri_lightning.nets.mlp import VelocityMLP
from miri_lightning.nets.unet import ConditionalUNet

__all__ = ["ConditionalUNet", "ResidualCNN", "VelocityMLP"]
