// A stand-in for a socket.io-client Socket: records emits, lets a test play the server.

export class FakeSocket {
  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.connected = false;
    this.handlers = new Map();
    this.emitted = []; // {event, payload, ack}
    this.connectCalls = 0;
  }

  on(event, handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(handler);
    return this;
  }

  off() {
    this.handlers.clear();
    return this;
  }

  timeout() {
    // socket.timeout(ms).emit(event, payload, (err, ack) => ...)
    return { emit: (event, payload, ack) => this.emitted.push({ event, payload, ack: (value) => ack(null, value), timeout: () => ack(new Error('timeout')) }) };
  }

  emit(event, payload, ack) {
    this.emitted.push({ event, payload, ack });
    return this;
  }

  connect() {
    this.connectCalls += 1;
  }

  disconnect() {
    this.connected = false;
  }

  // --- the server's side ---

  fire(event, ...args) {
    for (const handler of [...(this.handlers.get(event) ?? [])]) handler(...args);
  }

  serverConnect() {
    this.connected = true;
    this.fire('connect');
  }

  serverDisconnect(reason = 'transport close') {
    this.connected = false;
    this.fire('disconnect', reason);
  }

  /** Emits of `event` not yet looked at by takeEmits. */
  takeEmits(event) {
    const taken = this.emitted.filter((e) => e.event === event);
    this.emitted = this.emitted.filter((e) => e.event !== event);
    return taken;
  }
}

/** An `io()` replacement that hands out FakeSockets and remembers them. */
export function fakeIo() {
  const sockets = [];
  const io = (url, options) => {
    const socket = new FakeSocket(url, options);
    sockets.push(socket);
    return socket;
  };
  io.sockets = sockets;
  return io;
}
