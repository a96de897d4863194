// Keep-alive of an up link as decisions: PING when nothing arrived for an interval, PONG to a PING, dead after
// MISSED_PINGS silent intervals. No timers or sockets: the transport ticks it every interval and moves its frames.
import { FrameType, type Frame, type PingFrame, type PongFrame } from './frames.js';

/** Intervals without any frame from the peer after which a link is dead. */
export const MISSED_PINGS = 3;

/** What the transport does at a tick. */
export type KeepAliveStep =
  /** Send this PING. */
  | { kind: 'ping'; frame: PingFrame }
  /** The peer has been silent too long: close the link, saying why. */
  | { kind: 'dead'; why: string };

/** One up link's keep-alive. */
export class KeepAlive {
  private heard = true;
  private silent = 0;
  private seq = 0;

  /** `intervalMs` is how often the transport ticks (for the reason given when the link dies). */
  constructor(private readonly intervalMs: number, private readonly missed = MISSED_PINGS) {}

  /** Any frame arrived from the peer. Returns the answer to send for a PING (its PONG), else null. */
  received(f: Frame): PongFrame | null {
    this.heard = true;
    return f.type === FrameType.Ping ? { type: FrameType.Pong, seq: f.seq } : null;
  }

  /** One interval passed: a PING to send, or the verdict that the peer is gone. */
  tick(): KeepAliveStep {
    if (this.heard) {
      this.heard = false;
      this.silent = 0;
    } else if (++this.silent >= this.missed) {
      return { kind: 'dead', why: `timed out: no frame for ${this.missed * this.intervalMs} ms` };
    }
    return { kind: 'ping', frame: { type: FrameType.Ping, seq: this.seq++ } };
  }
}
