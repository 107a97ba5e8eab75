#!/usr/bin/env bash
# The end-to-end demo (make demo). Filled in stage by stage as the jobs land.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "recstream demo: no stages yet"
