/**
 * C fixtures compiled with the machine's cc, once per output dir: asking twice (or concurrently)
 * for the same program in the same dir compiles it once.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from './paths';

const execFileAsync = promisify(execFile);
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const compiled = new Map<string, Promise<string>>();

/**
 * Compile `source` into `dir` with `cc -O2 -Wall -pthread ...flags`; resolves to the program's
 * path, `dir`/<basename without .c>. `source` is a name in test/fixtures ('forker') or a path
 * relative to the project root ('bench/loadgen.c', 'test/fs/fixtures/fsio.c').
 */
export function compileFixture(
  source: string,
  dir: string,
  flags: readonly string[] = [],
): Promise<string> {
  const file = source.endsWith('.c')
    ? path.resolve(ROOT, source)
    : path.join(FIXTURES, `${source}.c`);
  const out = path.join(dir, path.basename(file, '.c'));
  const key = `${out}\0${flags.join('\0')}`;
  let program = compiled.get(key);
  if (program === undefined) {
    program = execFileAsync('cc', ['-O2', '-Wall', '-pthread', '-o', out, file, ...flags]).then(
      () => out,
      (err: Error & { stderr?: string }) => {
        compiled.delete(key);
        throw new Error(`cc ${file} failed: ${err.stderr ?? err.message}`, { cause: err });
      },
    );
    compiled.set(key, program);
  }
  return program;
}

/** Runs test/fixtures/forker and returns the forks it made as [parent, child] pairs. */
export async function runForker(
  forker: string,
  width: number,
  depth: number,
): Promise<Array<[number, number]>> {
  const { stdout } = await execFileAsync(forker, [String(width), String(depth)]);
  return stdout
    .trim()
    .split('\n')
    .map((l) => l.split(' '))
    .map(([, p, c]) => [Number(p), Number(c)] as [number, number]);
}
