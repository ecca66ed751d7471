// A fixed-window counter per client address, for the sign-in routes (each costs a scrypt hash).

/** At most `limit` calls per `windowMs` per key; at most `maxKeys` keys remembered (oldest dropped). */
export class WindowLimiter {
  constructor({ limit, windowMs = 60_000, maxKeys = 10_000, now = () => Date.now() }) {
    this.limit = limit;
    this.windowMs = windowMs;
    this.maxKeys = maxKeys;
    this.now = now;
    this.windows = new Map(); // key → {start, count}
  }

  /** Count one call for `key`; returns 0 if allowed, else the seconds until the window ends. */
  take(key) {
    const now = this.now();
    let window = this.windows.get(key);
    if (!window || now - window.start >= this.windowMs) {
      this.windows.delete(key);
      window = { start: now, count: 0 };
      this.windows.set(key, window);
      while (this.windows.size > this.maxKeys) this.windows.delete(this.windows.keys().next().value);
    }
    window.count += 1;
    return window.count <= this.limit ? 0 : Math.ceil((window.start + this.windowMs - now) / 1000);
  }
}
