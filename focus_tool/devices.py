"""Which torch device a ``--device`` choice means: the one owner of ``auto`` for the CLI and the MCP server.

torch is imported inside :func:`resolve_device` only, so building the command line (``focus --help``) stays light.
"""

from __future__ import annotations

from typing import Final

from focus_tool.errors import FocusError, quote_text

DEVICE_CHOICES: Final[tuple[str, ...]] = ("auto", "cpu", "cuda", "mps")
DEFAULT_DEVICE: Final[str] = "auto"


def resolve_device(name: str) -> str:
    """The torch device for ``name``: ``auto`` is cuda if PyTorch sees a CUDA GPU, else mps, else cpu.

    Args:
        name: one of :data:`DEVICE_CHOICES`.

    Returns:
        ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Raises:
        FocusError: ``name`` is not a choice, or names a device PyTorch does not see here.
    """
    if name not in DEVICE_CHOICES:
        raise FocusError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {quote_text(name)}")
    if name == "cpu":
        return name
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise FocusError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu (or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FocusError("--device mps: PyTorch sees no Apple MPS device here; use --device cpu (or auto)")
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"
