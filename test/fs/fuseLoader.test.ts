/**
 * fuse-native loads with `npm ci` alone. This machine has no system libfuse.so.2 (the fresh-machine
 * case); on one that has it, the system's copy is used instead.
 */
import { access } from 'node:fs/promises';
import path from 'node:path';
import { bundledLibfusePath, loadFuseNative } from '../../src/fs/fuseLoader';
import { REPO, run } from './helpers';

const REGISTER_TS = path.join(__dirname, '../fixtures/register-ts.cjs');

async function systemHasLibfuse2(): Promise<boolean> {
  const ldconfig = await run('ldconfig', ['-p']);
  expect(ldconfig.code).toBe(0);
  return /\blibfuse\.so\.2\b/.test(ldconfig.stdout);
}

/** Run `script` in a fresh node (TypeScript sources loadable) and return its stdout and stderr. */
function freshNode(script: string): ReturnType<typeof run> {
  return run(process.execPath, ['-r', REGISTER_TS, '-e', script]);
}

test('fuse-native ships a libfuse.so for this platform', async () => {
  await expect(access(bundledLibfusePath())).resolves.toBeUndefined();
});

test('without the loader, a fresh process cannot load fuse-native when the system lacks libfuse.so.2', async () => {
  const plain = await freshNode("require('fuse-native'); console.log('loaded')");
  if (await systemHasLibfuse2()) {
    expect(plain.stdout.trim()).toBe('loaded');
  } else {
    expect(plain.code).not.toBe(0);
    expect(plain.stderr).toMatch(/libfuse\.so\.2: cannot open shared object file/);
  }
});

test('with the loader, a fresh process loads fuse-native and its binding', async () => {
  const loaderPath = JSON.stringify(path.join(REPO, 'src/fs/fuseLoader.ts'));
  const result = await freshNode(
    `const { loadFuseNative } = require(${loaderPath});` +
      'const n = loadFuseNative();' +
      'console.log(JSON.stringify({ source: n.libfuse.source, fuse: typeof n.Fuse,' +
      ' unmount: typeof n.binding.fuse_native_unmount }));',
  );
  expect(result.stderr).toBe('');
  expect(JSON.parse(result.stdout)).toEqual({
    source: (await systemHasLibfuse2()) ? 'system' : 'bundled',
    fuse: 'function',
    unmount: 'function',
  });
});

test('in this process too, and loading twice returns the same module', async () => {
  const first = loadFuseNative();
  expect(first.libfuse.source).toBe((await systemHasLibfuse2()) ? 'system' : 'bundled');
  if (first.libfuse.source === 'bundled') expect(first.libfuse.path).toBe(bundledLibfusePath());
  expect(loadFuseNative()).toBe(first);
});
