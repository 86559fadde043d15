#!/usr/bin/env bash
# The nightly job, runnable locally the same way CI runs it (.github/workflows/nightly.yml): timm's main branch
# against the newest release, and on the day of a release that release against the one before, each over every
# shipped matrix (the zoo sweep among them) as a harness ab in shards, merged, compared and grouped into findings.
set -euo pipefail
# every $(...) that can fail says what then: `shard ... || code=$?` runs shard with set -e off

usage() {
  cat <<'TEXT'
usage: scripts/nightly.sh COMMAND [MATRIX ...]

  releases            print "BASE NEW": the release before the newest timm release, and the newest
  plan                print the night's plan as KEY=VALUE lines (CI's $GITHUB_OUTPUT): base, new, main (the commit
                      of timm's main branch, or $HARNESS_TIMM_MAIN) and release_day (true or false)
  shard K N [MATRIX]  harness ab on shard K of N of each matrix, for each comparison of the night, into
                      $HARNESS_OUT/<comparison>/<matrix>/shard-K
  merge [MATRIX]      merge each matrix's shards (base and new), harness compare them, harness findings against
                      the previous night's; then the summary (findings first) and the night's state
  local [MATRIX]      shard 1 of 1, then merge: the whole job on this machine

The comparisons: main (NEW -> timm's main branch) every night; release (BASE -> NEW) on the day of a release:
when HARNESS_RELEASE_DAY says so, else when NEW is not the release the previous night tested ($HARNESS_STATE/newest),
else (no previous night) when PyPI says NEW was uploaded in the last 24 hours. Each matrix's folder is named after
its file (matrices/zoo-sweep.yaml -> zoo-sweep). $HARNESS_OUT/summary.md (also appended to $GITHUB_STEP_SUMMARY)
leads with the findings, each marked new or still open against the previous night's, then those gone.

environment:
  HARNESS_BASE, HARNESS_NEW  the releases (default: found with pip index versions timm)
  HARNESS_TIMM_MAIN          timm's main branch as a source tree or wheel (default: a wheel pip builds from
                             git+$HARNESS_TIMM_GIT at $HARNESS_TIMM_REF, default main; locally, with no network
                             to it, a source tree: e.g. pip download timm --no-deps --no-binary :all:, unpacked)
  HARNESS_TIMM_GIT           timm's repository (default: https://github.com/huggingface/pytorch-image-models)
  HARNESS_RELEASE_DAY        true or false: compare NEW with BASE too, or not (default: found as above)
  HARNESS_MATRICES           matrices when none is given (default: every matrices/*.yaml)
  HARNESS_FULL_SIZE          1: zoo entries at their real configuration (harness ab --full-size; a GPU runner)
  HARNESS_NO_TIMING          1: checks only, no timing rounds (harness ab --no-timing; a CPU runner on the zoo)
  HARNESS_OUT                output folder (default: nightly-out)
  HARNESS_STATE              what the next night compares with: the newest release tested, and each comparison's
                             and matrix's findings.json (default: nightly-state)
  HARNESS_PIP                how to run pip (default: python -m pip)
  HARNESS_PYPI               PyPI's JSON API (default: https://pypi.org/pypi)
  HARNESS_CACHE              the harness cache (default: the harness's, ~/.cache/timm-harness)

exit codes: 0 nothing regressed or got slower; 1 something did; 2 bad input or a broken run
TEXT
}

OUT=${HARNESS_OUT:-nightly-out}
STATE=${HARNESS_STATE:-nightly-state}
TIMM_GIT=${HARNESS_TIMM_GIT:-https://github.com/huggingface/pytorch-image-models}
COMPARISONS=(main release)   # in the order the summary shows them
read -r -a PIP <<<"${HARNESS_PIP:-python -m pip}"

releases() {
  if [[ -n "${HARNESS_BASE:-}" && -n "${HARNESS_NEW:-}" ]]; then
    echo "$HARNESS_BASE $HARNESS_NEW"
    return
  fi
  local listed
  # newest first; final releases only (no rc, dev, alpha, beta, post)
  listed=$("${PIP[@]}" index versions timm 2>/dev/null | sed -n 's/^Available versions: //p' \
    | tr ',' '\n' | tr -d ' ' | grep -E '^[0-9]+(\.[0-9]+)*$' | head -n 2) || true
  if [[ $(wc -l <<<"$listed") -lt 2 ]]; then
    echo "nightly.sh: cannot list timm releases (pip index versions timm); set HARNESS_BASE and HARNESS_NEW" >&2
    exit 2
  fi
  echo "$(sed -n 2p <<<"$listed") $(sed -n 1p <<<"$listed")"
}

# "true" or "false": whether tonight also compares the newest release ($1) with the one before
release_day() {
  case "${HARNESS_RELEASE_DAY:-}" in
    1 | true) echo true ;;
    0 | false) echo false ;;
    '')
      if [[ -f "$STATE/newest" ]]; then
        if [[ $(<"$STATE/newest") != "$1" ]]; then echo true; else echo false; fi
      elif uploaded_lately "$1"; then
        echo true
      else
        echo false
      fi
      ;;
    *)
      echo "nightly.sh: HARNESS_RELEASE_DAY=$HARNESS_RELEASE_DAY; expected true, false or nothing" >&2
      exit 2
      ;;
  esac
}

# whether PyPI says timm $1 was uploaded in the last 24 hours (what it cannot say: no, with a line on stderr)
uploaded_lately() {
  python - "${HARNESS_PYPI:-https://pypi.org/pypi}/timm/$1/json" <<'PY'
import datetime, json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=30) as reply:
        files = json.load(reply)['urls']
    uploaded = min(datetime.datetime.fromisoformat(f['upload_time_iso_8601'].replace('Z', '+00:00')) for f in files)
except Exception as e:  # noqa: BLE001 - unreachable, not JSON, no files: not known to be new
    print(f'nightly.sh: cannot tell when {sys.argv[1]} was uploaded ({e}): taken as not today', file=sys.stderr)
    sys.exit(1)
sys.exit(0 if datetime.datetime.now(datetime.timezone.utc) - uploaded < datetime.timedelta(hours=24) else 1)
PY
}

# the commit of timm's main branch, resolved once a night so that every shard tests the same one
main_commit() {
  if [[ -n "${HARNESS_TIMM_MAIN:-}" ]]; then
    echo "$HARNESS_TIMM_MAIN"
    return
  fi
  local commit
  commit=$(git ls-remote "$TIMM_GIT" refs/heads/main | cut -f1) || true
  if [[ -z "$commit" ]]; then
    echo "nightly.sh: cannot read timm's main branch (git ls-remote $TIMM_GIT); set HARNESS_TIMM_MAIN" >&2
    exit 2
  fi
  echo "$commit"
}

# what harness ab --new takes for timm's main branch: $HARNESS_TIMM_MAIN, else a wheel pip builds from the
# repository at $HARNESS_TIMM_REF (the plan's commit); --timm keys either by its content
timm_main() {
  if [[ -n "${HARNESS_TIMM_MAIN:-}" ]]; then
    echo "$HARNESS_TIMM_MAIN"
    return
  fi
  local wheels
  wheels=$(mktemp -d)
  if ! "${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$wheels" "git+$TIMM_GIT@${HARNESS_TIMM_REF:-main}" >&2; then
    echo "nightly.sh: cannot build timm from git+$TIMM_GIT; set HARNESS_TIMM_MAIN to a timm source tree or wheel" >&2
    exit 2
  fi
  echo "$wheels"/timm-*.whl
}

# "BASE NEW MAIN DAY": the releases, timm's main branch as $1 gives it (main_commit: its commit; timm_main: what
# harness ab --new takes), and whether tonight is a release's day
night() {
  local pair base new main day
  pair=$(releases) || exit 2
  read -r base new <<<"$pair"
  main=$("$1") || exit 2
  day=$(release_day "$new") || exit 2
  echo "$base $new $main $day"
}

plan() {
  local tonight base new main day
  tonight=$(night main_commit) || exit 2
  read -r base new main day <<<"$tonight"
  printf '%s\n' "base=$base" "new=$new" "main=$main" "release_day=$day"
}

# the night's comparisons, one "NAME BASE NEW" line each
comparisons() {
  local tonight base new main day
  tonight=$(night timm_main) || exit 2
  read -r base new main day <<<"$tonight"
  echo "main $new $main"
  if [[ $day == true ]]; then echo "release $base $new"; fi
}

matrices() {
  if [[ $# -gt 0 ]]; then
    printf '%s\n' "$@"
  elif [[ -n "${HARNESS_MATRICES:-}" ]]; then
    tr ' ' '\n' <<<"$HARNESS_MATRICES" | grep -v '^$'
  else
    printf '%s\n' matrices/*.yaml
  fi
}

# the worse of two exit codes: anything but 0 and 1 is worst
worse() {
  if [[ $1 -gt 1 || $2 -gt 1 ]]; then echo 2; elif [[ $1 -eq 1 || $2 -eq 1 ]]; then echo 1; else echo 0; fi
}

shard() {
  local index=$1 count=$2 worst=0 code listed row comparison base new matrix
  local -a rows matrix_list options=()
  shift 2
  listed=$(comparisons) || return 2
  mapfile -t rows <<<"$listed"
  mapfile -t matrix_list < <(matrices "$@")
  if [[ -n "${HARNESS_CACHE:-}" ]]; then options+=(--cache "$HARNESS_CACHE"); fi
  if [[ "${HARNESS_FULL_SIZE:-}" == 1 ]]; then options+=(--full-size); fi
  if [[ "${HARNESS_NO_TIMING:-}" == 1 ]]; then options+=(--no-timing); fi
  for row in "${rows[@]}"; do
    read -r comparison base new <<<"$row"
    echo "nightly: $comparison: timm $base -> $new, shard $index/$count"
    for matrix in "${matrix_list[@]}"; do
      code=0
      harness ab "$matrix" --base "$base" --new "$new" --shard "$index/$count" \
        --out "$OUT/$comparison/$(basename "$matrix" .yaml)/shard-$index" "${options[@]}" </dev/null || code=$?
      worst=$(worse "$worst" "$code")
    done
  done
  return "$worst"
}

merge() {
  local worst=0 code comparison matrix folder side pair base new
  local -a matrix_list
  pair=$(releases) || return 2
  read -r base new <<<"$pair"
  mapfile -t matrix_list < <(matrices "$@")
  for comparison in "${COMPARISONS[@]}"; do
    [[ -d "$OUT/$comparison" ]] || continue
    for matrix in "${matrix_list[@]}"; do
      folder=$OUT/$comparison/$(basename "$matrix" .yaml)
      for side in base new; do
        harness merge "$folder/$side" "$folder"/shard-*/"$side"
      done
      code=0
      # the summary below leads with the findings: no compare.md of its own there
      GITHUB_STEP_SUMMARY='' harness compare "$folder/base" "$folder/new" --out "$folder" || code=$?
      worst=$(worse "$worst" "$code")
      code=0
      findings "$comparison" "$folder" || code=$?
      if [[ $code -gt 1 ]]; then worst=2; fi   # findings alone fail nothing: the compare says what regressed
    done
  done
  summary "${matrix_list[@]}" >"$OUT/summary.md"
  if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then cat "$OUT/summary.md" >>"$GITHUB_STEP_SUMMARY"; fi
  mkdir -p "$STATE"
  echo "$new" >"$STATE/newest"
  return "$worst"
}

# harness findings on a compare folder ($2) of a comparison ($1), against the previous night's findings.json,
# which tonight's then replaces in $HARNESS_STATE
findings() {
  local previous code=0
  local -a against=()
  previous=$STATE/$1/$(basename "$2")/findings.json
  if [[ -f "$previous" ]]; then against=(--previous "$previous"); fi
  harness findings "$2" "${against[@]}" || code=$?
  if [[ $code -gt 1 ]]; then return "$code"; fi
  mkdir -p "$(dirname "$previous")"
  cp "$2/findings.json" "$previous"
}

# summary.md: for each comparison and matrix, its compare's header and summary line, then its findings
summary() {
  local comparison matrix folder
  echo "# Nightly findings"
  for comparison in "${COMPARISONS[@]}"; do
    for matrix in "$@"; do
      folder=$OUT/$comparison/$(basename "$matrix" .yaml)
      [[ -f "$folder/findings.md" ]] || continue
      printf '\n## %s: %s\n\n' "$comparison" "$(basename "$matrix" .yaml)"
      sed -n '1s/^# Compare: //p' "$folder/compare.md"
      echo
      grep -m1 '^\*\*' "$folder/compare.md" || true
      echo
      tail -n +3 "$folder/findings.md" | sed 's/^## /### /'
    done
  done
  printf '\nEach folder of %s holds compare.md (every change) and findings.md.\n' "$OUT"
}

case "${1:-}" in
  releases) releases ;;
  plan) plan ;;
  shard) [[ $# -ge 3 ]] || { usage >&2; exit 2; }; shift; shard "$@" ;;
  merge) shift; merge "$@" ;;
  local) shift; code=0; shard 1 1 "$@" || code=$?; [[ $code -le 1 ]] || exit "$code"; merge "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
