#!/usr/bin/env bash
# Build bbvi with AddressSanitizer + UndefinedBehaviorSanitizer (gcc) into a
# temporary library and run the testthat suite against that build.
#
#   tools/sanitizers.sh [test-filter]      e.g. tools/sanitizers.sh fuzz
#
# R itself is not built with ASan, so libasan is LD_PRELOADed into the R
# process; leak detection is off (R's own allocations would swamp it; leaks
# are checked with valgrind, see tools/valgrind.sh). UBSan stops at the first
# finding (-fno-sanitize-recover). Flags go through a private Makevars file
# given by R_MAKEVARS_USER, so ~/.R/Makevars is neither read nor changed.
# Exit status: 0 when the build is clean and no sanitizer report names
# bbvi's code, 1 otherwise. Logs stay in $BBVI_SAN_DIR (default: a temp dir).
set -uo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
filter=${1:-}
work=${BBVI_SAN_DIR:-$(mktemp -d /tmp/bbvi-san.XXXXXX)}
mkdir -p "$work/lib"
CC=${CC:-gcc}

cat > "$work/Makevars" <<MK
CC = $CC
CFLAGS = -DBBVI_CHECK_ALLOC -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-sanitize=float-divide-by-zero
LDFLAGS = -fsanitize=address,undefined
MK

# build from a copy, so that no instrumented object file is left in src/
rm -rf "$work/src-copy"; mkdir -p "$work/src-copy"
tar -C "$src" --exclude=.git --exclude='src/*.o' --exclude='src/*.so' -cf - . |
  tar -C "$work/src-copy" -xf -
echo "== building with $(head -1 < <($CC --version)) into $work/lib"
R_MAKEVARS_USER="$work/Makevars" R CMD INSTALL --preclean --no-test-load \
  -l "$work/lib" "$work/src-copy" > "$work/install.log" 2>&1 ||
  { tail -30 "$work/install.log"; echo "sanitizers: build FAILED"; exit 1; }
grep -q -- '-fsanitize=address' "$work/install.log" ||
  { echo "sanitizers: the sanitizer flags were not used"; exit 1; }

asan=$($CC -print-file-name=libasan.so)
ubsan=$($CC -print-file-name=libubsan.so)
export LD_PRELOAD="$asan $ubsan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$work/asan:allow_user_segv_handler=1:detect_odr_violation=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$work/ubsan"
export BBVI_FUZZ_TIMEOUT=60 NOT_CRAN=true R_LIBS="$work/lib:${R_LIBS:-}"

echo "== running the tests${filter:+ matching '$filter'} (log: $work/tests.log)"
Rscript --vanilla tools/run-tests.R tests/testthat "$filter" > "$work/tests.log" 2>&1
rc=$?
unset LD_PRELOAD
tail -5 "$work/tests.log"

reports=$(ls "$work"/asan.* "$work"/ubsan.* 2>/dev/null)
ours=0
for f in $reports; do
  echo "---- $f"; head -60 "$f"
  if grep -qE 'bbvi\.so|/src/[a-z_]+\.c' "$f"; then ours=1; fi
done
# UBSan may also print to stderr
if grep -E 'runtime error:' "$work/tests.log" | grep -q 'src/'; then
  grep -E 'runtime error:' "$work/tests.log"; ours=1
fi
grep -q '^TESTS: .* 0 failed, 0 errors' "$work/tests.log" || { echo "sanitizers: some tests failed or did not run (see $work/tests.log)"; rc=1; }
if [ -z "$reports" ] && [ $rc = 0 ]; then
  echo "sanitizers: CLEAN (no ASan/UBSan reports; tests exited 0)"
  exit 0
fi
[ $rc = 0 ] || echo "sanitizers: the test run exited with status $rc (a sanitizer abort or a test failure)"
[ $ours = 1 ] && echo "sanitizers: FINDINGS in bbvi's code" || echo "sanitizers: no finding in bbvi's code"
exit 1
