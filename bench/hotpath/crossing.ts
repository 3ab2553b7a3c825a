/**
 * The cost of crossing into the Rust kernel (native/hotpath) once: countBatch with an empty
 * batch, which still converts its five arguments and returns three typed arrays and an
 * object — everything a micro-batch pays per call except the counting.
 *
 *   node dist/bench/hotpath/crossing.js [--calls 200000]
 */
import { parseArgs } from 'node:util';
import { loadRustKernel } from './rust-kernel';

const { values } = parseArgs({ options: { calls: { type: 'string', default: '200000' } } });
const calls = Number(values.calls);
const kernel = loadRustKernel({ level: 'account', granularities: [0, 1, 2], dedupRetentionSec: 604_800, uniquesRetentionSec: 604_800 }, false, false);
const buf = Buffer.alloc(4096);
const starts = new Int32Array(4096);
const ends = new Int32Array(4096);
const ingest = new Uint32Array(4096);
for (let i = 0; i < 10_000; i++) kernel.countBatch(buf, starts, ends, ingest, 0);
const c0 = process.cpuUsage();
let sink = 0;
for (let i = 0; i < calls; i++) sink += kernel.countBatch(buf, starts, ends, ingest, 0).index.length;
const c = process.cpuUsage(c0);
const ns = ((c.user + c.system) * 1e3) / calls;
console.log(JSON.stringify({ calls, nsPerCall: Math.round(ns), nsPerEventAt4096: Math.round((ns / 4096) * 100) / 100, sink }));
