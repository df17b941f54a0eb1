#!/usr/bin/env bash
# Regenerates the README's known-bug catalogue table: for each variant of `imsim variants` (or
# those named), the seeds its scenario needs until the first run that breaks the catalogue's
# invariant (a run failing only otherwise, or panicking, does not count), counted from each of
# several starting seeds (0, 1000, 2000, 3000, 4000), their median, and the size of the first
# such failure (from start 0) after `imsim shrink`. Needs jq and a release build:
#   cargo build --release && scripts/detection-table.sh [VARIANT…]
set -euo pipefail
imsim=${IMSIM:-target/release/imsim}
starts=(0 1000 2000 3000 4000)
chunk=10
shrunk=$(mktemp -d)
trap 'rm -rf "$shrunk"' EXIT
echo "| variant | scenario | invariant | seeds to first detection (median) | per start seed | shrunk failure |"
echo "|---|---|---|---|---|---|"
"$imsim" variants --format json | while read -r line; do
  name=$(jq -r .name <<<"$line")
  if [[ $# -gt 0 && ! " $* " =~ " $name " ]]; then continue; fi
  scenario=$(jq -r .scenario <<<"$line")
  invariant=$(jq -r .invariant <<<"$line")
  counts=()
  size=""
  for start in "${starts[@]}"; do
    found=""
    for ((from = start; from < start + 1000; from += chunk)); do
      first=$("$imsim" run "$scenario" --variant "$name" --seeds "$from..$((from + chunk))" \
        --check-determinism-every 0 --format json 2>/dev/null \
        | jq -r --arg inv "$invariant" \
          'select(.seed != null and any(.violations[]?; .name == $inv)) | .seed' \
        | head -n 1 || true)
      if [[ -n "$first" ]]; then found=$((first - start + 1)); break; fi
    done
    counts+=("${found:->1000}")
    if [[ $start == 0 && -n "$found" ]]; then
      size=$("$imsim" shrink "$scenario" --seed "$((found - 1))" --variant "$name" \
        --invariant "$invariant" --out "$shrunk/$name.toml" 2>&1 | sed -n 's/^after: *//p' || true)
    fi
  done
  median=$(printf '%s\n' "${counts[@]}" | sort -n | sed -n 3p)
  echo "| \`$name\` | $scenario | $invariant | $median | ${counts[*]} | ${size:-} |"
done
