// A stand-in for a socket.io-client Socket, passed to createTaskClient({socket}):
// records emits and lets a test play the server.

export class FakeSocket {
  constructor() {
    this.connected = false;
    this.active = true;
    this.handlers = new Map();
    this.emitted = []; // {event, payload, ack}
  }

  on(event, handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(handler);
    return this;
  }

  off(event, handler) {
    this.handlers.get(event)?.delete(handler);
    return this;
  }

  timeout() {
    // socket.timeout(ms).emit(event, payload, (err, ack) => ...)
    return { emit: (event, payload, ack) => this.emitted.push({ event, payload, ack: (value) => ack(null, value) }) };
  }

  emit(event, payload) {
    this.emitted.push({ event, payload, ack: () => {} });
    return this;
  }

  connect() {
    return this;
  }

  disconnect() {
    this.connected = false;
    return this;
  }

  // --- the server's side ---

  fire(event, ...args) {
    for (const handler of [...(this.handlers.get(event) ?? [])]) handler(...args);
  }

  serverConnect() {
    this.connected = true;
    this.fire('connect');
  }

  /** Emits of `event` not yet looked at by takeEmits. */
  takeEmits(event) {
    const taken = this.emitted.filter((e) => e.event === event);
    this.emitted = this.emitted.filter((e) => e.event !== event);
    return taken;
  }
}
