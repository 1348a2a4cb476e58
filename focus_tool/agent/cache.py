"""The session cache: results and region boxes of recent calls, per image content hash."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from focus_tool.errors import InputRejected, quote_text
from focus_tool.result import FocusResult


@dataclass
class _ImageEntry:
    """What the session remembers about one image."""

    regions: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # id -> original-image box
    results: OrderedDict[tuple[str, str, str], FocusResult] = field(default_factory=OrderedDict)


class SessionCache:
    """Results of recent calls per image content hash (LRU over images, and over requests per image). Thread-safe."""

    def __init__(self, max_images: int = 16, max_results_per_image: int = 16) -> None:
        if max_images < 1 or max_results_per_image < 1:
            raise ValueError(f"cache sizes must be >= 1, got {max_images}, {max_results_per_image}")
        self._max_images = max_images
        self._max_results = max_results_per_image
        self._images: OrderedDict[str, _ImageEntry] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, sha: str, key: tuple[str, str, str]) -> FocusResult | None:
        """The stored result of an identical request, if any."""
        with self._lock:
            entry = self._images.get(sha)
            if entry is None or key not in entry.results:
                return None
            self._images.move_to_end(sha)
            entry.results.move_to_end(key)
            return entry.results[key]

    def region_box(self, sha: str, region_id: str) -> tuple[int, int, int, int]:
        """The original-image box of a region returned earlier for this image; raises InputRejected if unknown."""
        with self._lock:
            entry = self._images.get(sha)
            if entry is not None and region_id in entry.regions:
                return entry.regions[region_id]
            known = ", ".join(list(entry.regions)[:20]) if entry else ""
        if not known:
            raise InputRejected(
                f"region_id {quote_text(region_id)} is unknown: no earlier result for this image is remembered; "
                "call without region_id first, then pass one of the returned region ids"
            )
        raise InputRejected(
            f"region_id {quote_text(region_id)} is unknown for this image; pass one of the known ids: {known}"
        )

    def store(self, sha: str, key: tuple[str, str, str], result: FocusResult) -> list[str]:
        """Remember a result and its regions; returns the region ids now known for this image."""
        with self._lock:
            entry = self._images.setdefault(sha, _ImageEntry())
            self._images.move_to_end(sha)
            entry.results[key] = result
            entry.results.move_to_end(key)
            while len(entry.results) > self._max_results:
                entry.results.popitem(last=False)
            for r in result.regions:
                entry.regions[r.id] = r.box
            while len(self._images) > self._max_images:
                self._images.popitem(last=False)
            return list(entry.regions)

    def known_ids(self, sha: str) -> list[str]:
        """Region ids remembered for an image."""
        with self._lock:
            entry = self._images.get(sha)
            return list(entry.regions) if entry else []

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._images.clear()
