#!/usr/bin/env bash
# The GPU acceptance run (benchmarks/gpu_acceptance.py): bash benchmarks/gpu_acceptance.sh [--dry-run] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_acceptance.py "$@"
