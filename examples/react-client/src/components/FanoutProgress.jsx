import { useWorkflowStatus } from '@celery-pushserver/react';

// Members are drawn finished first, then running, then waiting: the row fills from the left.
const DOT_ORDER = ['SUCCESS', 'FAILURE', 'REVOKED', 'REJECTED', 'RETRY', 'PROGRESS', 'STARTED', 'RECEIVED', 'SENT', 'PENDING'];

/**
 * A fan-out as one workflow: the dispatching task and every delivery it
 * started (they carry its id as their root_id), one bar for all of them and a
 * dot per member coloured by its state. `token` names the task id, which is
 * also the workflow id.
 */
export function FanoutProgress({ workflowId, token }) {
  const { workflow, error } = useWorkflowStatus(workflowId, { token });
  if (!workflow) {
    if (error) return <p className="task-card__warning" role="alert">Fan-out progress unavailable: {error.message}</p>;
    return (
      <div className="fanout" data-testid="fanout" data-state="PENDING">
        <div className="progress__track progress__track--pending" role="progressbar" aria-label="Fan-out progress" />
        <div className="progress__caption"><span className="progress__message">Waiting for the fan-out…</span></div>
      </div>
    );
  }
  const dots = DOT_ORDER.flatMap((state) => Array.from({ length: workflow.counts[state] ?? 0 }, () => state));
  const finished = workflow.completed + workflow.failed;
  return (
    <div className="fanout" data-testid="fanout" data-state={workflow.state}>
      <div className="progress">
        <div
          className={`progress__track progress__track--${workflow.state.toLowerCase()}`}
          role="progressbar"
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={workflow.percent}
          aria-label="Fan-out progress"
          data-testid="fanout-progress"
        >
          <div className="progress__fill" style={{ width: `${workflow.percent}%` }} />
        </div>
        <div className="progress__caption">
          <span className="progress__message" data-testid="fanout-caption">
            {finished} of {workflow.total} tasks finished{workflow.failed ? `, ${workflow.failed} failed` : ''}
          </span>
          <span className="progress__percent">{Math.round(workflow.percent)}%</span>
        </div>
      </div>
      <ul className="fanout__dots" aria-label="One dot per task">
        {dots.map((state, i) => (
          <li key={i} className={`fanout__dot fanout__dot--${state.toLowerCase()}`} title={state} data-state={state} />
        ))}
      </ul>
    </div>
  );
}
