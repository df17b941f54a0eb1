#!/usr/bin/env bash
# Mutation testing of imsim-model with the simulation as the oracle (README: "Mutation testing").
#
# cargo-mutants changes model/src one small edit at a time (a `<` for a `<=`, a function body for
# a default value) and reruns the oracle configured in .cargo/mutants.toml: the model's own tests
# and sim/tests/mutation_sweep.rs, the default scenario set on seeds 0..30 in a release build,
# which fails on any invariant, on a coverage signal no run reached, on a catalogue variant no
# longer caught, on the runaway guard, or by timing out. A mutant the oracle does
# not notice is a survivor: a behaviour the scenarios, faults, invariants or coverage signals do
# not pin down, unless it is listed in mutants/equivalent.txt as unable to change behaviour.
#
# Usage:
#   scripts/mutants.sh                     # every mutant (about 600, hours on one machine)
#   scripts/mutants.sh --shard 3/20        # mutants i with i % 20 == 3: a uniform sample
#   scripts/mutants.sh --shard 3/20 --shard 4/20   # several shards, one after the other
#   scripts/mutants.sh --seeds 0..100 ...  # a larger band of seeds for the sweep
#   scripts/mutants.sh ... -- -F receiving # anything after `--` goes to cargo mutants
#   scripts/mutants.sh --summarize DIR...  # the verdict over finished mutants.out directories
#   scripts/mutants.sh --skip-judged DIR ...     # only the mutants DIR's lists do not name: go on
#                                          # with a run that was stopped (repeatable)
#   scripts/mutants.sh --rejudge DIR ...   # only DIR's survivors: judge them again after the
#                                          # oracle grew (repeatable)
#
# The whole run splits across machines with `--shard k/n` (k = 0..n-1, one job each; see
# deploy/github/mutants.yml), then `--summarize` over all their mutants.out directories gives
# the one verdict. A shard writes to mutants.out-k-of-n/mutants.out, a whole run to mutants.out.
# Several `--shard`s run one after the other on one machine, sharing the check of the unmutated
# tree, and end with the verdict over all of them. `--skip-judged` writes to a new
# mutants.out-rest-N/mutants.out (an earlier run's lists are never moved or overwritten) and ends
# with the verdict over the skipped directories and the new one; `--rejudge` the same way, with
# the new outcomes overriding the old ones in the verdict. A directory is any with
# cargo-mutants' lists (caught.txt, missed.txt, timeout.txt, unviable.txt), also a copy of the
# lists alone, such as mutants/last-run.
#
# Writes <out>/survivors.txt (the missed mutants not listed as equivalent) and exits 1 when the
# kill rate (caught or timed out, over viable non-equivalent mutants) is below 90%, 2 on bad
# input or when the unmutated tree fails its own tests.
set -euo pipefail
cd "$(dirname "$0")/.."

kill_rate_min_percent=90
equivalent_file=mutants/equivalent.txt

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# The names of the mutants listed as equivalent: each line of the file up to " # ".
equivalent_names() {
  { grep -v '^\s*\(#\|$\)' "$equivalent_file" || true; } | sed 's/ # .*$//; s/[[:space:]]*$//' | sort -u
}

# Each mutant's latest outcome over the lists of the directories given, as "outcome<TAB>name": a
# directory named later overrides an earlier one (a mutant run again after a fix, or a shard run
# again on a newer tree).
latest_outcomes() {
  local dir kind
  for dir in "$@"; do
    for kind in caught missed timeout unviable; do
      if [ -f "$dir/$kind.txt" ]; then sed "s/^/$kind\t/" "$dir/$kind.txt"; fi
    done
  done | awk -F'\t' '{ outcome[$2] = $1 } END { for (m in outcome) print outcome[m] "\t" m }'
}

