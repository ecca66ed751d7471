// Errors the client rejects `wait()` with; `code` matches the pushserver's error codes.
import type { TaskProblem } from './types.js';

/** Base class of every error the client throws or rejects with. */
export class TaskClientError extends Error {
  /** The pushserver's code (`forbidden`, `unauthorized`, `token_expired`, …) or the client's (`timeout`, `closed`). */
  readonly code: string;
  /** The task concerned, when there is one. */
  readonly taskId: string | undefined;

  constructor(code: string, message: string, taskId?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TaskClientError';
    this.code = code;
    this.taskId = taskId;
  }
}

/** The token does not name the task (`forbidden`). A new token would not help. */
export class ForbiddenError extends TaskClientError {
  constructor(message: string, taskId?: string) {
    super('forbidden', message, taskId);
    this.name = 'ForbiddenError';
  }
}

/**
 * No token the server accepts: missing, invalid or expired, and `getToken`
 * is absent or its fresh token was refused too. `code` is `unauthorized` or `token_expired`.
 */
export class UnauthorizedError extends TaskClientError {
  constructor(message: string, taskId?: string, code: 'unauthorized' | 'token_expired' = 'unauthorized', options?: { cause?: unknown }) {
    super(code, message, taskId, options);
    this.name = 'UnauthorizedError';
  }
}

/** `wait()` gave up: the task did not finish within `timeout` milliseconds. */
export class WaitTimeoutError extends TaskClientError {
  constructor(message: string, taskId?: string) {
    super('timeout', message, taskId);
    this.name = 'WaitTimeoutError';
  }
}

/** The client was closed while a `wait()` was pending. */
export class ClientClosedError extends TaskClientError {
  constructor(taskId?: string) {
    super('closed', 'the task client was closed', taskId);
    this.name = 'ClientClosedError';
  }
}

/** The typed error for a problem the client recorded on a task. */
export function errorFromProblem(problem: TaskProblem, taskId: string): TaskClientError {
  if (problem.code === 'forbidden') return new ForbiddenError(problem.message, taskId);
  if (problem.code === 'unauthorized' || problem.code === 'token_expired') {
    return new UnauthorizedError(problem.message, taskId, problem.code);
  }
  return new TaskClientError(problem.code, problem.message, taskId);
}
