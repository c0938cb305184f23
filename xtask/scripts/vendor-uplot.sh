#!/usr/bin/env bash
# Vendors uPlot VERSION from the npm registry into the console's assets, checked against
# the registry's published sha512 integrity. Usage: bash xtask/scripts/vendor-uplot.sh 1.6.32
set -euo pipefail
version=${1:?usage: vendor-uplot.sh VERSION}
root=$(cd "$(dirname "$0")/../.." && pwd)
dest="$root/controller/src/daemon/web/console/vendor/uplot-$version"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
integrity=$(curl -fsS "https://registry.npmjs.org/uplot/$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dist"]["integrity"])')
curl -fsS -o "$tmp/uplot.tgz" "https://registry.npmjs.org/uplot/-/uplot-$version.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/uplot.tgz" | base64 -w0)"
[ "$got" = "$integrity" ] || { echo "integrity mismatch: registry $integrity, tarball $got" >&2; exit 1; }
tar -xzf "$tmp/uplot.tgz" -C "$tmp"
mkdir -p "$dest"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$tmp/package/LICENSE" "$dest/"
echo "uPlot $version in $dest ($integrity)"
