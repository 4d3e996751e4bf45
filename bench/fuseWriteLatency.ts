/**
 * Benchmark: the latency of one write(2) to a mounted AttributeFs file named `processes` whose
 * store() does nothing (the FUSE round trip alone: kernel -> server -> kernel).
 *
 * A child process (so that the writer never shares an event loop with the server) opens the file
 * once and makes WARMUP + WRITES write(2)s of "123\n", timing each with a monotonic clock; the
 * report is p50/p90/p99/max in microseconds. The machine is shared: compare runs made side by side.
 *
 * Run with: npm run bench:fuse (as root). WRITES (default 10000) and WARMUP (default 1000) may be set.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { AttributeFs } from '../src/fs/attributeFs';
import { TempDir } from '../test/support';

const WRITES = Number(process.env.WRITES ?? 10000);
const WARMUP = Number(process.env.WARMUP ?? 1000);

const WRITER = `
const fs = require('node:fs');
const [file, warmup, writes] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const fd = fs.openSync(file, 'w');
const data = Buffer.from('123\\n');
const ns = new Float64Array(writes);
for (let i = 0; i < warmup + writes; i++) {
  const t0 = process.hrtime.bigint();
  if (fs.writeSync(fd, data) !== 4) throw new Error('short write');
  const t1 = process.hrtime.bigint();
  if (i >= warmup) ns[i - warmup] = Number(t1 - t0);
}
fs.closeSync(fd);
ns.sort();
const q = (p) => ns[Math.min(ns.length - 1, Math.floor(p * ns.length))] / 1000;
console.log(JSON.stringify({ writes, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: ns[ns.length - 1] / 1000 }));
`;

async function main(): Promise<void> {
  const tmp = new TempDir('relayfork-bench-');
  const dir = tmp.path;
  let stores = 0;
  const tree = new AttributeFs(dir, {
    processes: {
      show: () => '\n',
      store: () => {
        stores++;
        return 'accepted';
      },
    },
  });
  try {
    await tree.mount();
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        ['-e', WRITER, path.join(dir, 'processes'), String(WARMUP), String(WRITES)],
        (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout),
      );
    });
    const result = JSON.parse(out) as Record<string, number>;
    console.log(
      `write(2) to processes, ${result.writes} writes (+${WARMUP} warm-up), stores seen ${stores}: ` +
        `p50 ${result.p50.toFixed(1)} us, p90 ${result.p90.toFixed(1)} us, ` +
        `p99 ${result.p99.toFixed(1)} us, max ${result.max.toFixed(1)} us`,
    );
  } finally {
    await tree.close();
    await tmp.cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
