#!/usr/bin/env bash
# The nightly regression job, runnable locally the same way CI runs it (.github/workflows/nightly.yml).
set -euo pipefail

usage() {
  cat <<'TEXT'
usage: scripts/nightly.sh COMMAND [MATRIX ...]

  releases            print "BASE NEW": the release before the newest timm release, and the newest
  shard K N [MATRIX]  harness ab on shard K of N of each matrix, into $HARNESS_OUT/<matrix>/shard-K
  merge [MATRIX]      merge each matrix's shards (base and new), then harness compare them
  local [MATRIX]      shard 1 of 1, then merge: the whole job on this machine

Each matrix's folder under $HARNESS_OUT is named after its file (matrices/smoke.yaml -> smoke).

environment:
  HARNESS_BASE, HARNESS_NEW  the releases to compare (default: found with pip index versions timm)
  HARNESS_MATRICES           matrices when none is given (default: matrices/smoke.yaml)
  HARNESS_OUT                output folder (default: nightly-out)
  HARNESS_PIP                how to run pip (default: python -m pip)
  HARNESS_CACHE              the harness cache (default: the harness's, ~/.cache/timm-harness)

exit codes: 0 nothing regressed or got slower; 1 something did; 2 bad input or a broken run
TEXT
}

OUT=${HARNESS_OUT:-nightly-out}

releases() {
  if [[ -n "${HARNESS_BASE:-}" && -n "${HARNESS_NEW:-}" ]]; then
    echo "$HARNESS_BASE $HARNESS_NEW"
    return
  fi
  local listed
  # newest first; final releases only (no rc, dev, alpha, beta, post)
  listed=$(${HARNESS_PIP:-python -m pip} index versions timm 2>/dev/null | sed -n 's/^Available versions: //p' \
    | tr ',' '\n' | tr -d ' ' | grep -E '^[0-9]+(\.[0-9]+)*$' | head -n 2) || true
  if [[ $(wc -l <<<"$listed") -lt 2 ]]; then
    echo "nightly.sh: cannot list timm releases (pip index versions timm); set HARNESS_BASE and HARNESS_NEW" >&2
    exit 2
  fi
  echo "$(sed -n 2p <<<"$listed") $(sed -n 1p <<<"$listed")"
}

matrices() {
  if [[ $# -gt 0 ]]; then printf '%s\n' "$@"; else printf '%s\n' ${HARNESS_MATRICES:-matrices/smoke.yaml}; fi
}

# the worse of two exit codes: anything but 0 and 1 is worst
worse() {
  if [[ $1 -gt 1 || $2 -gt 1 ]]; then echo 2; elif [[ $1 -eq 1 || $2 -eq 1 ]]; then echo 1; else echo 0; fi
}

shard() {
  local index=$1 count=$2 base new worst=0 code matrix name
  shift 2
  read -r base new < <(releases)
  echo "nightly: timm $base -> $new, shard $index/$count"
  while read -r matrix; do
    name=$(basename "$matrix" .yaml)
    code=0
    harness ab "$matrix" --base "$base" --new "$new" --shard "$index/$count" --out "$OUT/$name/shard-$index" \
      ${HARNESS_CACHE:+--cache "$HARNESS_CACHE"} || code=$?
    worst=$(worse "$worst" "$code")
  done < <(matrices "$@")
  return "$worst"
}

merge() {
  local worst=0 code matrix name side
  while read -r matrix; do
    name=$(basename "$matrix" .yaml)
    for side in base new; do
      # shellcheck disable=SC2046 # one argument per shard folder
      harness merge "$OUT/$name/$side" $(printf "%s/$side " "$OUT/$name"/shard-*)
    done
    code=0
    harness compare "$OUT/$name/base" "$OUT/$name/new" --out "$OUT/$name" || code=$?
    worst=$(worse "$worst" "$code")
  done < <(matrices "$@")
  return "$worst"
}

case "${1:-}" in
  releases) releases ;;
  shard) [[ $# -ge 3 ]] || { usage >&2; exit 2; }; shift; shard "$@" ;;
  merge) shift; merge "$@" ;;
  local) shift; code=0; shard 1 1 "$@" || code=$?; [[ $code -le 1 ]] || exit "$code"; merge "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
