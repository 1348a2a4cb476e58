"""What an evaluation run is: its spec (``focus eval``'s settings) and the signature that guards a resume.

Resume: records are keyed by (method, item id), which says nothing about the model or settings that produced them,
so ``<report>.run.json`` stores the run signature (:func:`run_signature`) and a run whose signature differs from the
stored one is refused instead of mixing its records with the old ones.

A method's options are recorded under ``"method_options"`` as ``{method: {option: value}}``, the options that differ
from their defaults only, so a default run records ``{}`` and adding a method at its defaults is no change.
Sidecars written before method options existed name four options as top-level keys (:data:`_LEGACY_OPTIONS`); they
are read as the same ``"method_options"``, so their reports resume under equal settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.errors import FocusError
from focus_tool.eval.records import done_keys, items_path
from focus_tool.methods import changed_options, method_spec


@dataclass(frozen=True, kw_only=True)
class EvalSpec:
    """What ``focus eval`` runs.

    ``method_options`` maps a method of ``methods`` to its options object (its ``MethodSpec.options`` class, e.g.
    from :func:`focus_tool.methods.parse_method_options`); a method not in it runs with its defaults.
    """

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
    method_options: Mapping[str, Any] = field(default_factory=dict)
    command: str = ""
    progress: bool = True


def options_of(spec: EvalSpec) -> dict[str, Any]:
    """Each method of ``spec`` with its options object (the defaults where ``spec.method_options`` has none).

    Raises:
        FocusError: options are given for a method the run does not have, or of another method's class.
    """
    stray = sorted(set(spec.method_options) - set(spec.methods))
    if stray:
        raise FocusError(
            f"options given for {', '.join(stray)}, which the run does not have ({', '.join(spec.methods)})"
        )
    out = {}
    for name in spec.methods:
        cls = method_spec(name).options_type()
        options = spec.method_options.get(name, cls())
        if not isinstance(options, cls):
            raise FocusError(f"method {name!r} takes {cls.__name__} options, got {type(options).__name__}")
        out[name] = options
    return out


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
    Left out on purpose: the methods (adding one is a feature; their options that differ from the defaults are in),
    device and attention kernel (the default kernel depends on the methods; numerics differ only in rounding),
    progress and the command line.

    Raises:
        FocusError: ``spec.method_options`` does not fit ``spec.methods`` (:func:`options_of`).
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
        "method_options": {
            name: changed for name, options in options_of(spec).items() if (changed := changed_options(options))
        },
    }


# (old top-level key) -> (method, option, the default the old key was written with)
_LEGACY_OPTIONS: Final[dict[str, tuple[str, str, Any]]] = {
    "pipeline": ("focus", "pipeline", "preset"),
    "zoomeye_depth": ("zoomeye", "depth", None),
    "vicrop_variant": ("vicrop", "variant", "rel-att"),
    "vicrop_high": ("vicrop", "high", False),
}


def _current_shape(stored: dict[str, Any]) -> dict[str, Any]:
    """A sidecar written before ``"method_options"`` existed, in the current shape (others as they are)."""
    if "method_options" in stored:
        return stored
    out = {k: v for k, v in stored.items() if k not in _LEGACY_OPTIONS}
    options: dict[str, dict[str, Any]] = {}
    for key, (method, option, default) in _LEGACY_OPTIONS.items():
        if key in stored and stored[key] != default:
            options.setdefault(method, {})[option] = stored[key]
    out["method_options"] = options
    return out


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
    stored = _current_shape(stored)

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
