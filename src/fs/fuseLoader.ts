/**
 * Loads fuse-native on a machine that has nothing but `npm ci`.
 *
 * fuse-native's prebuilt binding (prebuilds/linux-x64/node.napi.node) has DT_NEEDED
 * `libfuse.so.2`. A fresh machine has no libfuse2 package, so a plain `require('fuse-native')`
 * fails with "libfuse.so.2: cannot open shared object file". The package ships libfuse 2.9.9 next
 * to the binding (SONAME libfuse.so.2): dlopen-ing that copy with RTLD_GLOBAL first makes the
 * dynamic loader satisfy the binding's DT_NEEDED by SONAME from the already-loaded object.
 * The system's own libfuse.so.2 is preferred when it exists.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type FuseNative from 'fuse-native';
import { loadSharedLibrary } from '../native/libc';
import { FsMountError } from './errors';

export type FuseClass = typeof FuseNative;

/** Where the libfuse.so.2 in use came from. */
export interface LibfuseOrigin {
  source: 'system' | 'bundled';
  path: string;
}

/** The one native entry point we call directly (fuse-native.c NAPI_METHOD fuse_native_unmount). */
export interface FuseNativeBinding {
  /**
   * Decrements ft->mounted and uv_unref()s the mount's uv_async_t, which otherwise keeps the
   * event loop (and the process) alive forever. It does not unmount anything.
   */
  fuse_native_unmount(mnt: string, thread: Buffer | null): void;
}

export interface LoadedFuseNative {
  Fuse: FuseClass;
  binding: FuseNativeBinding;
  libfuse: LibfuseOrigin;
}

let loaded: LoadedFuseNative | undefined;

/** dlopen a libfuse.so.2 (system first, then fuse-native's copy), then require fuse-native. */
export function loadFuseNative(): LoadedFuseNative {
  if (loaded !== undefined) return loaded;
  const libfuse = loadLibfuse();
  // Not a static import on purpose: the binding must be dlopen-ed after libfuse is in place.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Fuse = require('fuse-native') as FuseClass;
  loaded = { Fuse, binding: loadBinding(), libfuse };
  return loaded;
}

/** The path of the libfuse.so fuse-native ships for this platform (it exists for linux-x64). */
export function bundledLibfusePath(): string {
  return require.resolve(`fuse-native/prebuilds/${process.platform}-${process.arch}/libfuse.so`);
}

function loadLibfuse(): LibfuseOrigin {
  // Once any libfuse.so.2 is in the process, dlopen("libfuse.so.2") finds it by SONAME: ask the
  // maps which one it is rather than take that success for a system library.
  const bundledInProcess = bundledIfMapped();
  if (bundledInProcess !== undefined) return { source: 'bundled', path: bundledInProcess };
  try {
    // dlopen by SONAME searches exactly where the binding's DT_NEEDED would be searched.
    loadSharedLibrary('libfuse.so.2');
    return { source: 'system', path: 'libfuse.so.2' };
  } catch {
    // No system libfuse 2: the fresh-machine case.
  }
  let bundled: string;
  try {
    bundled = bundledLibfusePath();
  } catch (err) {
    throw new FsMountError(
      'LIBFUSE_MISSING',
      `libfuse.so.2 is not installed and fuse-native ships no copy for ${process.platform}-${process.arch}: ` +
        'install libfuse 2 (e.g. apt-get install libfuse2)',
      { cause: err },
    );
  }
  try {
    loadSharedLibrary(bundled);
  } catch (err) {
    throw new FsMountError(
      'LIBFUSE_MISSING',
      `cannot load fuse-native's libfuse (${bundled}): ${(err as Error).message}; ` +
        'reinstall with npm ci, or install libfuse 2 (e.g. apt-get install libfuse2)',
      { cause: err },
    );
  }
  return { source: 'bundled', path: bundled };
}

/** The bundled libfuse's path if this process has it mapped already (an earlier load). */
function bundledIfMapped(): string | undefined {
  let bundled: string;
  try {
    bundled = bundledLibfusePath();
  } catch {
    return undefined;
  }
  // One small procfs read at start-up, never on a FUSE mount.
  return readFileSync('/proc/self/maps', 'utf8').includes(` ${bundled}\n`) ? bundled : undefined;
}

function loadBinding(): FuseNativeBinding {
  // The same node-gyp-build fuse-native itself uses, resolved from fuse-native's own location (it is
  // fuse-native's dependency, not ours); require() caches the addon, so this is the very binding
  // index.js holds.
  const fuseNativeMain = require.resolve('fuse-native');
  const nodeGypBuild: unknown = createRequire(fuseNativeMain)('node-gyp-build');
  if (typeof nodeGypBuild !== 'function') {
    throw new Error('fuse-native: node-gyp-build did not export a function');
  }
  const binding: unknown = (nodeGypBuild as (dir: string) => unknown)(path.dirname(fuseNativeMain));
  if (!isFuseNativeBinding(binding)) {
    throw new Error(
      'fuse-native: its binding lacks fuse_native_unmount (expected fuse-native 2.2)',
    );
  }
  return binding;
}

function isFuseNativeBinding(value: unknown): value is FuseNativeBinding {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<FuseNativeBinding>).fuse_native_unmount === 'function'
  );
}
