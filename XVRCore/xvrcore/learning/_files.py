"""File helpers shared by the model files and the training-run state: safetensors I/O and file hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..io.atomic import atomic_write


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as one safetensors file, atomically."""
    from safetensors.torch import save_file

    # safetensors refuses shared or strided memory: give every tensor its own contiguous copy.
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(clean, str(tmp), metadata=metadata))


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (never unpickles)."""
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))
