/**
 * A stand-in for systemd's notification socket: a real AF_UNIX datagram socket (bound through the
 * project's libc boundary, since Node has no Unix datagram sockets) that records every message
 * with the time it arrived. Bound at a path or at an abstract address ('@name').
 */
import {
  AF_UNIX,
  Errno,
  MSG_DONTWAIT,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  bind,
  close,
  recvOrErrno,
  socket,
} from '../../src/native/libc';
import { DEFAULT_TIMEOUT_MS, waitFor } from '../support/waitFor';

export interface NotifyMessage {
  /** The datagram's VAR=VALUE lines. */
  fields: Map<string, string>;
  text: string;
  /** Date.now() when it was read. */
  at: number;
}

export class NotifyListener {
  readonly messages: NotifyMessage[] = [];
  private readonly fd: number;
  private readonly timer: NodeJS.Timeout;
  private readonly buffer = Buffer.alloc(65536);
  private readonly callbacks: Array<(message: NotifyMessage) => void> = [];
  private closed = false;

  /** `address` is what NOTIFY_SOCKET will say: an absolute path or '@name'. */
  constructor(
    readonly address: string,
    pollMs = 5,
  ) {
    // Encoded here rather than with the notifier's own encoder, so that a wrong length on the
    // sending side names a different socket and the test sees nothing arrive.
    const name = address.startsWith('@')
      ? Buffer.concat([Buffer.from([0]), Buffer.from(address.slice(1))])
      : Buffer.concat([Buffer.from(address), Buffer.from([0])]);
    const sockaddr = Buffer.concat([Buffer.from([AF_UNIX, 0]), name]); // struct sockaddr_un
    this.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    try {
      bind(this.fd, sockaddr);
    } catch (err) {
      close(this.fd);
      throw err;
    }
    this.timer = setInterval(() => this.drain(), pollMs);
  }

  /** Runs `callback` synchronously as each message is read (e.g. to look at /proc/mounts then). */
  onMessage(callback: (message: NotifyMessage) => void): void {
    this.callbacks.push(callback);
  }

  /** Messages that carry `name` (e.g. 'READY', 'WATCHDOG'). */
  with(name: string): NotifyMessage[] {
    return this.messages.filter((m) => m.fields.has(name));
  }

  /** Waits until `count` messages carry `name`; resolves to them all. */
  waitForMessages(
    name: string,
    count = 1,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<NotifyMessage[]> {
    return waitFor(
      () =>
        `${count} ${name}= on ${this.address}; got: ${JSON.stringify(this.messages.map((m) => m.text))}`,
      () => this.with(name).length >= count && this.with(name),
      timeoutMs,
    );
  }

  /** Read every queued datagram. */
  drain(): void {
    if (this.closed) return;
    for (;;) {
      const n = recvOrErrno(this.fd, this.buffer, 0, this.buffer.length, MSG_DONTWAIT);
      if (n === -Errno.EAGAIN) return;
      if (n < 0) continue;
      const text = this.buffer.toString('utf8', 0, n);
      const fields = new Map<string, string>();
      for (const line of text.split('\n')) {
        const eq = line.indexOf('=');
        if (eq > 0) fields.set(line.slice(0, eq), line.slice(eq + 1));
      }
      const message = { fields, text, at: Date.now() };
      this.messages.push(message);
      for (const callback of this.callbacks) callback(message);
    }
  }

  close(): void {
    if (this.closed) return;
    this.drain();
    this.closed = true;
    clearInterval(this.timer);
    close(this.fd);
  }
}
