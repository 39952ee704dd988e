#!/usr/bin/env bash
# Build mtl studio's editor bundle from a clean checkout, in one command: install the pinned
# node packages (npm ci: the only step that needs the network), then bundle src/editor.js and
# CodeMirror 6 with esbuild into mtl_dsl/tools/studio/static/editor.js (window.MtlEditor),
# which is committed, so users of `mtl studio` need no node (docs/studio.md).
#
#   bash editors/studio-web/build.sh [--no-install] [OUT_FILE]   # OUT_FILE: default the committed bundle
#
# --no-install reuses the node_modules an earlier `npm ci` left; OUT_FILE elsewhere is how
# tests/test_studio_bundle.py checks that the committed bundle is the build of these sources.
set -euo pipefail

install=1
if [ "${1:-}" = "--no-install" ]; then
    install=0
    shift
fi
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../mtl_dsl/tools/studio/static/editor.js}"
cd "$here"

if [ "$install" = 1 ]; then
    # --ignore-scripts: esbuild's binary comes as an optional package; nothing needs a script
    npm ci --ignore-scripts --no-audit --no-fund
fi
npx --no-install esbuild src/editor.js --bundle --minify --format=iife --global-name=MtlEditor \
    --target=es2020 --legal-comments=none --charset=utf8 --log-level=warning --outfile="$out"
echo "built $out ($(wc -c < "$out") bytes)"
