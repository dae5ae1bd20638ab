#!/usr/bin/env bash
# Install what is missing, install bbvi from this source tree, run a demo fit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
lib="${BBVI_LIB:-$(mktemp -d)}"
R CMD INSTALL --no-test-load -l "$lib" . >/dev/null
R_LIBS="$lib${R_LIBS:+:$R_LIBS}" Rscript --vanilla tools/demo.R
