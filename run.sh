#!/usr/bin/env bash
# One-stop set-up and entry point. Creates .venv (if missing), installs focus-tool with its extras, then runs
#   ./run.sh demo [ARGS]   the main job: `focus demo` on the embedded model
#   ./run.sh test          ruff + mypy + the pytest suite (what CI runs)
#   ./run.sh focus ARGS    any `focus` command, e.g. ./run.sh focus zoom img.png -q "..."
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${FOCUS_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.focus-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch: keep a torch the user installed (e.g. a CUDA build); otherwise the CPU wheel this project is tested on.
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  fi
  "$VENV/bin/python" -m pip install -q -e ".[dev,langchain,mcp,eval]"
  touch "$stamp"
fi
export HF_HUB_OFFLINE=1
cmd=${1:-demo}
shift || true
case "$cmd" in
  demo) exec "$VENV/bin/focus" demo "$@" ;;
  test)
    "$VENV/bin/ruff" check focus_tool mcp_server tests examples benchmarks
    "$VENV/bin/mypy" focus_tool mcp_server
    exec "$VENV/bin/python" -m pytest -q "$@" ;;
  focus) exec "$VENV/bin/focus" "$@" ;;
  *) echo "usage: ./run.sh demo|test|focus ..." >&2; exit 2 ;;
esac
