"""Differentiable digitally reconstructed radiographs: the volume pyramid and one ``render()`` for every method."""

from .render import METHODS, DRRVolume, render, render_channels

__all__ = ["METHODS", "DRRVolume", "render", "render_channels"]
