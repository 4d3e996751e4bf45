/**
 * The test-support module itself, where it could mislead: a wait that times out must say what it
 * waited for, and cleanup must leave no child and no temp dir behind. No root needed (the `unit`
 * project); mounts are in mounts.test.ts.
 */
import fs from 'node:fs';
import {
  TempDir,
  cleanupAll,
  removeAllTempDirs,
  run,
  spawnChild,
  stopAllChildren,
  waitFor,
  waitForStill,
} from '.';

/** Whether `pid` names a task that has not been reaped (a zombie counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

afterAll(cleanupAll);

describe('waitForStill', () => {
  test('resolves once the value has stayed the same that long, to when it last changed', async () => {
    let value = 0;
    const changes = setInterval(() => value++, 10);
    setTimeout(() => clearInterval(changes), 100);
    const began = await waitForStill('the value', () => value, 150, 5000);
    const settledAt = Date.now();
    expect(value).toBeGreaterThan(2); // it did change before it settled
    expect(settledAt - began).toBeGreaterThanOrEqual(150);
  });

  test('a value that never settles times out, naming it and the spell', async () => {
    let value = 0;
    await expect(waitForStill('the counter', () => value++, 100, 300)).rejects.toThrow(
      'timed out after 300 ms waiting for the counter to stay still for 100 ms',
    );
  });
});

describe('waitFor', () => {
  test('resolves to the first answer that is not undefined, null or false', async () => {
    let calls = 0;
    const value = await waitFor('the third call', () => (++calls >= 3 ? { calls } : undefined));
    expect(value).toEqual({ calls: 3 });
    expect(await waitFor('zero', () => 0)).toBe(0); // 0 and '' are answers
  });

  test('a timeout names what was awaited, and the bound', async () => {
    await expect(waitFor('the pigs to fly', () => false, 50)).rejects.toThrow(
      'timed out after 50 ms waiting for the pigs to fly',
    );
  });

  test('a description given as a function is asked at the timeout, with what was seen', async () => {
    let seen = 0;
    await expect(
      waitFor(
        () => `ten lines (got ${seen})`,
        () => ++seen >= 1000,
        50,
      ),
    ).rejects.toThrow(/waiting for ten lines \(got [1-9]\d*\)/);
  });

  test('a probe that throws ends the wait with its error', async () => {
    await expect(
      waitFor('anything', () => {
        throw new Error('the child exited first');
      }),
    ).rejects.toThrow('the child exited first');
  });
});

describe('children', () => {
  test('run collects the output and the exit code, and does not throw on failure', async () => {
    const ran = await run('sh', ['-c', 'echo out; echo err >&2; exit 3']);
    expect(ran).toEqual({ code: 3, signal: null, stdout: 'out\n', stderr: 'err\n' });
  });

  test('waitForLine fails when the child exits first, with its output', async () => {
    const child = spawnChild('sh', ['-c', 'echo bye']);
    await expect(child.waitForLine(/^never$/, 'stdout')).rejects.toThrow(
      /exited before .*\n.*bye/s,
    );
  });

  test('stopAllChildren ends every child still running, by pid and by group', async () => {
    const plain = spawnChild('sleep', ['1000']);
    // A shell whose background sleep would outlive it: its group goes whole.
    const group = spawnChild('sh', ['-c', 'sleep 1000 & echo $!; wait'], { group: true });
    const background = Number(await group.waitForLine(/^\d+$/, 'stdout'));
    expect([alive(plain.pid), alive(group.pid), alive(background)]).toEqual([true, true, true]);

    await stopAllChildren();
    expect(plain.running).toBe(false);
    expect(group.running).toBe(false);
    await waitFor(`pid ${background} to go`, () => !alive(background));
  });

  test('a group is ended even when its leader has exited', async () => {
    const group = spawnChild('sh', ['-c', '(trap "" HUP; sleep 1000) & echo $!'], { group: true });
    const orphan = Number(await group.waitForLine(/^\d+$/, 'stdout'));
    await group.exited;
    expect(alive(orphan)).toBe(true);
    await stopAllChildren();
    await waitFor(`pid ${orphan} to go`, () => !alive(orphan));
  });
});

describe('TempDir', () => {
  test('cleanup removes it with everything in it', async () => {
    const tmp = new TempDir('relayfork-support-');
    fs.mkdirSync(tmp.join('a', 'b'), { recursive: true });
    fs.writeFileSync(tmp.join('a', 'b', 'file'), 'x');
    await tmp.cleanup();
    expect(fs.existsSync(tmp.path)).toBe(false);
    await tmp.cleanup(); // twice is fine
  });

  test('removeAllTempDirs removes every one not removed yet', async () => {
    const dirs = [new TempDir('relayfork-support-'), new TempDir('relayfork-support-')];
    await removeAllTempDirs();
    expect(dirs.map((d) => fs.existsSync(d.path))).toEqual([false, false]);
  });
});
