"""Trilinear ray marching, one sample per voxel plane of the dominant axis (Joseph's method).

On such a plane trilinear interpolation reduces to bilinear interpolation inside one slice, so each
sample reads 4 voxels instead of 8 and the samples of all rays are gathered slice by slice with the
vectorised 2-D ``grid_sample``. The backward pass recomputes the sample grid instead of keeping it
(:class:`_SliceSum`), so a chunk's memory is freed as soon as its forward pass ends.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..pyramid import PyramidLevel
from .slices import affine_in_k, front_weights, plane_coordinates

__all__ = ["integrate_trilinear"]


class _SliceSum(torch.autograd.Function):
    """``Σ_k bilinear(slice_k, start + k · per_k) · weight`` with a memory-light backward.

    Autograd through ``grid_sample`` would keep the ``(N, n, 2)`` sample grid of every chunk
    until the backward pass. Here the backward recomputes it (a cheap rank-1 product) and calls
    the ``grid_sample`` backward kernel directly, so a chunk's memory is freed as soon as its
    forward pass ends and no chunk is rendered twice.
    """

    @staticmethod
    def forward(ctx, start, per_k, weight, stack, k, front):
        grid = affine_in_k(start, per_k, k)
        samples = F.grid_sample(stack, grid[:, None], mode="bilinear", padding_mode="zeros", align_corners=True)[:, :, 0]
        if front is not None:
            samples = samples * front[:, None, :]
        total = samples.sum(0)  # (C, n)
        ctx.stack = stack
        ctx.save_for_backward(start, per_k, weight, k, total, front if front is not None else torch.empty(0))
        ctx.has_front = front is not None
        return total * weight

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        start, per_k, weight, k, total, front = ctx.saved_tensors
        grad_weight = (grad_out * total).sum(0) if ctx.needs_input_grad[2] else None
        grad_start = grad_per_k = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grid = affine_in_k(start, per_k, k)
            n_k, n = grid.shape[:2]
            per_sample = (grad_out * weight)[None, :, None, :].expand(n_k, -1, 1, n)
            if ctx.has_front:
                per_sample = per_sample * front[:, None, None, :]
            # interpolation 0 = bilinear, padding 0 = zeros; only the grid gradient is needed.
            _, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                per_sample, ctx.stack, grid[:, None], 0, 0, True, [False, True]
            )
            flat = grad_grid.reshape(n_k, -1)
            grad_start = flat.sum(0).reshape(n, 2)
            grad_per_k = (k[None] @ flat).reshape(n, 2)
        return grad_start, grad_per_k, grad_weight, None, None, None


def integrate_trilinear(lvl: PyramidLevel, axis: int, o, d, length, step: float = 0.5) -> torch.Tensor:
    """Line integrals ``(C, N)`` of rays ``o + t d`` (index frame, dominant axis ``axis``); ``step`` unused."""
    stack = lvl.stack(axis)
    n_slices = stack.shape[0]
    base, slope, scale, inv = plane_coordinates(lvl, axis, o, d)
    k = torch.arange(n_slices, dtype=o.dtype, device=o.device)
    front = front_weights(o[:, axis].detach(), d[:, axis].detach(), n_slices)
    weight = length * inv.abs()  # world length per slice
    per_sample_front = front if front.dim() == 2 else None
    if front.dim() == 1:
        weight = weight * front
    start, per_k = base * scale - 1, slope * scale
    if stack.requires_grad:  # gradients for the volume itself: let autograd see everything
        grid = affine_in_k(start, per_k, k)
        samples = F.grid_sample(stack, grid[:, None], mode="bilinear", padding_mode="zeros", align_corners=True)[:, :, 0]
        if per_sample_front is not None:
            samples = samples * per_sample_front[:, None, :]
        return samples.sum(0) * weight
    return _SliceSum.apply(start, per_k, weight, stack, k, per_sample_front)
