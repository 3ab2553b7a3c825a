/**
 * Test-only entry point used until worker/cli/main.ts registers `abacus worker` and
 * `abacus counts`: `node dist/test/support/worker-main.js worker|counts ARGS`.
 */
import { runCountsFromCassandra, runWorkerCommand } from '../../worker/runtime/worker-process';

const [command, ...args] = process.argv.slice(2);
const run = command === 'counts' ? runCountsFromCassandra : runWorkerCommand;
run(args).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
