/**
 * Outside the initial namespaces the proc connector fails, silently or not; the connector must
 * say so in one line with the cause and the fix. Each case runs a child node process (the .ts
 * sources, see helpers.ts) under unshare(1); the namespaces die with it.
 */
import path from 'node:path';
import { REPO, nodeEvalArgs, run } from './helpers';

interface Outcome {
  ok: boolean;
  code?: string;
  line?: string;
  subscription?: string;
}

/** open() then selfTest(), as the daemon does, in a child process under `unshareArgs`. */
async function openInNamespace(unshareArgs: string[], events?: string[]): Promise<Outcome> {
  const body = `
const { ProcConnector, describeProcConnectorError } = require(${JSON.stringify(path.join(REPO, 'src/netlink/index.ts'))});
(async () => {
  const connector = new ProcConnector(${JSON.stringify(events ? { events } : {})});
  try {
    await connector.open();
    await connector.selfTest();
    console.log(JSON.stringify({ ok: true, subscription: connector.subscription }));
  } catch (err) {
    console.log(JSON.stringify({ ok: false, code: err.code, line: describeProcConnectorError(err) }));
  } finally {
    await connector.close();
  }
})();
`;
  const ran = await run('unshare', [...unshareArgs, process.execPath, ...nodeEvalArgs(body)]);
  expect(ran.stderr).toBe('');
  expect(ran.code).toBe(0);
  return JSON.parse(ran.stdout) as Outcome;
}

const NAMESPACE_LINE =
  /outside the initial pid or user namespace, where the kernel ignores proc connector listeners; run relayfork on the host, or in Docker with --pid=host --net=host/;

describe('in a new pid namespace the kernel ignores the listen: one line names cause and fix', () => {
  test.each([
    ['every kind (legacy listen)', undefined],
    ['a subset (filtered listen)', ['fork', 'exit']],
  ])('%s', async (_name, events) => {
    const outcome = await openInNamespace(['--pid', '--fork', '--mount-proc'], events);
    expect(outcome.ok).toBe(false);
    expect(outcome.code).toBe('ENOEVENTS');
    expect(outcome.line).toMatch(NAMESPACE_LINE);
    expect(outcome.line).not.toContain('\n');
  });
});

test('in a new user namespace too, although events still flow while others listen', async () => {
  // A socket the kernel ignored still receives every event while anyone else on the machine
  // listens; only the missing ACK (or, filtered, the unfiltered events) gives it away.
  const outcome = await openInNamespace(['--user', '--map-root-user'], ['exec', 'exit']);
  expect(outcome).toMatchObject({ ok: false, code: 'ENOEVENTS' });
  expect(outcome.line).toMatch(NAMESPACE_LINE);
});

test('in a new network namespace the connector refuses: ECONNREFUSED, with the fix', async () => {
  const outcome = await openInNamespace(['--net']);
  expect(outcome).toMatchObject({ ok: false, code: 'ECONNREFUSED' });
  expect(outcome.line).toMatch(/send\(\) failed with ECONNREFUSED/);
  expect(outcome.line).toMatch(/not in the initial network namespace.*--pid=host --net=host/);
});

test('the same child in the initial namespaces subscribes and passes the self-test', async () => {
  expect(await openInNamespace([], ['exec', 'exit'])).toEqual({
    ok: true,
    subscription: 'filtered',
  });
});
