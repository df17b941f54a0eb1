#!/usr/bin/env bash
# Regenerates tests/fixtures/shrunk/<variant>.toml, the 1-minimal witnesses `tests/minimal.rs`
# checks: for each variant of `imsim variants`, the first few seeds of its scenario (from 0)
# that violate the catalogue's invariant, shrunk while that invariant keeps failing, and the
# smallest witness run kept (a shrink is a local search: another seed's failure often shrinks further). Needs jq and
# a release build:
#   cargo build --release && scripts/shrunk-fixtures.sh [VARIANT…]
set -euo pipefail
imsim=${IMSIM:-target/release/imsim}
out=tests/fixtures/shrunk
tries=${TRIES:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
"$imsim" variants --format json | while read -r line; do
  name=$(jq -r .name <<<"$line")
  if [[ $# -gt 0 && ! " $* " =~ " $name " ]]; then continue; fi
  scenario=$(jq -r .scenario <<<"$line")
  invariant=$(jq -r .invariant <<<"$line")
  seeds=()
  for ((from = 0; from < 1000 && ${#seeds[@]} < tries; from += 10)); do
    while read -r seed; do
      if [[ -n "$seed" && ${#seeds[@]} -lt $tries ]]; then seeds+=("$seed"); fi
    done < <("$imsim" run "$scenario" --variant "$name" --seeds "$from..$((from + 10))" \
      --check-determinism-every 0 --format json 2>/dev/null \
      | jq -r --arg inv "$invariant" \
        'select(.seed != null and any(.violations[]?; .name == $inv)) | .seed')
  done
  if [[ ${#seeds[@]} -eq 0 ]]; then
    echo "$name: not caught on $scenario in 1000 seeds" >&2
    exit 1
  fi
  best="" best_events=""
  for seed in "${seeds[@]}"; do
    size=$("$imsim" shrink "$scenario" --seed "$seed" --variant "$name" --invariant "$invariant" \
      --force --note "1-minimal witness of $name ($invariant), checked by tests/minimal.rs" \
      --out "$work/$name-$seed.toml" 2>&1 | sed -n 's/^after: *//p')
    events=${size##*events }
    if [[ -z "$best" || $events -lt $best_events ]]; then
      best=$seed best_events=$events best_size=$size
    fi
  done
  cp "$work/$name-$best.toml" "$out/$name.toml"
  echo "$name: $scenario seeds ${seeds[*]}: kept seed $best -> $best_size"
done
