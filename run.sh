#!/usr/bin/env bash
# One-stop set-up and entry point. Creates .venv (if missing), installs focus-tool with its extras, then runs
#   ./run.sh demo [ARGS]   the main job: `focus demo` on the embedded model
#   ./run.sh test          ruff + mypy + the pytest suite (what CI runs)
#   ./run.sh focus ARGS    any `focus` command, e.g. ./run.sh focus zoom img.png -q "..."
# Set-up messages and pip's own progress go to stderr (stdout stays the command's), one "run.sh: ..." line per step.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${FOCUS_VENV:-.venv}
step="start"
say() { step=$1; echo "run.sh: $1" >&2; }
trap 'rc=$?; [ $rc -eq 0 ] || echo "run.sh: failed while ${step} (exit $rc); fix the error above and rerun (what is installed is kept)" >&2' EXIT
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $("$PY" --version 2>/dev/null || echo "$PY (not found: set PYTHON=/path/to/python3.11+)")"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.focus-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "upgrading pip"
  "$VENV/bin/python" -m pip install --upgrade pip >&2
  # torch: keep a torch the user installed (e.g. a CUDA build); otherwise the build this project is tested on.
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    say "installing torch 2.13.0 (CPU build ~200 MB where pip finds one; PyPI's Linux wheel is a CUDA build of several GB)"
    "$VENV/bin/python" -m pip install "torch==2.13.0" >&2
  else
    say "keeping torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
  fi
  say "installing focus-tool and its extras (dev, langchain, mcp, eval)"
  "$VENV/bin/python" -m pip install -e ".[dev,langchain,mcp,eval]" >&2
  touch "$stamp"
  say "installed: $("$VENV/bin/focus" --version)"
fi
trap - EXIT
export HF_HUB_OFFLINE=1
cmd=${1:-demo}
shift || true
case "$cmd" in
  demo) exec "$VENV/bin/focus" demo "$@" ;;
  test)
    "$VENV/bin/ruff" check focus_tool mcp_server tests examples benchmarks
    "$VENV/bin/ruff" format --check --quiet .
    "$VENV/bin/mypy" focus_tool mcp_server
    exec "$VENV/bin/python" -m pytest -q "$@" ;;
  focus) exec "$VENV/bin/focus" "$@" ;;
  *) echo "usage: ./run.sh demo|test|focus ..." >&2; exit 2 ;;
esac
