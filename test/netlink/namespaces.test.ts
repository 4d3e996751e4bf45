/**
 * Outside the initial namespaces the proc connector fails, silently or not; the connector must
 * say so in one line with the cause and the fix. Each case runs a child node process (the .ts
 * sources, see helpers.ts) under unshare(1); the namespaces die with it.
 */
import path from 'node:path';
import { ProcConnector } from '../../src/netlink';
import { ROOT as REPO, nodeEvalArgs, run } from '../support';

interface Outcome {
  ok: boolean;
  code?: string;
  line?: string;
  subscription?: string;
}

interface ChildOptions {
  /**
   * Hand the receive worker's datagrams to the connector this many ms late, one per batch, in
   * order: the main thread of a loaded machine (the CI container), where a child's 'close' is
   * handled before the worker's batch holding that child's later events.
   */
  lagMs?: number;
  /**
   * Treat the ACK-confirmed proc_input LISTEN as answered even if the kernel stayed silent, so
   * that the filter check with our own children (confirmFilter) is all that stands between an
   * ignored socket and a confirmed subscription.
   */
  skipProcInputAck?: boolean;
}

/** open() then selfTest(), as the daemon does, in a child process under `unshareArgs`. */
async function openInNamespace(
  unshareArgs: string[],
  events?: string[],
  options: ChildOptions = {},
): Promise<Outcome> {
  const body = `
const { ProcConnector, describeProcConnectorError } = require(${JSON.stringify(path.join(REPO, 'src/netlink/index.ts'))});
const options = ${JSON.stringify(options)};
(async () => {
  const connector = new ProcConnector(${JSON.stringify(events ? { events } : {})});
  if (options.lagMs) {
    const deliver = connector.onWorkerMessage.bind(connector);
    let last = 0;
    connector.onWorkerMessage = (msg) => {
      if (msg.type !== 'batch') return deliver(msg);
      // Each datagram (framed [u32 LE length][bytes], padded to 4: receiveWorker.ts) in a batch
      // and a timer callback of its own (microtasks run between them), due no earlier than the
      // one before it, so in order. No spacing between them: an ignored socket hears every
      // event on the machine, a storm elsewhere included. Unref'd: close() need not wait.
      const view = new DataView(msg.buffer);
      last = Math.max(Date.now() + options.lagMs, last);
      for (let off = 0; off + 4 <= view.byteLength; ) {
        const len = view.getUint32(off, true);
        const frame = msg.buffer.slice(off, off + 4 + len);
        off += 4 + ((len + 3) & ~3);
        setTimeout(() => deliver({ type: 'batch', buffer: frame }), last - Date.now()).unref();
      }
    };
  }
  if (options.skipProcInputAck) {
    const listenAcked = connector.handshake.listenAcked.bind(connector.handshake);
    connector.handshake.listenAcked = async (eventType) => {
      if (eventType === undefined) return listenAcked(eventType);
      await listenAcked(eventType);
      return true;
    };
  }
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
  /outside the initial (pid or )?user namespace, where the kernel (refuses or )?ignores proc connector listeners; run relayfork on the host, or in Docker with --pid=host --net=host/;

/**
 * What this kernel does with a listener in a child user namespace, asked with a bare bind there:
 * it refuses the bind (EPERM: this machine kind's Linux 6.18.44 builds from 2026-12) or takes it
 * and ignores the listen (ENOEVENTS: the builds before, and the kernels the patch's users ran).
 * Either way the connector must give the namespace line; the code says which the kernel did.
 */
async function userNamespaceOutcomeCode(): Promise<'EPERM' | 'ENOEVENTS'> {
  const body = `
const { openProcConnectorSocket } = require(${JSON.stringify(path.join(REPO, 'src/netlink/socket.ts'))});
const { close } = require(${JSON.stringify(path.join(REPO, 'src/native/libc.ts'))});
try {
  close(openProcConnectorSocket(1 << 20).fd);
  console.log('bound');
} catch (err) {
  console.log(err.code);
}
`;
  const ran = await run('unshare', [
    '--user',
    '--map-root-user',
    process.execPath,
    ...nodeEvalArgs(body),
  ]);
  const answer = ran.stdout.trim();
  if (answer === 'bound') return 'ENOEVENTS';
  if (answer === 'EPERM') return 'EPERM';
  throw new Error(`a bind in a user namespace said ${JSON.stringify(answer)}: ${ran.stderr}`);
}

let userNamespaceCode: 'EPERM' | 'ENOEVENTS' | undefined;
beforeAll(async () => {
  userNamespaceCode = await userNamespaceOutcomeCode();
});

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

test('in a new user namespace too, whether the kernel refuses the bind or ignores the listen', async () => {
  // Where the kernel takes the bind, a socket it ignored still receives every event while anyone
  // else on the machine listens; only the missing ACK (or, filtered, the unfiltered events) gives
  // it away. Where it refuses the bind, EPERM must not read as "run as root": this is root.
  const outcome = await openInNamespace(['--user', '--map-root-user'], ['exec', 'exit']);
  expect(outcome).toMatchObject({ ok: false, code: userNamespaceCode });
  expect(outcome.line).toMatch(NAMESPACE_LINE);
});

describe('in a new user namespace, a lagging main thread confirms nothing the kernel ignored', () => {
  // (Reached only on kernels that take the bind; where it is refused, these check the refusal.)
  // The CI container once confirmed this case: confirmFilter() forgot its setsid child as soon
  // as the child was reaped, and on a loaded machine the child's sid event (the one kind
  // outside the filter) was parsed only after that, so no leak was seen and an ignored socket,
  // hearing events only because proc_event_num_listeners > 0, passed for a filtered one.
  let other: ProcConnector | undefined;
  afterEach(async () => {
    await other?.close();
    other = undefined;
  });

  test.each([
    ['while another listener is active', true, false],
    ['while this test adds no listener', false, false],
    ['also when the proc_input ACK is skipped (the filter check alone)', true, true],
  ])('%s', async (_name, withListener, skipProcInputAck) => {
    if (withListener) {
      other = new ProcConnector();
      await other.open();
    }
    const outcome = await openInNamespace(['--user', '--map-root-user'], ['exec', 'exit'], {
      lagMs: 150,
      skipProcInputAck,
    });
    expect(outcome).toMatchObject({ ok: false, code: userNamespaceCode });
    expect(outcome.line).toMatch(NAMESPACE_LINE);
  });

  test('while in the initial namespaces the lagging filtered subscription is confirmed', async () => {
    expect(await openInNamespace([], ['exec', 'exit'], { lagMs: 150 })).toEqual({
      ok: true,
      subscription: 'filtered',
    });
  });
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
