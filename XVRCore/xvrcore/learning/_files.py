"""File helpers shared by the model files and the training-run state: safetensors I/O, file hashes,
and paths that must stay inside their folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..io.atomic import atomic_write_bytes


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """``tensors`` serialised as one safetensors file."""
    from safetensors.torch import save

    # safetensors refuses shared or strided memory: give every tensor its own contiguous copy.
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return save(clean, metadata=metadata)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as one safetensors file, atomically (Python writes it, so a full disk is an OSError)."""
    atomic_write_bytes(path, tensor_bytes(tensors, metadata))


def load_tensors(path: Path, error: type[Exception] = ValueError, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (never unpickles); a damaged file raises ``error`` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: tensor file not found")
    if path.stat().st_size == 0:
        raise error(f"{path}: empty file, expected safetensors tensors")
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as exc:  # the header does not describe the bytes (truncated, forged offsets or shapes)
        raise error(f"{path}: damaged safetensors file ({exc})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the tensor file ({exc.strerror or exc})") from None


def inside_folder(folder: Path, name: object, error: type[Exception], source: str, what: str,
                  beside: Path | None = None) -> Path:
    """``folder / name`` when ``name`` is a relative path that stays inside ``folder`` once links are
    followed (or lands beside ``beside``'s target: a Hugging Face cache links every file of a
    snapshot into one blobs folder); otherwise ``error`` — a file may not lead a reader to other
    files of the machine."""
    if not isinstance(name, str) or not name.strip():
        raise error(f"{source}: {what} must be a file name, not {name!r}")
    relative = Path(name)
    if relative.is_absolute() or relative.drive or ".." in relative.parts:
        raise error(f"{source}: {what} {name!r} leaves its folder; it must name a file inside {folder}")
    target = folder / relative
    real = target.resolve()
    roots = [folder.resolve()] + ([beside.resolve().parent] if beside is not None else [])
    if not any(real.is_relative_to(root) for root in roots):
        raise error(f"{source}: {what} {name!r} links to {real}, outside {folder}; refusing to follow it")
    return target
