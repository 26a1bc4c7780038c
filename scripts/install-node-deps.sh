#!/usr/bin/env bash
# Installs the npm package the README's Node.js example needs (`zeromq`) into .node/ (gitignored),
# for tests/test_node_example.py. Without node/npm it says so and exits 0 (the test skips).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install-node-deps: node/npm not found; the Node.js example test will be skipped."
    exit 0
fi
if [[ -f .node/node_modules/zeromq/package.json ]]; then
    echo "install-node-deps: zeromq present in .node/."
    exit 0
fi
mkdir -p .node
npm install --prefix .node --no-save --no-audit --no-fund --loglevel=error "zeromq@^6"
