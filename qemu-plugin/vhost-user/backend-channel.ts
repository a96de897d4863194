// The back-end request channel (SET_BACKEND_REQ_FD): twindisk's requests to the front-end, and the wait for their replies.
//
// QEMU hands the back-end one end of a socket pair with SET_BACKEND_REQ_FD; on it the back-end sends
// "Back-end message types" (here only BACKEND_CONFIG_CHANGE_MSG: the capacity changed). QEMU handles a
// config change by reading the config space again with GET_CONFIG on the main socket *before* it
// answers, so the wait for the answer must never hold the main socket's message loop: it is a poll()
// with a timeout on libuv's thread pool, and a late answer is drained before the next request.
import type { Logger } from '../../engine/log.js';
import { MSG_NOSIGNAL, MsgBuffers, NativeBuffer, POLLIN, callAsync, close, errno, poll, read, sendmsg } from '../os.js';
import { BACKEND_REQ_NAMES, HEADER_SIZE, type BackendReq } from './constants.js';
import { decodeBackendReply, encodeBackendRequest } from './message.js';

/** How long a request waits for the front-end's REPLY_ACK before it is given up (the front-end is stuck or gone). */
export const BACKEND_REPLY_TIMEOUT_MS = 5000;

/**
 * One front-end connection's back-end channel. `replyAck`: REPLY_ACK was negotiated when the channel was
 * set, so requests carry NEED_REPLY and wait for the answer. Requests are sent one at a time, in order.
 */
export class BackendChannel {
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly out = new MsgBuffers(HEADER_SIZE + 8, 0);
  private readonly inb = new NativeBuffer(HEADER_SIZE + 8);
  private readonly pfd = new NativeBuffer(8);

  constructor(readonly fd: number, readonly replyAck: boolean, private readonly log: Logger, private readonly timeoutMs = BACKEND_REPLY_TIMEOUT_MS) {}

  /**
   * Sends `request` (after any request still under way); with REPLY_ACK, resolves once the front-end
   * answered 0 and rejects when it answered non-zero, did not answer within the timeout, or the channel
   * broke. Without REPLY_ACK it resolves once the message is sent.
   */
  send(request: BackendReq, payload?: Uint8Array): Promise<void> {
    const run = this.queue.catch(() => undefined).then(() => this.sendNow(request, payload));
    this.queue = run;
    return run;
  }

  private async sendNow(request: BackendReq, payload?: Uint8Array): Promise<void> {
    const name = BACKEND_REQ_NAMES[request] ?? `back-end request ${request}`;
    if (this.closed) throw new Error(`${name}: the back-end channel is closed`);
    this.drain();
    const msg = encodeBackendRequest(request, payload, this.replyAck);
    this.out.data.u8.set(msg, 0);
    const n = sendmsg(this.fd, this.out.prepareSend(msg.length, []), MSG_NOSIGNAL);
    if (n !== msg.length) throw new Error(`${name}: sending on the back-end channel failed (errno ${errno()})`);
    if (!this.replyAck) return;
    const status = await this.reply(request, name);
    if (status !== 0n) throw new Error(`${name}: the front-end answered ${status} (failure)`);
  }

  /** Waits (off the main loop) for the 20-byte answer to `request`. */
  private async reply(request: BackendReq, name: string): Promise<bigint> {
    const want = HEADER_SIZE + 8;
    let got = 0;
    const deadline = Date.now() + this.timeoutMs;
    while (got < want) {
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) throw new Error(`${name}: no answer from the front-end within ${this.timeoutMs / 1000} s`);
      this.pfd.dv.setInt32(0, this.fd, true);
      this.pfd.dv.setInt16(4, POLLIN, true);
      this.pfd.dv.setInt16(6, 0, true);
      const r = await callAsync(poll, this.pfd.addr, 1, Math.min(left, 500));
      if (this.closed) throw new Error(`${name}: the back-end channel closed while waiting for the answer`);
      if (r <= 0) continue;
      const k = read(this.fd, this.inb.addr + got, want - got);
      if (k === 0) throw new Error(`${name}: the front-end closed the back-end channel`);
      if (k < 0) throw new Error(`${name}: reading the answer failed (errno ${errno()})`);
      got += k;
    }
    return decodeBackendReply(this.inb.u8.subarray(0, want), request);
  }

  /** Discards bytes already waiting: the late answer of a request that timed out. */
  private drain(): void {
    for (;;) {
      this.pfd.dv.setInt32(0, this.fd, true);
      this.pfd.dv.setInt16(4, POLLIN, true);
      this.pfd.dv.setInt16(6, 0, true);
      if (poll(this.pfd.addr, 1, 0) <= 0) return;
      const k = read(this.fd, this.inb.addr, this.inb.size);
      if (k <= 0) return;
      this.log.debug('discarded a late answer on the back-end channel', { bytes: k });
    }
  }

  /** Closes the fd once the request under way (if any) ended; later sends fail. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    void this.queue.catch(() => undefined).then(() => {
      close(this.fd);
      this.out.free();
      this.inb.free();
      this.pfd.free();
    });
  }
}
