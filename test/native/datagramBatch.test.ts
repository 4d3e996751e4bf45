/**
 * DatagramBatch (recvmmsg(2) into fixed slots), against a real AF_UNIX datagram socket pair: the
 * kernel fills the struct mmsghdr vector the class builds, so a wrong offset or address shows as
 * wrong bytes or lengths here rather than in the relay's fast path.
 */
import {
  AF_UNIX,
  DatagramBatch,
  Errno,
  MSG_DONTWAIT,
  MSG_TRUNC,
  MSG_WAITFORONE,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  close,
  send,
  setReceiveTimeout,
  socketpair,
} from '../../src/native/libc';

let reader = -1;
let writer = -1;

beforeEach(() => {
  [reader, writer] = socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
});

afterEach(() => {
  for (const fd of [reader, writer]) if (fd >= 0) close(fd);
  reader = writer = -1;
});

/** A datagram of `length` bytes, each byte `tag + offset` (mod 256). */
function datagram(tag: number, length: number): Buffer {
  return Buffer.from(Array.from({ length }, (_, i) => (tag + i) & 0xff));
}

function slot(batch: DatagramBatch, i: number): Buffer {
  return batch.bytes.subarray(i * batch.slotBytes, i * batch.slotBytes + batch.lengthOf(i));
}

test('one call takes every queued datagram, each in its slot with its length', () => {
  const batch = new DatagramBatch(8, 64);
  const sent = [datagram(1, 5), datagram(20, 64), datagram(40, 1), datagram(60, 33)];
  for (const d of sent) send(writer, d);
  expect(batch.receive(reader, MSG_WAITFORONE | MSG_TRUNC)).toBe(sent.length);
  sent.forEach((d, i) => {
    expect(batch.lengthOf(i)).toBe(d.length);
    expect(slot(batch, i)).toEqual(d);
  });
});

test('more datagrams than slots come in order over several calls; lengths are renewed each call', () => {
  const batch = new DatagramBatch(4, 16);
  const sent = Array.from({ length: 6 }, (_, i) => datagram(i * 10, 3 + i));
  for (const d of sent) send(writer, d);
  expect(batch.receive(reader, MSG_WAITFORONE)).toBe(4);
  for (let i = 0; i < 4; i++) expect(slot(batch, i)).toEqual(sent[i]);
  expect(batch.receive(reader, MSG_WAITFORONE)).toBe(2);
  expect(slot(batch, 0)).toEqual(sent[4]);
  expect(slot(batch, 1)).toEqual(sent[5]);
  // Blocking only for the first: with one datagram queued the call returns one, at once.
  send(writer, datagram(99, 2));
  expect(batch.receive(reader, MSG_WAITFORONE)).toBe(1);
  expect(slot(batch, 0)).toEqual(datagram(99, 2));
});

test('a datagram larger than its slot is cut to the slot, MSG_TRUNC gives its full length, and the next slot is untouched', () => {
  const batch = new DatagramBatch(2, 16);
  send(writer, datagram(7, 40));
  send(writer, datagram(100, 4));
  expect(batch.receive(reader, MSG_WAITFORONE | MSG_TRUNC)).toBe(2);
  expect(batch.lengthOf(0)).toBe(40);
  expect(batch.bytes.subarray(0, 16)).toEqual(datagram(7, 16));
  expect(slot(batch, 1)).toEqual(datagram(100, 4));
});

test('nothing to read is -EAGAIN: at once without waiting, after SO_RCVTIMEO when blocking', () => {
  const batch = new DatagramBatch(2, 16);
  expect(batch.receive(reader, MSG_DONTWAIT)).toBe(-Errno.EAGAIN);
  setReceiveTimeout(reader, 100);
  const started = Date.now();
  expect(batch.receive(reader, MSG_WAITFORONE)).toBe(-Errno.EAGAIN);
  // A liveness bound, not a speed test: it did wait, and it came back.
  expect(Date.now() - started).toBeGreaterThanOrEqual(90);
  expect(Date.now() - started).toBeLessThan(10_000);
});

test('other errors are thrown shaped like Node errors, naming the call', () => {
  const batch = new DatagramBatch(2, 16);
  const fd = reader;
  close(fd);
  reader = -1;
  expect(() => batch.receive(fd, MSG_DONTWAIT)).toThrow(
    expect.objectContaining({ code: 'EBADF', syscall: 'recvmmsg' }),
  );
});

test('a shape the slots cannot hold is refused', () => {
  expect(() => new DatagramBatch(0, 64)).toThrow(RangeError);
  expect(() => new DatagramBatch(2, 12)).toThrow(RangeError);
  expect(() => new DatagramBatch(1.5, 64)).toThrow(RangeError);
});
