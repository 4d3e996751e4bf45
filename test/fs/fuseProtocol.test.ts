/**
 * The FUSE wire format on bytes: what the kernel sends (include/uapi/linux/fuse.h 7.43) parsed,
 * what we send encoded at the offsets the kernel reads, and the FUSE_INIT negotiation.
 */
import {
  ATTR,
  ENTRY_OUT,
  FUSE_KERNEL_MINOR_VERSION,
  IN_HEADER,
  INIT_OUT,
  InitFlag,
  OUT_HEADER,
  direntSize,
  encodeAttrOut,
  encodeDirents,
  encodeEntryOut,
  encodeInitOut,
  encodeReply,
  encodeWriteOut,
  parseInitIn,
  parseInitOut,
  parseRequestHeader,
} from '../../src/fs/fuseProtocol';
import { negotiateInit } from '../../src/fs/fuseSession';

/** A fuse_init_in as a kernel of protocol 7.`minor` sends it (64 bytes since 7.36). */
function initIn(major: number, minor: number, flags: bigint, size = 64): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32LE(major, 0);
  b.writeUInt32LE(minor, 4);
  if (size >= 16) {
    b.writeUInt32LE(131072, 8);
    b.writeUInt32LE(Number(flags & 0xffffffffn), 12);
  }
  if (size >= 20) b.writeUInt32LE(Number(flags >> 32n), 16);
  return b;
}

const attr = { ino: 2, size: 4096, mode: 0o100644, nlink: 1, uid: 0, gid: 0, timeSec: 1700000000 };

describe('struct sizes match fuse.h', () => {
  test.each([
    ['fuse_in_header', IN_HEADER.SIZE, 40],
    ['fuse_out_header', OUT_HEADER.SIZE, 16],
    ['fuse_init_out', INIT_OUT.SIZE, 64],
    ['fuse_attr', ATTR.SIZE, 88],
    ['fuse_entry_out', ENTRY_OUT.SIZE, 128],
  ])('%s is %i bytes', (_name, size, expected) => expect(size).toBe(expected));
});

describe('parsing what the kernel sends', () => {
  test('fuse_in_header: every field at its offset', () => {
    const b = Buffer.alloc(48);
    b.writeUInt32LE(48, 0);
    b.writeUInt32LE(16, 4); // FUSE_WRITE
    b.writeBigUInt64LE(0x1234567890n, 8);
    b.writeBigUInt64LE(2n, 16);
    b.writeUInt32LE(65534, 24);
    b.writeUInt32LE(65533, 28);
    b.writeUInt32LE(4242, 32);
    expect(parseRequestHeader(b)).toEqual({
      len: 48,
      opcode: 16,
      unique: 0x1234567890n,
      nodeid: 2n,
      uid: 65534,
      gid: 65533,
      pid: 4242,
    });
  });

  test('a short buffer or an inconsistent length is no header', () => {
    expect(parseRequestHeader(Buffer.alloc(39))).toBeUndefined();
    const b = Buffer.alloc(40);
    b.writeUInt32LE(41, 0);
    expect(parseRequestHeader(b)).toBeUndefined();
    b.writeUInt32LE(39, 0);
    expect(parseRequestHeader(b)).toBeUndefined();
  });

  test('fuse_init_in: flags2 counts only with FUSE_INIT_EXT; the 16-byte form of old kernels', () => {
    const ext = InitFlag.FUSE_INIT_EXT | InitFlag.FUSE_REQUEST_TIMEOUT | 1n;
    expect(parseInitIn(initIn(7, 43, ext))?.flags).toBe(ext);
    const noExt = Buffer.from(initIn(7, 43, 1n));
    noExt.writeUInt32LE(0xffff, 16); // flags2 garbage without FUSE_INIT_EXT: ignored
    expect(parseInitIn(noExt)?.flags).toBe(1n);
    expect(parseInitIn(initIn(7, 31, 1n, 16))).toEqual({
      major: 7,
      minor: 31,
      maxReadahead: 131072,
      flags: 1n,
    });
    expect(parseInitIn(Buffer.alloc(4))).toBeUndefined();
  });
});

