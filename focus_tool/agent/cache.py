"""The session cache: results of recent calls per image content hash, and the region ids each caller received.

A region id names one region of one result for one caller: ``"<token>-<local id>"``, where ``<local id>`` is the
pipeline's id within its result (``r1``, ``r2``, ...) and ``<token>`` is fresh for every result handed out (a
computed result and a result-cache hit alike): six random hex digits (:mod:`secrets`) and then this cache's call
number in hex, so no two tokens of one cache are equal and none can be guessed. An id is honoured only for the
caller it was issued to and only while it is remembered (LRU per image); anything else is refused in one line.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from focus_tool.errors import InputRejected, quote_text
from focus_tool.result import FocusResult

Box = tuple[int, int, int, int]
ResultKey = tuple[str, str, Box | None]
"""(question, target, crop box the model saw or None for the whole image): what makes two requests identical."""

KNOWN_IDS_SHOWN = 64  # SessionInfo.known_region_ids lists at most this many ids (the most recently issued)
_IDS_IN_MESSAGE = 4  # a refusal names at most this many of the caller's ids


@dataclass(frozen=True)
class _Grant:
    """One issued region id: who received it and the region's original-image box."""

    caller: str
    box: Box


@dataclass
class _ImageEntry:
    """What the session remembers about one image."""

    results: OrderedDict[ResultKey, FocusResult] = field(default_factory=OrderedDict)  # pipeline ids (r1, r2, ...)
    regions: OrderedDict[str, _Grant] = field(default_factory=OrderedDict)  # issued id -> grant, oldest first


class SessionCache:
    """Results per image content hash and region ids per caller, all LRU-bounded. Thread-safe.

    Args:
        max_images: images remembered (results and region ids of older images are forgotten together).
        max_results_per_image: distinct requests remembered per image.
        max_regions_per_image: issued region ids remembered per image, over all callers.
    """

    def __init__(
        self, max_images: int = 16, max_results_per_image: int = 16, max_regions_per_image: int = 1024
    ) -> None:
        if min(max_images, max_results_per_image, max_regions_per_image) < 1:
            raise ValueError(
                f"cache sizes must be >= 1, got {max_images}, {max_results_per_image}, {max_regions_per_image}"
            )
        self._max_images = max_images
        self._max_results = max_results_per_image
        self._max_regions = max_regions_per_image
        self._images: OrderedDict[str, _ImageEntry] = OrderedDict()
        self._calls = itertools.count(1)
        self._lock = threading.Lock()

    def lookup(self, sha: str, key: ResultKey) -> FocusResult | None:
        """The stored result of an identical request (pipeline ids, not yet issued to anyone), if any."""
        with self._lock:
            entry = self._images.get(sha)
            if entry is None or key not in entry.results:
                return None
            self._images.move_to_end(sha)
            entry.results.move_to_end(key)
            return entry.results[key]

    def store(self, sha: str, key: ResultKey, result: FocusResult) -> None:
        """Remember a result (boxes in original-image pixels, the pipeline's own region ids)."""
        with self._lock:
            entry = self._entry(sha)
            entry.results[key] = result
            entry.results.move_to_end(key)
            while len(entry.results) > self._max_results:
                entry.results.popitem(last=False)

    def issue(self, sha: str, caller: str, result: FocusResult) -> tuple[FocusResult, list[str]]:
        """Give ``result``'s regions fresh ids registered to ``caller``.

        Returns:
            The result with ids ``"<token>-<local id>"`` and the ids ``caller`` may now pass for this image (the
            :data:`KNOWN_IDS_SHOWN` most recent, oldest first).
        """
        with self._lock:
            token = f"{secrets.token_hex(3)}{next(self._calls):x}"  # random part + call number: unique, unguessable
            regions = [r.model_copy(update={"id": f"{token}-{r.id}"}) for r in result.regions]
            entry = self._entry(sha)
            for r in regions:
                entry.regions[r.id] = _Grant(caller, r.box)
            while len(entry.regions) > self._max_regions:
                entry.regions.popitem(last=False)
            return result.model_copy(update={"regions": regions}), self._ids_of(entry, caller)

    def region_box(self, sha: str, region_id: str, caller: str) -> Box:
        """The original-image box of a region issued to ``caller`` for this image.

        Raises:
            InputRejected: the id was not issued to this caller for this image, or has been forgotten.
        """
        with self._lock:
            entry = self._images.get(sha)
            grant = entry.regions.get(region_id) if entry is not None else None
            if entry is not None and grant is not None and grant.caller == caller:
                self._images.move_to_end(sha)
                entry.regions.move_to_end(region_id)
                return grant.box
            own = self._ids_of(entry, caller)[-_IDS_IN_MESSAGE:] if entry is not None else []
        fix = (
            f"pass one of the region ids returned to you for it (e.g. {', '.join(own)}) or call without region_id"
            if own
            else "call again on this image without region_id first, then pass one of the region ids that call returns"
        )
        raise InputRejected(
            f"region_id {quote_text(region_id)} is unknown: it was not returned to this caller for this image (or has "
            f"expired); {fix}"
        )

    def known_ids(self, sha: str, caller: str) -> list[str]:
        """Region ids ``caller`` may pass for an image (the :data:`KNOWN_IDS_SHOWN` most recent, oldest first)."""
        with self._lock:
            entry = self._images.get(sha)
            return self._ids_of(entry, caller) if entry is not None else []

    def clear(self) -> None:
        """Forget everything (issued ids are refused afterwards; new tokens still never repeat old ones)."""
        with self._lock:
            self._images.clear()

    def _entry(self, sha: str) -> _ImageEntry:
        """The image's entry, created if needed and marked most recent; evicts the oldest image (lock held)."""
        entry = self._images.setdefault(sha, _ImageEntry())
        self._images.move_to_end(sha)
        while len(self._images) > self._max_images:
            self._images.popitem(last=False)
        return entry

    @staticmethod
    def _ids_of(entry: _ImageEntry, caller: str) -> list[str]:
        """``caller``'s ids in ``entry``, the :data:`KNOWN_IDS_SHOWN` most recently issued or used, oldest first."""
        return [rid for rid, grant in entry.regions.items() if grant.caller == caller][-KNOWN_IDS_SHOWN:]
