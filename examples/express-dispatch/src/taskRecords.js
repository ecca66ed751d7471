// Each dispatched task's record in MongoDB's `tasks` collection: who started it, what, with what, when.
//
// The record is written before the task is published, so a worker never runs
// a task the app has no record of; the workers add its state and output.

/** How many of a user's tasks `GET /api/tasks` lists, newest first. */
export const LIST_LIMIT = 50;

/** The dispatched tasks: `{_id: task id, owner, kind, task, args_summary, state, created_at}`. */
export class TaskRecords {
  constructor({ collection }) {
    this.tasks = collection;
  }

  /** Record that `owner` is dispatching task `taskId` (route `kind`, Celery name `task`). */
  async add({ taskId, owner, kind, task, argsSummary, createdAt = new Date() }) {
    await this.tasks.insertOne({
      _id: taskId, owner, kind, task, args_summary: argsSummary, state: 'PENDING', created_at: createdAt,
    });
  }

  /** Forget a task that could not be published after all. */
  async remove(taskId) {
    await this.tasks.deleteOne({ _id: taskId });
  }

  /** The newest `limit` tasks of `owner`, as the JSON the page shows. */
  async listFor(owner, limit = LIST_LIMIT) {
    const docs = await this.tasks.find({ owner }).sort({ created_at: -1 }).limit(limit).toArray();
    return docs.map(publicTask);
  }

  /** True when `owner` dispatched `taskId`. */
  async owns(owner, taskId) {
    if (typeof owner !== 'string' || typeof taskId !== 'string') return false;
    return (await this.tasks.findOne({ _id: taskId, owner }, { projection: { _id: 1 } })) !== null;
  }
}

function publicTask(doc) {
  return {
    id: doc._id,
    kind: doc.kind,
    task: doc.task,
    args_summary: doc.args_summary,
    state: doc.state,
    created_at: doc.created_at instanceof Date ? doc.created_at.toISOString() : doc.created_at,
    ...(doc.output ? { output: doc.output } : {}),
  };
}
