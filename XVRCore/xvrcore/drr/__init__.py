"""Differentiable digitally reconstructed radiographs: the volume pyramid and one ``render()`` for every method."""

from .backends import BACKENDS, METHODS
from .pyramid import DRRVolume, PyramidLevel
from .render import render, render_channels
from .silhouettes import structure_masks

__all__ = ["BACKENDS", "METHODS", "DRRVolume", "PyramidLevel", "render", "render_channels", "structure_masks"]
