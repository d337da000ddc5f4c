"""Pretrained models from Hugging Face repositories (or a local copy of one).

``pull("owner/name")`` downloads a model folder (``model.json`` + ``model.safetensors``) through
``huggingface_hub`` into its usual cache; later pulls — also with ``HF_HUB_OFFLINE=1`` — are served
from the cache. ``file=`` picks a sub-folder or one file of the repository; an xvr ``.pth`` file is
converted once (restricted unpickling, :mod:`xvrcore.learning.xvr_import`) into our format under the models
folder (``$XVR_MODELS_DIR``, default ``~/.cache/xvrcore/models``), and served from there afterwards.

A local folder in place of a repository id (a clone of the repository, a copy on a USB stick)
is used as is, which is also how tests pull without any network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._files import file_sha256
from .model_files import MODEL_JSON, MODEL_WEIGHTS, CheckpointError, load_model
from .xvr_import import import_xvr

__all__ = ["models_dir", "pull"]

_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def models_dir() -> Path:
    """Where converted models are kept (``$XVR_MODELS_DIR`` or ``~/.cache/xvrcore/models``)."""
    env = os.environ.get("XVR_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xvrcore" / "models"


def _patterns(file: str | None) -> list[str]:
    if file is None:
        return [MODEL_JSON, MODEL_WEIGHTS]
    file = file.strip("/")
    if file.endswith(".pth"):
        return [file]
    return [file, f"{file}/{MODEL_JSON}", f"{file}/{MODEL_WEIGHTS}"]


def _download(repo: str, revision: str | None, file: str | None, cache_dir: str | Path | None) -> Path:
    if not _REPO_RE.match(repo):
        raise CheckpointError(f"{repo!r} is neither a local folder nor a Hugging Face repository id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - an installation problem
        raise CheckpointError("pulling models needs the huggingface_hub package (pip install huggingface_hub)") from exc
    try:
        path = snapshot_download(repo, revision=revision, cache_dir=cache_dir, allow_patterns=_patterns(file))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{repo}{'@' + revision if revision else ''} is not in the Hugging Face cache and the hub cannot be reached "
            "(offline, HF_HUB_OFFLINE=1?); pull it once while online"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(f"could not pull {repo}: {exc}") from None
    return Path(path)


def _converted_folder(pth: Path) -> Path:
    """Stable place for the conversion of an xvr file (keyed on its content)."""
    return models_dir() / "xvr" / f"{pth.stem}-{file_sha256(pth)[:16]}"


def _as_model_folder(target: Path) -> Path:
    if target.is_file() and target.suffix == ".pth":
        folder = _converted_folder(target)
        if not (folder / MODEL_JSON).is_file():
            import_xvr(target, folder)
        target = folder
    elif target.is_file() and target.name == MODEL_JSON:
        target = target.parent
    if not (target / MODEL_JSON).is_file():
        raise CheckpointError(f"no xvrcore model in {target} (expected {MODEL_JSON} + {MODEL_WEIGHTS}, or an xvr .pth file)")
    load_model(target)  # validates format and weights before anyone relies on the folder
    return target


def pull(
    repo: str, revision: str | None = None, file: str | None = None, cache_dir: str | Path | None = None
) -> Path:
    """A usable model folder for ``repo`` (Hugging Face id or local folder); see the module docstring."""
    local = Path(repo).expanduser()
    root = local if local.is_dir() else _download(repo, revision, file, cache_dir)
    target = root / file.strip("/") if file else root
    if not target.exists():
        raise CheckpointError(f"{file} is not in {repo}{'@' + revision if revision else ''}")
    return _as_model_folder(target)
