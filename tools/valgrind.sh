#!/usr/bin/env bash
# Run bbvi's C code under valgrind memcheck (leak check on).
#
#   tools/valgrind.sh            smoke script + test files model, fuzz (~15 min)
#   tools/valgrind.sh all        + the whole testthat suite (slow: ~1 h)
#   tools/valgrind.sh 'bbvi|fit' smoke script + the test files matching a regexp
#
# The package is built with -O0 -g and -DBBVI_CHECK_ALLOC (every R_alloc
# buffer gets its own exactly-sized malloc block, so valgrind sees overruns
# that R's vector pools would hide) into a temp library, through a private
# Makevars (R_MAKEVARS_USER; ~/.R/Makevars is not read or changed).
# Why a subset by default: under valgrind R runs 30-50x slower and the full
# suite (30 s natively) takes about an hour; tools/valgrind-smoke.R runs
# every C path once (families x estimators x optimisers x target kinds,
# bounded parameters, the C loop's error exits) and test-model / test-fuzz
# cover the callback and input-checking edge cases.
# A report counts as ours when one of its stack frames is in bbvi.so.
# Exit status 0: no memcheck error and no definitely/indirectly lost leak in
# our code. Logs stay in $BBVI_VG_DIR (default: a temp dir).
set -uo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
what=${1:-model|fuzz}
work=${BBVI_VG_DIR:-$(mktemp -d /tmp/bbvi-vg.XXXXXX)}
mkdir -p "$work/lib"
rm -f "$work"/vg.*.log

cat > "$work/Makevars" <<MK
CFLAGS = -DBBVI_CHECK_ALLOC -g -O0
MK
rm -rf "$work/src-copy"; mkdir -p "$work/src-copy"
tar -C "$src" --exclude=.git --exclude='src/*.o' --exclude='src/*.so' -cf - . |
  tar -C "$work/src-copy" -xf -
echo "== building (-O0 -g, checked allocation) into $work/lib"
R_MAKEVARS_USER="$work/Makevars" R CMD INSTALL --preclean -l "$work/lib" \
  "$work/src-copy" > "$work/install.log" 2>&1 ||
  { tail -30 "$work/install.log"; echo "valgrind: build FAILED"; exit 1; }

vg="valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --track-origins=yes --error-exitcode=99 --log-file=$work/vg.%p.log"
if [ "$what" = all ]; then filter=""; else filter="$what"; fi
cat > "$work/run.R" <<RS
cat("== smoke\n")
source("$src/tools/valgrind-smoke.R")
cat("== tests${filter:+ matching '$filter'}\n")
source("$src/tools/run-tests.R")
run_bbvi_tests("$src/tests/testthat", "$filter")
RS
echo "== running under valgrind (log: $work/run.log, valgrind logs: $work/vg.*.log)"
start=$(date +%s)
BBVI_FUZZ_TIMEOUT=600 NOT_CRAN=true R_LIBS="$work/lib:${R_LIBS:-}" R -d "$vg" --vanilla --no-echo \
  -f "$work/run.R" > "$work/run.log" 2>&1
rc=$?
echo "== R exited with $rc after $(( $(date +%s) - start )) s"
grep -E '^TESTS:|valgrind-smoke' "$work/run.log"

# Split each valgrind log into reports (blocks between blank lines) and keep
# those with a frame in bbvi.so.
ours=$(awk '
  /^==[0-9]+== $/ { if (blk ~ /bbvi\.so/ && blk ~ /(Invalid|uninitialised|Conditional|definitely lost|indirectly lost|Mismatched|overlap|Syscall param)/) print blk "\n"; blk = ""; next }
  { blk = blk "\n" $0 }
  END { if (blk ~ /bbvi\.so/ && blk ~ /(Invalid|uninitialised|Conditional|definitely lost|indirectly lost)/) print blk }
' "$work"/vg.*.log)
for f in "$work"/vg.*.log; do
  echo "-- $(basename "$f"): $(grep -E 'ERROR SUMMARY' "$f" | sed 's/^==[0-9]*== //')"
  grep -E 'definitely lost:|indirectly lost:' "$f" | sed 's/^==[0-9]*== /   /'
done
if [ -n "$ours" ]; then
  echo "$ours" | head -150
  echo "valgrind: FINDINGS in bbvi's code (see above)"
  exit 1
fi
if ! grep -q '^TESTS: .* 0 failed, 0 errors' "$work/run.log"; then
  tail -30 "$work/run.log"
  echo "valgrind: no report in bbvi's code, but the run did not finish cleanly"
  exit 1
fi
echo "valgrind: CLEAN (no memcheck error or leak with a frame in bbvi.so)"
exit 0
