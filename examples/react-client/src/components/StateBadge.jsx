const LABELS = {
  PENDING: 'Queued',
  SENT: 'Sent',
  RECEIVED: 'Received',
  STARTED: 'Running',
  PROGRESS: 'Running',
  RETRY: 'Retrying',
  SUCCESS: 'Succeeded',
  FAILURE: 'Failed',
  REVOKED: 'Cancelled',
  REJECTED: 'Rejected',
};

/** The task's state as a coloured badge; the Celery state name is in the tooltip and data-state. */
export function StateBadge({ state }) {
  return (
    <span className={`badge badge--${state.toLowerCase()}`} title={`Celery state: ${state}`} data-testid="state-badge" data-state={state}>
      {LABELS[state] ?? state}
    </span>
  );
}
