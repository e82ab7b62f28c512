#!/usr/bin/env node
/**
 * Puts `zcswitch` into this checkout's node_modules/.bin (run by `npm ci`
 * through the prepare script), so `npx zcswitch ...` runs this checkout's
 * build at once.
 *
 * Why not a "bin" field in package.json: npm 11's npx, asked for a command
 * that the project's own package.json declares as a bin, installs the
 * project into its npx cache (a link to the checkout) and runs the
 * checkout's install and prepare scripts again: a silent rebuild of the
 * native addon and the TypeScript on the first call, 15-25 s, in the very
 * bindings/build a running switch loaded. Without the field npx looks in
 * node_modules/.bin first, and finds this shim.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const binDir = path.join(root, 'node_modules', '.bin');
const shim = path.join(binDir, 'zcswitch');
// A shell shim rather than a link to dist/src/cli/main.js: it needs no
// executable bit on a file tsc rewrites. `cd` resolves the checkout from the
// path it was called by (logically), so a node_modules that is itself a link
// still finds this checkout's dist/.
const text = `#!/bin/sh
# Written by scripts/link-bin.js (npm ci): runs this checkout's zcswitch.
root=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
exec node "$root/dist/src/cli/main.js" "$@"
`;
fs.mkdirSync(binDir, { recursive: true });
fs.rmSync(shim, { force: true });
fs.writeFileSync(shim, text, { mode: 0o755 });