# Reads the outcome lists of one or more mutants.out directories and prints the verdict.
summarize() {
  local survivors_file=$1
  shift
  local dir
  for dir in "$@"; do
    [ -f "$dir/caught.txt" ] || { echo "not a mutants.out directory (no caught.txt): $dir" >&2; exit 2; }
  done
  local lists
  lists=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$lists'" RETURN
  latest_outcomes "$@" >"$lists/all"
  # Only the mutants this tree has count: a name from an older tree whose code moved or went
  # names nothing now, and a mutant no directory tested is reported, not guessed.
  cargo mutants --package imsim-model --list | sort -u >"$lists/listed"
  cut -f2 "$lists/all" | sort -u >"$lists/tested"
  local kind
  for kind in caught missed timeout unviable; do
    awk -F'\t' -v kind="$kind" '$1 == kind { print $2 }' "$lists/all" | sort -u |
      comm -12 - "$lists/listed" >"$lists/$kind"
  done
  local listed untested gone
  listed=$(wc -l <"$lists/listed")
  untested=$(comm -23 "$lists/listed" "$lists/tested" | wc -l)
  gone=$(comm -13 "$lists/listed" "$lists/tested" | wc -l)
  equivalent_names >"$lists/equivalent"
  comm -23 "$lists/missed" "$lists/equivalent" >"$survivors_file"
  comm -12 "$lists/missed" "$lists/equivalent" >"$lists/missed-equivalent"
  # An entry the oracle now kills is not equivalent after all (or the code moved): say so.
  cat "$lists/caught" "$lists/timeout" | sort -u | comm -12 - "$lists/equivalent" >"$lists/stale"

  local caught missed timeout unviable equivalent survived viable killed
  caught=$(wc -l <"$lists/caught")
  timeout=$(wc -l <"$lists/timeout")
  unviable=$(wc -l <"$lists/unviable")
  missed=$(wc -l <"$lists/missed")
  equivalent=$(wc -l <"$lists/missed-equivalent")
  survived=$(wc -l <"$survivors_file")
  killed=$((caught + timeout))
  viable=$((killed + survived))
  echo "mutants tested: $((caught + timeout + unviable + missed)) of the $listed this tree has" \
    "(in $*)"
  echo "  not tested: $untested; outcomes for names this tree no longer has (ignored): $gone"
  echo "  unviable (did not build): $unviable"
  echo "  equivalent (missed, listed in $equivalent_file): $equivalent"
  echo "  killed: $killed ($caught caught, $timeout timed out)"
  echo "  survived: $survived (listed in $survivors_file)"
  if [ -s "$lists/stale" ]; then
    echo "  listed as equivalent but killed (remove or fix the entry):"
    sed 's/^/    /' "$lists/stale"
  fi
  if [ "$viable" -eq 0 ]; then
    echo "no viable non-equivalent mutant was tested"
    return 0
  fi
  local rate_tenths=$((killed * 1000 / viable))
  echo "kill rate: $killed / $viable = $((rate_tenths / 10)).$((rate_tenths % 10))% (gate: ${kill_rate_min_percent}%)"
  if [ -s "$survivors_file" ]; then
    echo "survivors:"
    sed 's/^/  /' "$survivors_file"
  fi
  [ "$rate_tenths" -ge $((kill_rate_min_percent * 10)) ]
}

