#!/usr/bin/env bash
# What the [azure] and [google] extras add to an install of this project: size, distributions and install time.
# The locked versions (uv sync --frozen, no dev group), on top of the extras s3, gcs, confluent and openlineage;
# the new packages come from an empty cache, as on a fresh machine. Prints one JSON object per extra and
# writes them to bench/results-extras.json. Run from the repository root after `make venv`.
set -euo pipefail
UV="$PWD/.tools/bin/uv"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
BASE=(--extra s3 --extra gcs --extra confluent --extra openlineage)
sync() { UV_PROJECT_ENVIRONMENT="$WORK/env-$1" UV_CACHE_DIR="$WORK/cache-$2" "$UV" sync --frozen --no-dev \
  --no-install-project --link-mode=copy --quiet "${@:3}"; }
size_mb() { du -sm "$WORK/env-$1" | cut -f1; }
dists() { ls -d "$WORK"/env-"$1"/lib/python3*/site-packages/*.dist-info | wc -l; }
results=()
for extra in azure google; do
  sync "$extra" base "${BASE[@]}"
  base_mb=$(size_mb "$extra") base_n=$(dists "$extra")
  start=$(date +%s.%N)
  sync "$extra" "$extra" "${BASE[@]}" --extra "$extra"
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  line="{\"extra\": \"$extra\", \"base_mb\": $base_mb, \"base_dists\": $base_n, \"added_mb\": $(( $(size_mb "$extra") - base_mb )), \"added_dists\": $(( $(dists "$extra") - base_n )), \"install_seconds\": $(printf '%.1f' "$seconds")}"
  echo "$line"
  results+=("$line")
done
(IFS=,; echo "[${results[*]}]") > bench/results-extras.json
