// A stand-in for a socket.io-client Socket: records emits and lets a test play the server.
import type { Socket } from 'socket.io-client';

type Handler = (...args: any[]) => void;

export interface Emitted {
  event: string;
  payload: any;
  ack: (value: unknown) => void;
  timeout: () => void;
}

export class FakeSocket {
  connected = false;
  active = true;
  handlers = new Map<string, Set<Handler>>();
  emitted: Emitted[] = [];
  connectCalls = 0;
  disconnectCalls = 0;

  on(event: string, handler: Handler): this {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)!.add(handler);
    return this;
  }

  off(event: string, handler: Handler): this {
    this.handlers.get(event)?.delete(handler);
    return this;
  }

  timeout(_ms: number) {
    // socket.timeout(ms).emit(event, payload, (err, ack) => ...)
    return {
      emit: (event: string, payload: unknown, ack: (err: Error | null, value?: unknown) => void) => {
        this.emitted.push({ event, payload, ack: (value) => ack(null, value), timeout: () => ack(new Error('operation has timed out')) });
      },
    };
  }

  emit(event: string, payload: unknown): this {
    this.emitted.push({ event, payload, ack: () => {}, timeout: () => {} });
    return this;
  }

  connect(): this {
    this.connectCalls += 1;
    return this;
  }

  disconnect(): this {
    this.disconnectCalls += 1;
    this.connected = false;
    return this;
  }

  // --- the server's side ---

  fire(event: string, ...args: unknown[]): void {
    for (const handler of [...(this.handlers.get(event) ?? [])]) handler(...args);
  }

  serverConnect(): void {
    this.connected = true;
    this.fire('connect');
  }

  serverDisconnect(reason = 'transport close'): void {
    this.connected = false;
    this.fire('disconnect', reason);
  }

  /** Emits of `event` not yet looked at by takeEmits. */
  takeEmits(event: string): Emitted[] {
    const taken = this.emitted.filter((e) => e.event === event);
    this.emitted = this.emitted.filter((e) => e.event !== event);
    return taken;
  }

  get handlerCount(): number {
    let n = 0;
    for (const set of this.handlers.values()) n += set.size;
    return n;
  }

  asSocket(): Socket {
    return this as unknown as Socket;
  }
}

/** Let pending promise callbacks and microtasks run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 5; i += 1) await Promise.resolve();
  await new Promise((resolve) => setTimeout(resolve, 0));
}

/** A TaskState with the fields tests care about. */
export function taskState(id: string, state: string, updated_at: number | null, extra: Record<string, unknown> = {}): any {
  return {
    task_id: id, name: 'workers.tasks.demo_progress', state, progress: null, result: null, result_format: null,
    exception: null, exception_type: null, traceback: null, worker: null, retries: 0, runtime: null, sent_at: null, received_at: null, started_at: null,
    finished_at: null, updated_at, event: null, ...extra,
  };
}
