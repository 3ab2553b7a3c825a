#!/usr/bin/env node
'use strict';
// Entry point for `npx abacus`: runs the compiled CLI (built by `npm ci` via the prepare script).
require('../dist/worker/cli/main.js').main(process.argv.slice(2));
