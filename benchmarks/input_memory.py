"""RSS growth of ``FocusService.zoom`` on the memory cases of issue 17, with the embedded model.

    python benchmarks/input_memory.py            # JSON: one figure (MB of peak RSS growth) per case

Cases: thin strips (a 1.5 kB 14142 x 32 PNG, 20000 x 50, 40000 x 32: refused by the aspect / long-side caps, and
served again with those caps off, where ``pad_to_square``'s shrink alone bounds them), the
widest strip accepted (16384 x 256, padded to a square after shrinking), one 40 MP image by path, and 4 concurrent
40 MP base64 calls (decoded one at a time inside the queue slot). Each figure is VmHWM after the case minus VmRSS
before it, with the high-water mark reset through ``/proc/self/clear_refs`` (Linux).

glibc's malloc keeps what a thread freed in that thread's arena; the service hands it back (``malloc_trim``) after
each large image, else 4 worker threads would each keep ~200 MB (+730 MB for the 4-call case instead of +220 MB).
"""

from __future__ import annotations

import base64
import gc
import io
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

MB = 2**20


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_growth(fn: Callable[[], object]) -> tuple[float, float]:
    """(peak RSS growth in MB, seconds) of one call of ``fn``."""
    gc.collect()
    base = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    fn()
    return (_status("VmHWM:") - base) / MB, time.perf_counter() - t0


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 160, 90)).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def measure(folder: Path) -> dict[str, dict[str, object]]:
    """Run every case through a FocusService over the embedded model; returns {case: {mb, s, outcome, bytes}}."""
    from focus_tool.adapters.registry import load_adapter
    from focus_tool.agent import AgentPolicy, FocusService
    from focus_tool.errors import FocusError
    from focus_tool.inputs import InputPolicy
    from focus_tool.pipeline import FocusPipeline
    from focus_tool.presets import config_for

    adapter = load_adapter()
    service = FocusService(
        FocusPipeline(adapter, config_for(adapter)), AgentPolicy(allowed_roots=(folder,)), reuse_results=False
    )
    (folder / "warm.png").write_bytes(_png((256, 192)))
    service.zoom(image_path=str(folder / "warm.png"), target="red card")  # first-call allocations out of the way
    loose = InputPolicy(max_aspect=2000.0, max_long_side_px=40_000)  # the strips again with the aspect and long-side
    lenient = FocusService(  # caps off: then pad_to_square's shrink alone bounds them
        FocusPipeline(adapter, config_for(adapter), loose),
        AgentPolicy(allowed_roots=(folder,), image=loose),
        reuse_results=False,
    )

    def call(svc: FocusService = service, **kw: str) -> str:
        try:
            svc.zoom(target="red card", **kw)
            return "served"
        except FocusError as e:
            return f"refused: {e}"

    out: dict[str, dict[str, object]] = {}
    for name, size in {
        "14142x32": (14_142, 32),
        "20000x50": (20_000, 50),
        "40000x32": (40_000, 32),
        "16384x256": (16_384, 256),
        "40MP path": (6400, 6250),
    }.items():
        path = folder / f"{name.replace(' ', '_')}.png"
        path.write_bytes(_png(size))
        result: list[str] = []
        mb, s = peak_growth(lambda p=path, r=result: r.append(call(image_path=str(p))))
        out[name] = {"mb": round(mb, 1), "s": round(s, 2), "bytes": path.stat().st_size, "outcome": result[0][:100]}
        if size[0] >= 14_142 and size[1] <= 50:
            result.clear()
            mb, s = peak_growth(lambda p=path, r=result: r.append(call(lenient, image_path=str(p))))
            out[f"{name} caps off"] = {"mb": round(mb, 1), "s": round(s, 2), "outcome": result[0][:100]}

    payload = base64.b64encode(_png((6400, 6250))).decode()
    results: list[str] = []

    def four() -> None:
        threads = [threading.Thread(target=lambda: results.append(call(image_base64=payload))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    mb, s = peak_growth(four)
    out["4 x 40MP base64"] = {"mb": round(mb, 1), "s": round(s, 2), "bytes": len(payload), "outcome": results}
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(Path(tmp)), indent=1))


if __name__ == "__main__":
    main()
