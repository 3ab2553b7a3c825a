#!/usr/bin/env node
/** Standalone entry for the operator (tests and the container): `node dist/operator/main-cli.js ...`. */
import { runOperatorCommand } from './main';

runOperatorCommand(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  },
);
