"""The benchmark table: what ``focus eval --benchmark NAME`` loads, asks, and how it scores, one entry per name.

Each :class:`BenchmarkSpec` owns every per-benchmark decision of the harness: the loader, the instruction appended
to the question (the prompt suffix), the default answer scheme, whether letter schemes shuffle stored options, and
the accuracy scorer. A new benchmark is one :func:`register_benchmark` call (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from focus_tool.errors import FocusError
from focus_tool.eval.datasets import (
    DatasetError,
    EvalItem,
    load_hrbench,
    load_mme_realworld,
    load_synthetic,
    load_vstar,
)
from focus_tool.eval.records import Scored
from focus_tool.eval.scoring import accuracy_by_task, accuracy_cyclic, accuracy_plain
from focus_tool.prompts import LETTER_INSTRUCTION

VSTAR_SUFFIX: Final[str] = LETTER_INSTRUCTION  # lmms-eval / jsonl `text`
HRBENCH_SUFFIX: Final[str] = "Answer the option letter directly."  # lmms-eval hrbench_doc_to_text / ZoomEye
MME_SUFFIX: Final[str] = (  # MME-RealWorld README / ZoomEye
    "Select the best answer to the above multiple-choice question based on the image. Respond with only the letter "
    "(A, B, C, D, or E) of the correct option.\nThe best answer is:"
)
SYNTHETIC_SIZE: Final[int] = 200  # the synthetic split's size without --limit


@dataclass(frozen=True)
class LoadRequest:
    """What a loader is asked for.

    Attributes:
        benchmark: the benchmark's name (for messages).
        data: the local file or folder given with ``--data`` (None: not given).
        shuffle_seed: seed of the per-item option shuffle under letter schemes (None: stored order).
        seed: the run's seed (the synthetic split's).
        limit: the run's ``--limit`` (the synthetic split's size; file benchmarks are cut after loading).
        work_dir: where a generated split goes without ``--data``.
    """

    benchmark: str
    data: Path | None
    shuffle_seed: int | None = None
    seed: int = 0
    limit: int | None = None
    work_dir: Path | None = None

    @property
    def path(self) -> Path:
        """``data``, which a file benchmark needs.

        Raises:
            DatasetError: no ``--data`` was given.
        """
        if self.data is None:
            raise DatasetError(f"--data PATH is required for {self.benchmark} (a local copy; nothing is downloaded)")
        return Path(self.data)


Loader = Callable[[LoadRequest], list[EvalItem]]
Scorer = Callable[[Sequence[Scored]], dict[str, Any]]


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark of ``focus eval``.

    Attributes:
        name: the ``--benchmark`` name, also the report's.
        loader: ``(LoadRequest) -> items``, options in presentation order.
        suffix: the instruction after the question under letter schemes (the benchmark's own prompt).
        summary: one line for docs.
        default_scheme: the answer scheme without ``--scheme`` (unless the checkpoint's preset says "logit").
        shuffles_options: letter schemes shuffle the stored options per item (the report says so).
        writes_data: the loader writes its items' files (in a data-parallel run rank 0 loads first).
        scorer: per-item records -> ``{"n", "accuracy", ...breakdown}``.
    """

    name: str
    loader: Loader
    suffix: str
    summary: str = ""
    default_scheme: str = "letter-lenient"
    shuffles_options: bool = False
    writes_data: bool = False
    scorer: Scorer = accuracy_plain


def _vstar(req: LoadRequest) -> list[EvalItem]:
    return load_vstar(req.path, shuffle_seed=req.shuffle_seed)


def _hrbench(req: LoadRequest) -> list[EvalItem]:
    return load_hrbench(req.path)


def _mme(req: LoadRequest) -> list[EvalItem]:
    return load_mme_realworld(req.path)


def _synthetic(req: LoadRequest) -> list[EvalItem]:
    n = req.limit if req.limit is not None else SYNTHETIC_SIZE
    return load_synthetic(req.seed, n, Path(req.data or req.work_dir or "."), shuffle_seed=req.shuffle_seed)


_REGISTRY: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("vstar", _vstar, VSTAR_SUFFIX, "V*Bench", shuffles_options=True),
        BenchmarkSpec("hrbench4k", _hrbench, HRBENCH_SUFFIX, "HR-Bench 4K", scorer=accuracy_cyclic),
        BenchmarkSpec("hrbench8k", _hrbench, HRBENCH_SUFFIX, "HR-Bench 8K", scorer=accuracy_cyclic),
        BenchmarkSpec(
            "mme-rw-lite", _mme, MME_SUFFIX, "MME-RealWorld-Lite", default_scheme="mme-regex", scorer=accuracy_by_task
        ),
        BenchmarkSpec(
            "synthetic", _synthetic, VSTAR_SUFFIX, "the seeded synthetic split", shuffles_options=True, writes_data=True
        ),
    )
}


def register_benchmark(spec: BenchmarkSpec, *, replace: bool = False) -> None:
    """Add ``spec`` to the table (``replace``: allow overwriting a registered name).

    Raises:
        FocusError: the name is taken (and ``replace`` is False) or is not letters, digits, '_' or '-'.
    """
    if not spec.name.replace("-", "_").isidentifier():
        raise FocusError(f"benchmark name {spec.name!r} must be letters, digits, '_' or '-'")
    if spec.name in _REGISTRY and not replace:
        raise FocusError(f"benchmark {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def unregister_benchmark(name: str) -> None:
    """Remove a registered benchmark (tests; a no-op for unknown names)."""
    _REGISTRY.pop(name, None)


def benchmark_names() -> tuple[str, ...]:
    """The registered benchmark names, built-ins first."""
    return tuple(_REGISTRY)


def benchmark_spec(name: str) -> BenchmarkSpec:
    """The registered benchmark called ``name``.

    Raises:
        DatasetError: no benchmark has that name.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetError(f"unknown benchmark {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


def load_benchmark(
    benchmark: str,
    data: Path | None,
    *,
    shuffle_seed: int | None,
    seed: int = 0,
    limit: int | None = None,
    work_dir: Path | None = None,
) -> list[EvalItem]:
    """Items of ``benchmark`` (:func:`benchmark_names`); ``limit`` keeps the first N in file order."""
    spec = benchmark_spec(benchmark)
    items = spec.loader(LoadRequest(benchmark, data, shuffle_seed, seed, limit, work_dir))
    return items[:limit] if limit is not None else items


def accuracy_breakdown(records: Sequence[Scored], benchmark: str) -> dict[str, Any]:
    """Official accuracy of per-item records (``correct``, ``category``, ``extra``) plus its breakdown, by the
    benchmark's scorer (:mod:`focus_tool.eval.scoring`: plain, HR-Bench's cyclic groups, MME-RealWorld's tasks).
    """
    return benchmark_spec(benchmark).scorer(records)