describe('encoding what we send', () => {
  test('fuse_init_out: a request timeout sets FUSE_INIT_EXT, flags2 bit 10 and request_timeout at byte 40', () => {
    const out = encodeInitOut({
      major: 7,
      minor: 43,
      maxReadahead: 0,
      flags: InitFlag.FUSE_REQUEST_TIMEOUT,
      maxWrite: 4096,
      requestTimeout: 30,
    });
    expect(out.length).toBe(64);
    expect(out.readUInt32LE(0)).toBe(7);
    expect(out.readUInt32LE(4)).toBe(43);
    expect(out.readUInt32LE(12)).toBe(1 << 30); // FUSE_INIT_EXT
    expect(out.readUInt32LE(20)).toBe(4096); // max_write
    expect(out.readUInt32LE(32)).toBe(1 << 10); // flags2: FUSE_REQUEST_TIMEOUT (1ULL << 42)
    expect(out.readUInt16LE(40)).toBe(30);
    expect(out.subarray(42).every((byte) => byte === 0)).toBe(true);
  });

  test('fuse_init_out without 64-bit flags leaves FUSE_INIT_EXT and flags2 clear', () => {
    const out = encodeInitOut({
      major: 7,
      minor: 40,
      maxReadahead: 0,
      flags: InitFlag.FUSE_BIG_WRITES,
      maxWrite: 4096,
      requestTimeout: 0,
    });
    expect(out.readUInt32LE(12)).toBe(1 << 5);
    expect(out.readUInt32LE(32)).toBe(0);
  });

  test('a reply is one buffer: out header (len, error, unique) then body; an error has no body', () => {
    const ok = encodeReply(77n, 0, encodeWriteOut(2));
    expect(ok.length).toBe(16 + 8);
    expect(ok.readUInt32LE(0)).toBe(24);
    expect(ok.readInt32LE(4)).toBe(0);
    expect(ok.readBigUInt64LE(8)).toBe(77n);
    expect(ok.readUInt32LE(16)).toBe(2);
    const err = encodeReply(78n, -13, Buffer.alloc(8));
    expect(err.length).toBe(16);
    expect(err.readInt32LE(4)).toBe(-13);
  });

  test('fuse_entry_out and fuse_attr_out carry the node, the validity and the attributes', () => {
    const entry = encodeEntryOut(2, attr, 1.5);
    expect(entry.readBigUInt64LE(0)).toBe(2n);
    expect(entry.readBigUInt64LE(16)).toBe(1n); // entry_valid
    expect(entry.readUInt32LE(32)).toBe(500000000); // entry_valid_nsec
    expect(entry.readUInt32LE(40 + ATTR.MODE)).toBe(0o100644);
    expect(entry.readBigUInt64LE(40 + ATTR.SIZE_)).toBe(4096n);
    expect(entry.readBigUInt64LE(40 + ATTR.MTIME)).toBe(1700000000n);
    const out = encodeAttrOut(attr, 1);
    expect(out.length).toBe(104);
    expect(out.readBigUInt64LE(0)).toBe(1n);
    expect(out.readUInt32LE(16 + ATTR.NLINK)).toBe(1);
  });

  test('dirents are padded to 8 and each off names the next entry; a small size stops early', () => {
    const entries = [
      { ino: 1, name: '.', type: 4 },
      { ino: 1, name: '..', type: 4 },
      { ino: 2, name: 'processes', type: 8 },
    ];
    expect(direntSize(1)).toBe(32);
    expect(direntSize(9)).toBe(40);
    const all = encodeDirents(entries, 0, 4096);
    expect(all.length).toBe(32 + 32 + 40);
    expect(all.readBigUInt64LE(64 + 8)).toBe(3n); // off of the third entry
    expect(all.readUInt32LE(64 + 16)).toBe(9);
    expect(all.toString('utf8', 64 + 24, 64 + 33)).toBe('processes');
    expect(encodeDirents(entries, 2, 4096).length).toBe(40);
    expect(encodeDirents(entries, 0, 63).length).toBe(32);
    expect(encodeDirents(entries, 3, 4096).length).toBe(0);
  });
});

describe('FUSE_INIT negotiation', () => {
  const options = { maxWrite: 4096, requestTimeoutSeconds: 30 };

  test('a newer kernel minor: we speak ours; the timeout is asked for when the kernel offers it', () => {
    const withTimeout = InitFlag.FUSE_INIT_EXT | InitFlag.FUSE_REQUEST_TIMEOUT;
    const outcome = negotiateInit(parseInitIn(initIn(7, 45, withTimeout))!, options);
    expect(outcome.kind).toBe('reply');
    if (outcome.kind !== 'reply') return;
    expect(outcome.done).toMatchObject({
      minor: FUSE_KERNEL_MINOR_VERSION,
      requestTimeoutSeconds: 30,
    });
    const sent = parseInitOut(outcome.reply);
    expect(sent).toMatchObject({ major: 7, minor: FUSE_KERNEL_MINOR_VERSION, maxWrite: 4096 });
    expect(sent.flags & InitFlag.FUSE_REQUEST_TIMEOUT).toBe(InitFlag.FUSE_REQUEST_TIMEOUT);
    expect(sent.requestTimeout).toBe(30);
  });

  test('an older kernel minor (Linux 6.1: 7.37) without the timeout: its minor, no timeout sent', () => {
    const outcome = negotiateInit(parseInitIn(initIn(7, 37, InitFlag.FUSE_INIT_EXT))!, options);
    expect(outcome.kind).toBe('reply');
    if (outcome.kind !== 'reply') return;
    expect(outcome.done).toMatchObject({
      minor: 37,
      requestTimeoutSeconds: 0,
      kernelHasRequestTimeout: false,
    });
    const sent = parseInitOut(outcome.reply);
    expect(sent.flags).toBe(0n);
    expect(sent.requestTimeout).toBe(0);
  });

  test('requestTimeoutSeconds 0 asks for none even where the kernel offers it', () => {
    const withTimeout = InitFlag.FUSE_INIT_EXT | InitFlag.FUSE_REQUEST_TIMEOUT;
    const outcome = negotiateInit(parseInitIn(initIn(7, 43, withTimeout))!, {
      ...options,
      requestTimeoutSeconds: 0,
    });
    expect(outcome.kind === 'reply' && parseInitOut(outcome.reply).flags).toBe(0n);
  });

  test('a newer major: reply with major 7 and wait for the next INIT', () => {
    const outcome = negotiateInit(parseInitIn(initIn(8, 0, 0n))!, options);
    expect(outcome.kind).toBe('retry');
    if (outcome.kind === 'retry') expect(parseInitOut(outcome.reply).major).toBe(7);
  });

  test('an older major or a minor before 7.36 is refused with one line', () => {
    for (const [major, minor] of [
      [6, 40],
      [7, 35],
    ]) {
      const outcome = negotiateInit(parseInitIn(initIn(major, minor, 0n))!, options);
      expect(outcome.kind).toBe('refuse');
      if (outcome.kind !== 'refuse') continue;
      expect(outcome.message).toMatch(
        new RegExp(`protocol ${major}\\.${minor} .*Linux 6\\.1 or later`),
      );
      expect(outcome.message).not.toMatch(/\n/);
    }
  });
});
