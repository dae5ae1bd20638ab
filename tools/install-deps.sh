#!/usr/bin/env bash
# Install what bbvi needs to build, test and build its vignettes, if missing.
# Debian/Ubuntu: prebuilt r-cran-* packages and pandoc through apt (fast);
# elsewhere: CRAN through install.packages(), pandoc left to the user.
set -euo pipefail

# R package -> Debian package
pkgs="cli testthat knitr rmarkdown loo posterior coda future.apply MASS rstantools bayesplot rstanarm callr codetools DBI RSQLite boot"

missing=$(Rscript --vanilla -e "p <- strsplit('$pkgs', ' ')[[1]]; cat(p[!vapply(p, requireNamespace, logical(1), quietly = TRUE)])")
need_pandoc=0
command -v pandoc >/dev/null 2>&1 || need_pandoc=1
# a C compiler and R's headers (Debian: r-base-dev) to build the package
need_cc=1
cc=$(R CMD config CC 2>/dev/null | awk '{print $1}' || true)
if [ -n "$cc" ] && command -v "$cc" >/dev/null 2>&1 &&
   { [ -f "$(R RHOME)/include/R.h" ] || [ -f /usr/share/R/include/R.h ]; }; then
  need_cc=0
fi

if [ -z "$missing" ] && [ "$need_pandoc" = 0 ] && [ "$need_cc" = 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi
echo "install-deps: missing R packages: ${missing:-none}; pandoc missing: $need_pandoc; compiler missing: $need_cc"

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  debs=""
  for p in $missing; do debs="$debs r-cran-$(echo "$p" | tr 'A-Z' 'a-z')"; done
  [ "$need_pandoc" = 1 ] && debs="$debs pandoc"
  [ "$need_cc" = 1 ] && debs="$debs r-base-dev"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $debs
else
  if [ -n "$missing" ]; then
    Rscript --vanilla -e "install.packages(strsplit('$missing', ' ')[[1]], repos = 'https://cloud.r-project.org')"
  fi
  if [ "$need_cc" = 1 ]; then
    echo "install-deps: please install a C compiler and R's headers (Rtools on Windows, the Xcode command-line tools on macOS)" >&2
    exit 1
  fi
  if [ "$need_pandoc" = 1 ]; then
    echo "install-deps: please install pandoc (needed to build the vignettes)" >&2
    exit 1
  fi
fi
