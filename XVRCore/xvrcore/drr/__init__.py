"""Differentiable digitally reconstructed radiographs: the volume pyramid and one ``render()`` for every method, ``render_linescan()`` for CT scouts."""

from .backends import BACKENDS, METHODS
from .linescan import render_linescan
from .pyramid import DRRVolume, PyramidLevel
from .render import render, render_channels
from .silhouettes import structure_masks

__all__ = ["BACKENDS", "METHODS", "DRRVolume", "PyramidLevel", "render", "render_channels", "render_linescan", "structure_masks"]
