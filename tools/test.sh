#!/usr/bin/env bash
# Install what is missing, build the tarball and run R CMD check on it
# (tests and vignettes included). Exits non-zero on any error, warning or
# test failure; ends with testthat's totals as "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh || exit 1
out=$(mktemp -d)
src=$(pwd)
(cd "$out" && R CMD build "$src") || { echo "R CMD build failed"; echo "0 passed, 1 failed"; exit 1; }
tarball=$(ls "$out"/bbvi_*.tar.gz)
(cd "$out" && _R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual "$tarball")
rc=$?
log="$out/bbvi.Rcheck/00check.log"
status=$(grep -E '^Status:' "$log" 2>/dev/null | tail -1)
echo "R CMD check: ${status:-no status (rc $rc)}"
# testthat's closing line, from the tests' output (.Rout or .Rout.fail)
rout=$(ls "$out"/bbvi.Rcheck/tests/testthat.Rout* 2>/dev/null | head -1)
line=$(grep -E '\[ FAIL [0-9]+ \| WARN [0-9]+ \| SKIP [0-9]+ \| PASS [0-9]+ \]' "$rout" 2>/dev/null | tail -1)
pass=$(echo "$line" | sed -nE 's/.*PASS ([0-9]+).*/\1/p')
fail=$(echo "$line" | sed -nE 's/.*FAIL ([0-9]+).*/\1/p')
skip=$(echo "$line" | sed -nE 's/.*SKIP ([0-9]+).*/\1/p')
if [ -n "$rout" ] && [ "$rc" != 0 ]; then tail -40 "$rout"; fi
bad=0
[ "$rc" = 0 ] || bad=1
echo "$status" | grep -qE 'ERROR|WARNING' && bad=1
[ -n "$pass" ] || { bad=1; pass=0; fail=${fail:-1}; }
[ "${fail:-0}" = 0 ] || bad=1
echo "${pass} passed, ${fail:-0} failed, ${skip:-0} skipped"
exit $bad
