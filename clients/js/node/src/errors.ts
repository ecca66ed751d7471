/** Every error this package throws on purpose; `code` is stable for programs to branch on. */
export class CeleryPushserverError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The broker could not take the task (down, unreachable, or too slow); nothing was queued by us. */
export class BrokerUnavailableError extends CeleryPushserverError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('broker_unavailable', message, options);
  }
}

/** A broker URL this package cannot use safely (scheme, host or options). */
export class UnsupportedUrlError extends CeleryPushserverError {
  constructor(message: string) {
    super('unsupported_url', message);
  }
}

/** `dispatch()` after `close()`. */
export class DispatcherClosedError extends CeleryPushserverError {
  constructor() {
    super('dispatcher_closed', 'the dispatcher is closed');
  }
}

/** The chosen Celery client ("celery-ts" or "celery-node") is not installed next to this package. */
export class ClientNotInstalledError extends CeleryPushserverError {
  constructor(client: string, options?: { cause?: unknown }) {
    super('client_not_installed', `the ${client} package is not installed: npm install ${client}`, options);
  }
}

/** A token cannot be minted with these options (short secret, no tasks, bad TTL). */
export class TokenOptionsError extends CeleryPushserverError {
  constructor(message: string) {
    super('bad_token_options', message);
  }
}

/** Bad arguments to `dispatch()` (task name, args or kwargs of the wrong shape). */
export class DispatchArgumentError extends CeleryPushserverError {
  constructor(message: string) {
    super('bad_dispatch_arguments', message);
  }
}
