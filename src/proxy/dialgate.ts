/**
 * The client's bound on stripe handshakes in flight to its server (issue 13). A server limits handshake
 * attempts per source address (a token bucket of burst 80; a token comes back once the hello
 * authenticates), so a client that opens hundreds of sessions at once — a SOCKS front behind a busy
 * browser, 200 concurrent downloads — would see the burst run out before the first replies refund it, and
 * its sessions would fail. With at most `limit` (below the server's burst) awaiting their reply, every
 * dial waits its turn instead: the first ones authenticate, refund, and the queue moves on.
 *
 * A dial holds its slot from before the connect until its reply authenticated or it failed; `release`
 * may be called more than once. The queue is bounded by the sessions and stripes that wait in it.
 */

/** Default handshakes in flight: below the server's default burst (80) with room for another client host. */
export const DEFAULT_DIALS_IN_FLIGHT = 48;

/** Gives dials their turn; see the module comment. */
export class DialGate {
  private active = 0;
  private pumping = false;
  private readonly queue: ((release: () => void) => void)[] = [];

  constructor(private readonly limit = DEFAULT_DIALS_IN_FLIGHT) {}

  /** Dials in flight now. */
  get inFlight(): number {
    return this.active;
  }

  /** Dials waiting for a slot. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Runs `start` now or when a slot frees; it gets the function that frees its slot. */
  acquire(start: (release: () => void) => void): void {
    this.queue.push(start);
    this.pump();
  }

  /** Starts queued dials while slots are free; a loop, so dials that release at once do not recurse. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.active < this.limit && this.queue.length > 0) {
        const start = this.queue.shift()!;
        this.active++;
        let held = true;
        start(() => {
          if (!held) return;
          held = false;
          this.active--;
          this.pump();
        });
      }
    } finally {
      this.pumping = false;
    }
  }
}
