#!/usr/bin/env bash
# Update the dashboard's vendored chart library: bash scripts/vendor_uplot.sh 1.6.32
# Fetches the uplot package from the npm registry (npm pack) and copies its built files
# and licence into service/static/vendor/uplot/. Review the diff, then commit.
set -euo pipefail
version=${1:?usage: vendor_uplot.sh VERSION}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
(cd "$work" && npm pack "uplot@$version" >/dev/null && tar xzf "uplot-$version.tgz")
dest=service/static/vendor/uplot
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" \
   "$work/package/LICENSE" "$dest/"
echo "uplot $version (npm), dist/uPlot.iife.min.js + dist/uPlot.min.css; update with scripts/vendor_uplot.sh VERSION" > "$dest/VERSION"
rm -rf "$work"
echo "vendored uplot $version into $dest"
