#!/usr/bin/env bash
# Install what is missing, install bbvi from this source tree, run a demo fit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
# into BBVI_LIB if set, else the user's R library (kept: library(bbvi)
# works afterwards in any R session of this user)
lib="${BBVI_LIB:-$(Rscript --vanilla -e 'cat(path.expand(Sys.getenv("R_LIBS_USER")))')}"
mkdir -p "$lib"
R CMD INSTALL --no-test-load -l "$lib" . >/dev/null
echo "demo: bbvi installed into $lib"
R_LIBS="$lib${R_LIBS:+:$R_LIBS}" Rscript --vanilla tools/demo.R
