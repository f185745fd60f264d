"""Reading a state dict from the file a user gives: `.safetensors` with NumPy alone, `.pth` / `.pt`
through torch where it is installed (the `torch` extra). Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cooptim.errors import UserError

try:
    import torch
except ImportError:  # optional: only .pth files need it
    torch = None

try:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file as load_safetensors
except ImportError:  # optional: the `pretrained` extra
    load_safetensors, SafetensorError = None, Exception


class PretrainedError(UserError, ValueError):
    """A weights file that cannot be read or does not fit the model; the message names the file
    and the first key or shape that does not match."""


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """{key: float32 or integer array} of a state dict file, in the file's own layout (torch's)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"pretrained weights {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        if load_safetensors is None:
            raise PretrainedError(f"pretrained weights {path}: reading .safetensors needs the safetensors "
                                  f"package (pip install 'cooptim[pretrained]')")
        try:
            tensors = load_safetensors(str(path))
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise PretrainedError(f"pretrained weights {path}: not a readable safetensors file ({e})") from None
    elif suffix in (".pth", ".pt"):
        tensors = _read_torch(path)
    else:
        raise PretrainedError(f"pretrained weights {path}: unknown format {suffix!r}; give a .safetensors, "
                              f".pth or .pt state dict")
    return {key: _as_numpy(value) for key, value in tensors.items()}


def _read_torch(path: Path) -> dict:
    if torch is None:
        raise PretrainedError(f"pretrained weights {path}: reading a .pth file needs torch (pip install "
                              f"'cooptim[torch]'), or convert it once to .safetensors")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds (pickle, zip, runtime) for a file it cannot read
        raise PretrainedError(f"pretrained weights {path}: torch cannot read it ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint that wraps the state dict
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(f"pretrained weights {path}: not a state dict (a mapping of names to tensors); "
                              f"save model.state_dict(), not the model")
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def _as_numpy(value) -> np.ndarray:
    array = np.asarray(value)
    floating = np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16"  # ml_dtypes' bfloat16
    return array.astype(np.float32) if floating else array
