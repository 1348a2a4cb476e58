#!/usr/bin/env bash
# CI: drive the stdio MCP server with the MCP Inspector CLI (an independent, TypeScript MCP client).
#
#   .ci/inspector.sh            (after ./run.sh test has created .venv)
#
# Starts `python -m mcp_server` on the shipped embedded model (focus_tool/embedded/model) with a temporary folder as
# the only allowed root, holding a generated synthetic image, and checks:
#   tools/list                  lists focus_zoom, focus_find and focus_allowed_roots
#   tools/call focus_find       text content with JSON regions, an image block, no error
#   tools/call focus_zoom       text content with an answer, no error
#   tools/call focus_find       on /etc/passwd: a tool error (inspector exit 5) saying "outside the allowed folders"
# Skips (exit 0, one line) when node/npx is missing or FOCUS_SKIP_INSPECTOR=1; any other failure fails CI.
# The Inspector 2.x CLI declares node >= 22.19 but its CLI mode runs on node 20 (npm prints EBADENGINE warnings).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${FOCUS_SKIP_INSPECTOR:-0}" = "1" ]; then
  echo "inspector: skipped (FOCUS_SKIP_INSPECTOR=1)"
  exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npx >/dev/null 2>&1; then
  echo "inspector: skipped (node/npx not found; install Node.js >= 20 to run the MCP Inspector CLI check)"
  exit 0
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "inspector: skipped (node $(node --version) is older than 20)"
  exit 0
fi

PY="$(pwd)/${FOCUS_VENV:-.venv}/bin/python"
MODEL="$(pwd)/focus_tool/embedded/model"
INSPECTOR="${FOCUS_INSPECTOR:-@modelcontextprotocol/inspector@^2}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

# A synthetic scene (fixed seed) and its question / target.
"$PY" - "$work" <<'EOF'
import json, sys
from pathlib import Path

from focus_tool.data.synthetic import benchmark_items, render

out = Path(sys.argv[1])
item = benchmark_items(0, 1)[0]
render(item.scene, max_side=768).save(out / "scene.png")
image = str(out / "scene.png")
q = item.question
(out / "find.json").write_text(json.dumps({"image_path": image, "target": q.targets[0], "max_crops": 2}))
(out / "zoom.json").write_text(json.dumps({"image_path": image, "question": q.text, "max_crops": 1}))
(out / "bad.json").write_text(json.dumps({"image_path": "/etc/passwd", "target": q.targets[0]}))
EOF

# inspect NAME EXPECTED_EXIT ARGS...: run the Inspector CLI against a fresh stdio server; JSON result in $work/NAME.out
inspect() {
  local name=$1 expected=$2
  shift 2
  local rc=0
  npx -y "$INSPECTOR" --cli --format json -q -e HF_HUB_OFFLINE=1 -e "OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}" \
    "$PY" -m mcp_server --model "$MODEL" --allowed-root "$work" "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
  if [ "$rc" != "$expected" ]; then
    echo "inspector: $name exited $rc, expected $expected" >&2
    grep -v 'EBADENGINE\|Unknown user config' "$work/$name.err" | tail -n 20 >&2 || true
    head -c 2000 "$work/$name.out" >&2 || true
    exit 1
  fi
}

inspect list 0 --method tools/list
inspect find 0 --method tools/call --tool-name focus_find --tool-args-json "$(cat "$work/find.json")"
inspect zoom 0 --method tools/call --tool-name focus_zoom --tool-args-json "$(cat "$work/zoom.json")"
inspect refused 5 --method tools/call --tool-name focus_find --tool-args-json "$(cat "$work/bad.json")"

# Check the four outputs and print one line each.
"$PY" - "$work" <<'EOF'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])


def load(name: str) -> dict:
    return json.loads((work / f"{name}.out").read_text())


def fail(message: str) -> None:
    sys.exit(f"inspector: {message}")


names = sorted(t["name"] for t in load("list")["result"]["tools"])
if not {"focus_zoom", "focus_find", "focus_allowed_roots"} <= set(names):
    fail(f"tools/list returned {names}")
print(f"inspector: tools/list -> {', '.join(names)}")

for name in ("find", "zoom"):
    result = load(name)["result"]
    content = result.get("content", [])
    if result.get("isError") or not content or content[0].get("type") != "text":
        fail(f"focus_{name} returned an error or no text: {json.dumps(result)[:500]}")
    summary = json.loads(content[0]["text"])
    kinds = [c["type"] for c in content]
    if not summary["regions"] or "structuredContent" not in result:
        fail(f"focus_{name} returned no regions or no structured content: {content[0]['text'][:500]}")
    top = summary["regions"][0]
    answer = f", answer {summary['answer']!r}" if name == "zoom" else ""
    print(
        f"inspector: tools/call focus_{name} -> content {kinds}, {summary['regions_total']} regions, "
        f"top {top['id']} {top['box']} p={top['confidence']}{answer}, forward passes {summary['forward_passes']}"
    )

refused = load("refused")
text = json.dumps(refused)
if "outside the allowed folders" not in text:
    fail(f"the refused call did not say why: {text[:500]}")
print("inspector: tools/call focus_find on /etc/passwd -> tool error (exit 5): outside the allowed folders")
EOF
echo "inspector: ok in $(($(date +%s) - started)) s ($("$PY" -c 'import sys; print(sys.version.split()[0])'), node $(node --version))"
