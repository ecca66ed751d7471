// Which user dispatched which task, so only they can refresh its token.

/** Task id → user id for the last `maxTasks` dispatches (older ones can no longer be refreshed). */
export class TaskOwners {
  constructor({ maxTasks = 100_000 } = {}) {
    this.maxTasks = maxTasks;
    this.owners = new Map();
  }

  /** Record that `userId` dispatched `taskId`. */
  add(taskId, userId) {
    this.owners.set(taskId, userId);
    while (this.owners.size > this.maxTasks) this.owners.delete(this.owners.keys().next().value);
  }

  /** True when `userId` dispatched `taskId` (and it is still remembered). */
  owns(userId, taskId) {
    return userId !== undefined && this.owners.get(taskId) === userId;
  }
}
