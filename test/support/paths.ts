import fs from 'node:fs';
import path from 'node:path';

/** The project root: the nearest folder above this file holding package.json (also from a build). */
export const ROOT = findRoot(__dirname);

function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (dir === path.dirname(dir)) throw new Error(`no package.json above ${from}`);
  }
}

/** The built CLI, as a user runs it. */
export const CLI = path.join(ROOT, 'dist', 'cli.js');

/** test/fixtures/register-ts.cjs: lets a child node require the .ts sources under test. */
export const REGISTER_TS = path.join(ROOT, 'test', 'fixtures', 'register-ts.cjs');

/**
 * `node -e` arguments running `body` (JavaScript) after requiring REGISTER_TS, so that child
 * processes run the code under test rather than a possibly stale dist/.
 */
export function nodeEvalArgs(body: string): string[] {
  return ['-e', `require(${JSON.stringify(REGISTER_TS)});\n${body}`];
}

/** Fails loudly where the tests cannot mean anything. */
export function requireRoot(why = 'FUSE, the proc connector, signals to other users'): void {
  if (process.geteuid?.() !== 0) throw new Error(`these tests need root (${why})`);
}

/** Fails loudly when dist/ is missing (the tests that run the CLI as a user does). */
export function requireBuild(): void {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
}
