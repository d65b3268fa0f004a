#!/usr/bin/env bash
# Container entrypoint: put the app's writable state on persistent storage when there is some,
# then run the container's command (the Dockerfile's CMD).
#
# A Hugging Face Space with persistent storage mounts it at /data; everything else in the
# container is lost on every restart. DERMO_PERSISTENT_DIR moves that mount point (tests use it).
set -euo pipefail

persistent_dir="${DERMO_PERSISTENT_DIR:-/data}"
app_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -d "$persistent_dir" && -w "$persistent_dir" ]]; then
    export DERMO_MODELS_DIR="$persistent_dir/models"
    export DERMO_DB_PATH="$persistent_dir/app.duckdb"
    export DERMO_DATA_ROOT="$persistent_dir/datasets"
    export DERMO_CACHE_DIR="$persistent_dir/cache"
    mkdir -p "$DERMO_MODELS_DIR" "$DERMO_DATA_ROOT" "$DERMO_CACHE_DIR"
    # Fresh storage has no model: seed it with the committed default one, so that the app has an
    # active model from the first start. Later starts keep whatever was trained or activated.
    if [[ -z "$(ls -A "$DERMO_MODELS_DIR")" && -d "$app_dir/models" ]]; then
        cp -R "$app_dir/models/." "$DERMO_MODELS_DIR/"
    fi
    # The Train page only reads below DERMO_DATA_ROOT, so the bundled sample is copied there
    # (with its attribution file) to stay usable.
    if [[ ! -e "$DERMO_DATA_ROOT/sample" && -d "$app_dir/data/sample" ]]; then
        cp -R "$app_dir/data/sample" "$DERMO_DATA_ROOT/sample"
    fi
else
    echo "docker-entrypoint: $persistent_dir is missing or read-only; trained runs, history" \
        "and uploads stay inside the container and are lost when it restarts." >&2
fi

exec "$@"
