"""What an evaluation run is: its spec (``focus eval``'s settings) and the signature that guards a resume.

Resume: records are keyed by (method, item id), which says nothing about the model or settings that produced them,
so ``<report>.run.json`` stores the run signature (:func:`run_signature`) and a run whose signature differs from the
stored one is refused instead of mixing its records with the old ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.errors import FocusError
from focus_tool.eval.records import done_keys, items_path


@dataclass(frozen=True, kw_only=True)
class EvalSpec:
    """What ``focus eval`` runs."""

    methods: tuple[str, ...]
    benchmark: str
    data: Path | None
    report: Path
    limit: int | None = None
    seed: int = 0
    model: str | None = None
    scheme: str | None = None
    device: str = "cpu"
    attn: str | None = None  # None: eager if ViCrop is among the methods, else sdpa
    dtype: str | None = None
    zoomeye_depth: int | None = None
    vicrop_variant: str = "rel-att"
    vicrop_high: bool = False
    pipeline: str = "preset"  # FOCUS: the preset as it is, "paper" or "lean" (focus_tool.presets.pipeline_variant)
    command: str = ""
    progress: bool = True


def signature_path(report: Path) -> Path:
    """The run signature sidecar next to the report."""
    return report.with_name(report.stem + ".run.json")


_EDGE_BYTES: Final[int] = 1 << 20


def weights_fingerprint(folder: Path) -> str | None:
    """sha256 over the weight files of a local checkpoint folder (None if it has none), cheap and clone-stable.

    Per file: its name, size, first and last MiB (mtimes differ between clones, a full hash of a 15 GB checkpoint
    costs minutes). A retrained checkpoint changes its tensors' bytes at both ends, so this catches it in practice;
    an edit confined to the middle of a large file would go unnoticed. ``focus_preset.json`` is hashed whole: the
    runner's FOCUS and ZoomEye read their settings from it.
    """
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            h.update(fh.read(_EDGE_BYTES))
            if size > _EDGE_BYTES:
                fh.seek(max(_EDGE_BYTES, size - _EDGE_BYTES))
                h.update(fh.read())
    preset_file = folder / "focus_preset.json"
    if preset_file.is_file():
        h.update(b"focus_preset.json\0" + preset_file.read_bytes())
    return h.hexdigest()


def run_signature(spec: EvalSpec, scheme: str, adapter: MLLMAdapter | None = None) -> dict[str, Any]:
    """What determines a per-item record besides the method and the item: the resume key of ``<report>.run.json``.

    The model is named as given (``--model``), or by the adapter's ``model_id`` when an adapter is passed in; the
    embedded model is called ``"embedded"`` and paths are not resolved, so a report resumes in another clone.
    Left out on purpose: the methods (adding one is a feature), device and attention kernel (the default kernel
    depends on the methods; numerics differ only in rounding), progress and the command line.
    """
    from focus_tool.adapters.registry import default_model_path

    name = adapter.model_id if adapter is not None else spec.model
    if name is None or Path(name) == default_model_path():
        name, folder = "embedded", default_model_path()
    else:
        folder = Path(name).expanduser()
    return {
        "model": name,
        "model_weights": weights_fingerprint(folder) if folder.is_dir() else None,
        "benchmark": spec.benchmark,
        "data": None if spec.data is None else str(spec.data),
        "seed": spec.seed,
        "limit": spec.limit,
        "scheme": scheme,
        "dtype": spec.dtype,
        "zoomeye_depth": spec.zoomeye_depth,
        "vicrop_variant": spec.vicrop_variant,
        "vicrop_high": spec.vicrop_high,
        **({"pipeline": spec.pipeline} if spec.pipeline != "preset" else {}),
    }


def check_signature(report: Path, signature: dict[str, Any]) -> bool:
    """Whether item records of an earlier run exist; they must stem from ``signature``.

    Raises:
        FocusError: records exist and ``<report>.run.json`` is missing, unreadable or names other settings.
    """
    if not done_keys(report):
        return False
    items, sidecar = items_path(report), signature_path(report)
    fix = f"delete {items} (and any {report.stem}.items.rank*.jsonl) or use another --report path"
    try:
        stored = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        stored = None
    if not isinstance(stored, dict):
        raise FocusError(f"{items} holds results without a readable run signature {sidecar.name}; {fix}")

    def shown(key: str, value: Any) -> str:  # a 64-digit hash would swamp the one-line message
        return json.dumps(value[:12] if key == "model_weights" and isinstance(value, str) else value)

    changed = [
        f"{k} {shown(k, stored.get(k))} -> {shown(k, signature.get(k))}"
        for k in sorted(set(stored) | set(signature))
        if stored.get(k) != signature.get(k)
    ]
    if changed:
        raise FocusError(f"{items} holds results of a different run (changed: {', '.join(changed)}); {fix}")
    return True


def write_signature(report: Path, signature: dict[str, Any]) -> None:
    """Write ``<report>.run.json`` (tmp + rename: another rank, or a crash, never sees a half-written sidecar)."""
    tmp = signature_path(report).with_suffix(".tmp")
    tmp.write_text(json.dumps(signature, indent=1) + "\n")
    tmp.replace(signature_path(report))
