"""Efficiency accounting for the harness: the recording forward counter, the analytic FLOPs estimate, peak memory.

The same for every method (FOCUS App. A.2): forward passes counted at the adapter boundary per phase, prefill tokens
summed over all calls of a question, and analytic TFLOPs of the language model per :data:`FLOPS_FORMULA`.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence
from typing import Final

from focus_tool.adapters.base import ForwardCounter, MLLMAdapter

FLOPS_FORMULA: Final[str] = (
    "per counted sequence of n prefill tokens computed after c cached ones: L*(4*n*d^2 + 2*n*(c+n)*d + 2*n*d*m) "
    "multiply-accumulates (FastV/PyramidDrop, as in FOCUS Tab. 14, c = 0 for a full prefill); LLM only, vision "
    "encoder and decode steps excluded"
)


class RecordingCounter(ForwardCounter):
    """A :class:`ForwardCounter` that also keeps every call's (rows, new tokens, context tokens) for the FLOPs
    estimate (context: prefix tokens served from a cache, which the new tokens attend to).
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int, int]] = []

    def log(self, n_rows: int, n_new: int, context: int) -> None:
        """Remember the call."""
        self.calls.append((n_rows, n_new, context))

    def reset(self) -> None:
        """Zero the counts; the call log is cleared per item by the runner (methods reset mid-question)."""
        super().reset()


def llm_dims(adapter: MLLMAdapter) -> tuple[int, int, int] | None:
    """(layers L, hidden d, FFN m) of the language model, from :attr:`MLLMAdapter.lm_dims` (None when unknown).

    Args:
        adapter: the loaded adapter.

    Returns:
        The dimensions as the tuple :func:`tflops` takes, or None.
    """
    dims = adapter.lm_dims
    return None if dims is None else (dims.layers, dims.hidden, dims.ffn)


def tflops(calls: Sequence[tuple[int, ...]], dims: tuple[int, int, int] | None) -> float | None:
    """Analytic TFLOPs (multiply-accumulates / 1e12) of the calls, :data:`FLOPS_FORMULA`.

    A call is ``(rows, new tokens)`` or ``(rows, new tokens, context)``: each of the rows computes n = new / rows
    tokens attending to ``context`` cached ones, L*(4*n*d^2 + 2*n*(context + n)*d + 2*n*d*m).

    Args:
        calls: the counted calls.
        dims: (layers, hidden, FFN) of the language model, or None.

    Returns:
        The estimate, or None when the dimensions are unknown.
    """
    if dims is None:
        return None
    layers, d, m = dims
    total = 0.0
    for call in calls:
        n_seq, n_tok = call[0], call[1]
        ctx = call[2] if len(call) > 2 else 0
        if n_seq <= 0:
            continue
        n = n_tok / n_seq
        total += n_seq * layers * (4 * n * d * d + 2 * n * (ctx + n) * d + 2 * n * d * m)
    return total / 1e12


def peak_mem_mb(device: str) -> float:
    """CUDA max allocated (MiB) on CUDA, else the process's peak resident set size (MiB)."""
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_allocated()) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
