/**
 * Temp dirs that tests remove whatever a failed test left in them, mounts included: detached
 * (mounts.ts), never recursed into while mounted.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { detachMountsBelow } from './mounts';

const live = new Set<TempDir>();

/** A fresh directory in os.tmpdir() (mode 0700); cleanup() or removeAllTempDirs() removes it. */
export class TempDir {
  readonly path: string;

  constructor(prefix = 'relayfork-test-') {
    this.path = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    live.add(this);
  }

  join(...parts: string[]): string {
    return path.join(this.path, ...parts);
  }

  /** Detach every mount left at or below it, then remove it. Safe to call twice. */
  async cleanup(): Promise<void> {
    live.delete(this);
    await detachMountsBelow(this.path);
    await fs.promises.rm(this.path, { recursive: true, force: true });
  }
}

/** Remove every TempDir of this process (of this test file, under jest) not removed yet. */
export async function removeAllTempDirs(): Promise<void> {
  for (const dir of [...live]) await dir.cleanup();
}