shards=()
seeds=""
judged=()
select=skip-judged
while [ $# -gt 0 ]; do
  case "$1" in
    --shard) shards+=("${2:?--shard needs k/n}"); shift 2 ;;
    --seeds) seeds=${2:?--seeds needs A..B}; shift 2 ;;
    --skip-judged | --rejudge)
      mode=${1#--}
      [ ${#judged[@]} -eq 0 ] || [ "$select" = "$mode" ] ||
        { echo "--skip-judged and --rejudge do not mix" >&2; exit 2; }
      select=$mode
      judged+=("${2:?$1 needs a mutants.out directory}")
      shift 2
      ;;
    --summarize)
      shift
      [ $# -gt 0 ] || usage
      summarize mutants.out-survivors.txt "$@"
      exit $?
      ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done

# One run per shard (or one run of every mutant): its output directory, then its cargo-mutants
# arguments.
runs=()
for shard in "${shards[@]}"; do
  [[ "$shard" =~ ^([0-9]+)/([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -lt "${BASH_REMATCH[2]}" ] ||
    { echo "--shard: expected k/n with k < n, got $shard" >&2; exit 2; }
  runs+=("mutants.out-${BASH_REMATCH[1]}-of-${BASH_REMATCH[2]}" "--shard $shard")
done
if [ ${#judged[@]} -gt 0 ]; then
  [ ${#runs[@]} -eq 0 ] || { echo "--skip-judged, --rejudge and --shard do not mix" >&2; exit 2; }
  for dir in "${judged[@]}"; do
    [ -f "$dir/caught.txt" ] || { echo "--$select: no caught.txt in $dir" >&2; exit 2; }
  done
  rest=1
  while [ -e "mutants.out-rest-$rest" ]; do rest=$((rest + 1)); done
  runs=("mutants.out-rest-$rest" "")
fi
[ ${#runs[@]} -gt 0 ] || runs=(. "")
[ -z "$seeds" ] || export IMSIM_MUTANTS_SEEDS="$seeds"

# Each entry of the equivalent list names a mutant by its line and column, which move with edits:
# an entry that no longer names a mutant would let its mutant count as a survivor after hours
# of work. Say so now.
listed=$(mktemp)
# shellcheck disable=SC2064
trap "rm -f '$listed'" EXIT
cargo mutants --package imsim-model --list >"$listed"
moved=$(equivalent_names | grep -vxF -f "$listed" || true)
if [ -n "$moved" ]; then
  echo "$equivalent_file names mutants that cargo mutants no longer lists (the code moved:" >&2
  echo "find each one's new line and column in \`cargo mutants --package imsim-model --list\`):" >&2
  echo "$moved" | sed 's/^/  /' >&2
  exit 2
fi

# With --skip-judged: an exact-name filter for each mutant this tree has that no list names.
# With --rejudge: one for each whose latest outcome in the lists is missed (a directory named
# later overrides an earlier one, as in the verdict) and that is not listed as equivalent.
select_args=()
if [ ${#judged[@]} -gt 0 ]; then
  latest_outcomes "${judged[@]}" >"$listed.judged"
  if [ "$select" = skip-judged ]; then
    cut -f2 "$listed.judged" | sort -u | comm -13 - <(sort -u "$listed") >"$listed.selected"
  else
    awk -F'\t' '$1 == "missed" { print $2 }' "$listed.judged" | sort -u |
      comm -12 - <(sort -u "$listed") | comm -23 - <(equivalent_names) >"$listed.selected"
  fi
  while IFS= read -r name; do
    select_args+=(-F "^$(printf '%s' "$name" | sed 's/[][\\.*^$()+?{}|]/\\&/g')\$")
  done <"$listed.selected"
  rm -f "$listed.judged" "$listed.selected"
  if [ "$select" = skip-judged ]; then
    echo "== $((${#select_args[@]} / 2)) mutants no list in ${judged[*]} names"
  else
    echo "== $((${#select_args[@]} / 2)) survivors of ${judged[*]} to judge again"
  fi
  if [ ${#select_args[@]} -eq 0 ]; then
    summarize mutants.out-survivors.txt "${judged[@]}"
    exit $?
  fi
fi

# cargo-mutants' baseline builds and tests the mutated package alone (imsim-model), so it
# neither proves that the sweep passes unmutated nor times it: do both here first, with the
# oracle's own command. A failing oracle would count every mutant as caught.
mkdir -p target
echo "== the oracle on the unmutated tree"
started=$(date +%s)
if ! nice -n 19 cargo test --profile mutants -p imsim-model -p imsim-sim --lib --test '*' \
  >target/mutants-baseline.log 2>&1; then
  tail -40 target/mutants-baseline.log >&2
  echo "the unmutated tree fails the oracle (target/mutants-baseline.log): fix that first" >&2
  exit 2
fi
echo "passed in $(($(date +%s) - started))s (build and tests; timeout per mutant: see .cargo/mutants.toml)"

# --jobs 1: one mutant at a time; the build inside it uses every core. The copy cargo-mutants
# builds in starts without target/: copying it (--copy-target=true) did not spare rebuilding the
# dependencies (measured: the first mutant still took 8 minutes), only copied gigabytes. On a
# machine of your own, `-- --in-place` mutates this tree and reuses target/ (the check above
# warmed it): the first mutant then takes seconds, not minutes.
jobs_args=(--jobs 1)
case " $* " in *" --in-place "*) jobs_args=() ;; esac # one tree: one job, and cargo-mutants refuses --jobs
saved_cases() { git status --porcelain -- '*.proptest-regressions'; }
cases_before=$(saved_cases)
outs=()
for ((i = 0; i < ${#runs[@]}; i += 2)); do
  out=${runs[i]}
  read -ra shard_args <<<"${runs[i + 1]}"
  [ ${#runs[@]} -eq 2 ] || echo "== mutants of shard ${shard_args[1]} into $out"
  set +e
  nice -n 19 cargo mutants --package imsim-model "${jobs_args[@]}" \
    --output "$out" "${shard_args[@]}" "${select_args[@]}" "$@"
  status=$?
  set -e
  # cargo-mutants: 0 all caught, 2 some missed, 3 some timed out; 4 the baseline failed.
  case "$status" in
    0|2|3) ;;
    4) echo "the unmutated tree fails its own tests: fix that first" >&2; exit 2 ;;
    *) echo "cargo mutants exited $status" >&2; exit 2 ;;
  esac
  outs+=("$out/mutants.out")
  # A property test that fails on a mutant saves its case in a *.proptest-regressions file, and
  # every later mutant replays it first. A saved case that fails on the unmutated tree too (a test
  # bug, seen once in shard 10/20) makes every later mutant look caught: check it now. (With
  # --in-place the files are this tree's; cargo-mutants' own copy keeps them out of sight.) Checked
  # after each shard, before the next one replays the case.
  if [ "$(saved_cases)" != "$cases_before" ]; then
    echo "== proptest saved new cases during the run: the oracle again on the unmutated tree"
    saved_cases | sed 's/^/  /'
    if ! nice -n 19 cargo test --profile mutants -p imsim-model -p imsim-sim --lib --test '*' \
      >target/mutants-recheck.log 2>&1; then
      tail -40 target/mutants-recheck.log >&2
      echo "a case saved during the run fails on the unmutated tree (target/mutants-recheck.log):" >&2
      echo "mutants tested after it may count as caught by it alone. Fix the test, then rerun." >&2
      exit 2
    fi
    cases_before=$(saved_cases)
  fi
done
if [ ${#judged[@]} -gt 0 ]; then
  summarize mutants.out-survivors.txt "${judged[@]}" "${outs[@]}"
elif [ ${#outs[@]} -eq 1 ]; then
  summarize "${outs[0]}/survivors.txt" "${outs[0]}"
else
  summarize mutants.out-survivors.txt "${outs[@]}"
fi
