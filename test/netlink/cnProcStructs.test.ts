/**
 * The parser on datagrams captured from the real kernel (capturedDatagrams.ts), and on short,
 * corrupt and random input, which it must count and survive, never throw on.
 */
import {
  CN_MSG,
  NLMSGHDR,
  PROC_CN_MCAST_IGNORE,
  PROC_CN_MCAST_LISTEN,
  PROC_EVENT,
  PROC_EVENT_ALL,
  PROC_EVENT_MESSAGE_SIZE,
  buildForkDatagram,
  buildMcastRequest,
  eventTypeMask,
  parseDatagram,
  type CnProcSink,
} from '../../src/netlink/cnProcStructs';
import { PROC_EVENT_KINDS, type ProcEvent } from '../../src/netlink/events';
import {
  CAPTURED_DATAGRAMS,
  CAPTURE_PIDS as P,
  CAPTURE_REQUEST_ACK,
  type CapturedDatagramName,
} from './capturedDatagrams';

interface Parsed {
  events: { event: ProcEvent; seq: number }[];
  acks: { ack: number; err: number; seq: number; cpu: number }[];
  malformed: string[];
}

function parse(bytes: Uint8Array): Parsed {
  const out: Parsed = { events: [], acks: [], malformed: [] };
  const sink: CnProcSink = {
    event: (event, seq) => out.events.push({ event, seq }),
    ack: (ack, err, seq, cpu) => out.acks.push({ ack, err, seq, cpu }),
    malformed: (reason) => out.malformed.push(reason),
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  parseDatagram(view, 0, bytes.byteLength, sink);
  return out;
}

function captured(name: CapturedDatagramName): Buffer {
  return Buffer.from(CAPTURED_DATAGRAMS[name], 'hex');
}

/** The single event a captured datagram holds. */
function eventOf(name: CapturedDatagramName): ProcEvent {
  const parsed = parse(captured(name));
  expect(parsed.malformed).toEqual([]);
  expect(parsed.acks).toEqual([]);
  expect(parsed.events).toHaveLength(1);
  return parsed.events[0].event;
}

const SIGCHLD = 17;

describe('captured datagrams (Linux 6.18)', () => {
  test('every proc connector datagram is nlmsghdr + cn_msg + proc_event = 76 bytes', () => {
    expect(PROC_EVENT_MESSAGE_SIZE).toBe(76);
    for (const hex of Object.values(CAPTURED_DATAGRAMS)) {
      expect(hex.length / 2).toBe(PROC_EVENT_MESSAGE_SIZE);
      const buf = Buffer.from(hex, 'hex');
      expect(buf.readUInt32LE(NLMSGHDR.LEN)).toBe(76);
      expect(buf.readUInt16LE(NLMSGHDR.SIZE + CN_MSG.LEN)).toBe(PROC_EVENT.SIZE);
    }
  });

  test('the ACK to our listen carries ack + 1 and err 0, and is not an event', () => {
    const parsed = parse(captured('ackOfOurListen'));
    expect(parsed.events).toEqual([]);
    expect(parsed.malformed).toEqual([]);
    expect(parsed.acks).toHaveLength(1);
    expect(parsed.acks[0].ack).toBe(CAPTURE_REQUEST_ACK + 1);
    expect(parsed.acks[0].err).toBe(0);
    // Linux 6.18 numbers ACKs in the per-CPU sequence: cpu is a real CPU, not -1.
    expect(parsed.acks[0].cpu).toBeLessThan(2);
  });

  test('fork of a process: the parent and child pids', () => {
    expect(eventOf('forkOfFixture')).toMatchObject({
      kind: 'fork',
      parentPid: P.node,
      parentTgid: P.node,
      childPid: P.parent,
      childTgid: P.parent,
    });
    expect(eventOf('forkOfExecChild')).toMatchObject({
      kind: 'fork',
      parentTgid: P.parent,
      childPid: P.exec,
      childTgid: P.exec,
    });
  });

  test('fork of a thread: child_pid is the thread, child_tgid its process', () => {
    const ev = eventOf('forkOfThread');
    expect(ev).toMatchObject({ kind: 'fork', childPid: P.thread, childTgid: P.parent });
    if (ev.kind !== 'fork') throw new Error('not a fork');
    expect(ev.childPid).not.toBe(ev.childTgid);
    // copy_process() gives a thread its process's parent: the kernel reports node, not the fixture.
    expect(ev.parentTgid).toBe(P.node);
  });

  test('exec', () => {
    expect(eventOf('execOfFixture')).toMatchObject({
      kind: 'exec',
      processPid: P.parent,
      processTgid: P.parent,
    });
    expect(eventOf('execOfTrue')).toMatchObject({ kind: 'exec', processTgid: P.exec });
  });

  test('comm, sid, gid, uid of the child that changed them', () => {
    expect(eventOf('commOfIdsChild')).toMatchObject({
      kind: 'comm',
      processTgid: P.ids,
      comm: 'rf-kinds',
    });
    expect(eventOf('sidOfIdsChild')).toMatchObject({ kind: 'sid', processTgid: P.ids });
    expect(eventOf('gidOfIdsChild')).toMatchObject({
      kind: 'gid',
      processTgid: P.ids,
      rgid: 65534,
      egid: 65534,
    });
    expect(eventOf('uidOfIdsChild')).toMatchObject({
      kind: 'uid',
      processTgid: P.ids,
      ruid: 65534,
      euid: 65534,
    });
  });

  test('ptrace attach names the tracer; detach names none', () => {
    expect(eventOf('ptraceAttach')).toMatchObject({
      kind: 'ptrace',
      processTgid: P.trace,
      tracerPid: P.parent,
      tracerTgid: P.parent,
    });
    expect(eventOf('ptraceDetach')).toMatchObject({
      kind: 'ptrace',
      processTgid: P.trace,
      tracerPid: 0,
      tracerTgid: 0,
    });
  });

  test('coredump names the parent', () => {
    expect(eventOf('coredumpOfSegvChild')).toMatchObject({
      kind: 'coredump',
      processTgid: P.segv,
      parentTgid: P.parent,
    });
  });

  test('exit: wait status, exit signal and parent', () => {
    expect(eventOf('exitOfTrue')).toMatchObject({
      kind: 'exit',
      processTgid: P.exec,
      exitCode: 0,
      exitSignal: SIGCHLD,
      parentTgid: P.parent,
    });
    // _exit(7): wait status 7 << 8
    expect(eventOf('exitOfIdsChild')).toMatchObject({ processTgid: P.ids, exitCode: 7 << 8 });
    // killed by SIGKILL, by SIGSEGV (RLIMIT_CORE 0: no core flag)
    expect(eventOf('exitOfTracedChild')).toMatchObject({ processTgid: P.trace, exitCode: 9 });
    expect(eventOf('exitOfSegvChild')).toMatchObject({ processTgid: P.segv, exitCode: 11 });
    // A thread's exit: exit_signal -1, no parent.
    expect(eventOf('exitOfThread')).toMatchObject({
      processPid: P.thread,
      processTgid: P.parent,
      exitSignal: -1,
      parentPid: 0,
      parentTgid: 0,
    });
    expect(eventOf('exitOfFixture')).toMatchObject({
      processTgid: P.parent,
      exitCode: 0,
      parentTgid: P.node,
    });
  });

  test('every kind appears, each with a cpu and a timestamp in order per CPU', () => {
    const events = (Object.keys(CAPTURED_DATAGRAMS) as CapturedDatagramName[])
      .filter((n) => n !== 'ackOfOurListen')
      .map(eventOf);
    expect(new Set(events.map((e) => e.kind))).toEqual(new Set(PROC_EVENT_KINDS));
    const lastTs = new Map<number, bigint>();
    for (const e of events) {
      expect(e.cpu).toBeLessThan(2);
      expect(e.timestampNs).toBeGreaterThan(0n);
      expect(e.timestampNs).toBeGreaterThanOrEqual(lastTs.get(e.cpu) ?? 0n);
      lastTs.set(e.cpu, e.timestampNs);
    }
  });

  test('two messages in one datagram are both delivered, in order', () => {
    const two = Buffer.concat([captured('forkOfExecChild'), captured('execOfTrue')]);
    const parsed = parse(two);
    expect(parsed.malformed).toEqual([]);
    expect(parsed.events.map((e) => e.event.kind)).toEqual(['fork', 'exec']);
  });
});

describe('short and corrupt input is counted, never thrown', () => {
  test('every truncation of every captured datagram', () => {
    for (const hex of Object.values(CAPTURED_DATAGRAMS)) {
      const full = Buffer.from(hex, 'hex');
      for (let len = 0; len < full.length; len++) {
        const parsed = parse(full.subarray(0, len));
        expect(parsed.events).toEqual([]);
        expect(parsed.acks).toEqual([]);
        // Anything from one whole nlmsghdr on is reported; fewer bytes are just too few.
        if (len >= NLMSGHDR.SIZE) expect(parsed.malformed.length).toBe(1);
      }
    }
  });

  test('cn_msg.len larger than the bytes present', () => {
    const buf = captured('execOfTrue');
    buf.writeUInt16LE(PROC_EVENT.SIZE + 1, NLMSGHDR.SIZE + CN_MSG.LEN);
    const parsed = parse(buf);
    expect(parsed.events).toEqual([]);
    expect(parsed.malformed[0]).toMatch(/cn_msg.len/);
  });

  test('a proc_event too short for its kind', () => {
    const buf = captured('commOfIdsChild');
    buf.writeUInt16LE(PROC_EVENT.EVENT_DATA + 8, NLMSGHDR.SIZE + CN_MSG.LEN);
    const parsed = parse(buf);
    expect(parsed.events).toEqual([]);
    expect(parsed.malformed[0]).toMatch(/comm_proc_event truncated/);
  });

  test('an unknown proc_event.what', () => {
    const buf = captured('execOfTrue');
    buf.writeUInt32LE(0x400, NLMSGHDR.SIZE + CN_MSG.DATA + PROC_EVENT.WHAT);
    const parsed = parse(buf);
    expect(parsed.events).toEqual([]);
    expect(parsed.malformed[0]).toMatch(/unknown proc_event.what 0x400/);
  });

  test('nlmsg_len shorter than a header, or longer than the datagram', () => {
    const short = captured('execOfTrue');
    short.writeUInt32LE(8, NLMSGHDR.LEN);
    expect(parse(short).malformed).toHaveLength(1);
    const long = captured('execOfTrue');
    long.writeUInt32LE(1000, NLMSGHDR.LEN);
    expect(parse(long).malformed).toHaveLength(1);
  });

  test("another connector user's message is skipped silently", () => {
    const buf = captured('execOfTrue');
    buf.writeUInt32LE(7, NLMSGHDR.SIZE + CN_MSG.IDX);
    expect(parse(buf)).toEqual({ events: [], acks: [], malformed: [] });
  });

  test('100,000 random datagrams and mutated captures', () => {
    let seed = 0x12345678;
    const random = (): number => {
      // xorshift32: reproducible
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 0x100000000;
    };
    const samples = Object.values(CAPTURED_DATAGRAMS).map((h) => Buffer.from(h, 'hex'));
    let delivered = 0;
    for (let i = 0; i < 100_000; i++) {
      let buf: Buffer;
      if (i % 2 === 0) {
        buf = Buffer.alloc(Math.floor(random() * 200));
        for (let j = 0; j < buf.length; j++) buf[j] = Math.floor(random() * 256);
      } else {
        buf = Buffer.from(samples[i % samples.length]);
        for (let flips = 0; flips < 3; flips++) {
          buf[Math.floor(random() * buf.length)] = Math.floor(random() * 256);
        }
      }
      const parsed = parse(buf);
      delivered += parsed.events.length;
    }
    // Mutations in the pid fields still parse: the parser checks structure, not plausibility.
    expect(delivered).toBeGreaterThan(0);
  });
});

describe('requests', () => {
  test('the legacy listen is nlmsghdr + cn_msg + a 4-byte mcast_op', () => {
    const req = buildMcastRequest({ op: PROC_CN_MCAST_LISTEN, seq: 5, ack: 99 });
    expect(req.length).toBe(40);
    expect(req.readUInt32LE(NLMSGHDR.LEN)).toBe(40);
    expect(req.readUInt16LE(NLMSGHDR.TYPE)).toBe(3); // NLMSG_DONE
    expect(req.readUInt32LE(NLMSGHDR.SIZE + CN_MSG.IDX)).toBe(1); // CN_IDX_PROC
    expect(req.readUInt32LE(NLMSGHDR.SIZE + CN_MSG.VAL)).toBe(1); // CN_VAL_PROC
    expect(req.readUInt32LE(NLMSGHDR.SIZE + CN_MSG.SEQ)).toBe(5);
    expect(req.readUInt32LE(NLMSGHDR.SIZE + CN_MSG.ACK)).toBe(99);
    expect(req.readUInt16LE(NLMSGHDR.SIZE + CN_MSG.LEN)).toBe(4);
    expect(req.readUInt32LE(NLMSGHDR.SIZE + CN_MSG.DATA)).toBe(PROC_CN_MCAST_LISTEN);
  });

  test('the filtered listen carries struct proc_input', () => {
    const mask = eventTypeMask(['fork', 'exit']);
    expect(mask).toBe(0x80000001);
    const req = buildMcastRequest({ op: PROC_CN_MCAST_LISTEN, eventType: mask, seq: 1, ack: 0 });
    expect(req.length).toBe(44);
    expect(req.readUInt16LE(NLMSGHDR.SIZE + CN_MSG.LEN)).toBe(8);
    expect(req.readUInt32LE(NLMSGHDR.SIZE + CN_MSG.DATA + 4)).toBe(0x80000001);
    const ignore = buildMcastRequest({ op: PROC_CN_MCAST_IGNORE, seq: 2, ack: 0 });
    expect(ignore.readUInt32LE(NLMSGHDR.SIZE + CN_MSG.DATA)).toBe(PROC_CN_MCAST_IGNORE);
  });

  test('the mask of every kind is PROC_EVENT_ALL without NONZERO_EXIT', () => {
    expect(eventTypeMask(PROC_EVENT_KINDS)).toBe((PROC_EVENT_ALL & ~0x20000000) >>> 0);
  });
});

describe("fork datagrams built for the receive worker's warm-up", () => {
  /** The fields of a captured fork datagram, read with fixed offsets (not the parser). */
  function fieldsOf(bytes: Buffer): Parameters<typeof buildForkDatagram>[0] {
    const ev = NLMSGHDR.SIZE + CN_MSG.DATA;
    const d = ev + PROC_EVENT.EVENT_DATA;
    return {
      seq: bytes.readUInt32LE(NLMSGHDR.SIZE + CN_MSG.SEQ),
      cpu: bytes.readUInt32LE(ev + PROC_EVENT.CPU),
      timestampNs: Number(bytes.readBigUInt64LE(ev + PROC_EVENT.TIMESTAMP_NS)),
      parentPid: bytes.readInt32LE(d),
      parentTgid: bytes.readInt32LE(d + 4),
      childPid: bytes.readInt32LE(d + 8),
      childTgid: bytes.readInt32LE(d + 12),
    };
  }

  test.each(['forkOfFixture', 'forkOfThread'] as const)(
    "the same fields give the kernel's own bytes (%s)",
    (name) => {
      const kernel = captured(name);
      const built = Buffer.alloc(PROC_EVENT_MESSAGE_SIZE);
      expect(buildForkDatagram(fieldsOf(kernel), built)).toBe(PROC_EVENT_MESSAGE_SIZE);
      expect(built.toString('hex')).toBe(kernel.toString('hex'));
    },
  );

  test('written in place at an offset, over old bytes, and parsed back as a fork', () => {
    const out = Buffer.alloc(8 + PROC_EVENT_MESSAGE_SIZE, 0xff);
    const fields = {
      parentPid: 0x40000000,
      parentTgid: 0x40000000,
      childPid: 0x40000005,
      childTgid: 0x40000000,
      timestampNs: 2 ** 40 + 7,
    };
    expect(buildForkDatagram(fields, out, 8)).toBe(PROC_EVENT_MESSAGE_SIZE);
    expect(out.subarray(0, 8).equals(Buffer.alloc(8, 0xff))).toBe(true);
    const parsed = parse(out.subarray(8));
    expect(parsed.malformed).toEqual([]);
    expect(parsed.events).toEqual([
      {
        seq: 0,
        event: expect.objectContaining({
          kind: 'fork',
          cpu: 0,
          timestampNs: BigInt(2 ** 40 + 7),
          parentPid: 0x40000000,
          parentTgid: 0x40000000,
          childPid: 0x40000005,
          childTgid: 0x40000000,
        }),
      },
    ]);
  });
});
