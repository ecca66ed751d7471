/**
 * A determinate bar when the task reports progress, an indeterminate one while
 * it runs without, full on success.
 */
export function ProgressBar({ state, progress }) {
  const reported = typeof progress?.percent === 'number' ? Math.max(0, Math.min(100, progress.percent)) : null;
  const percent = state === 'SUCCESS' ? 100 : reported;
  const running = ['RECEIVED', 'STARTED', 'PROGRESS', 'RETRY'].includes(state);
  const indeterminate = percent === null && running;
  const message = progress?.message;
  return (
    <div className="progress">
      <div
        className={`progress__track progress__track--${state.toLowerCase()}${indeterminate ? ' progress__track--indeterminate' : ''}`}
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent ?? undefined}
        aria-label="Task progress"
        data-testid="progress"
      >
        <div className="progress__fill" style={{ width: `${percent ?? 0}%` }} />
      </div>
      <div className="progress__caption">
        <span className="progress__message" data-testid="progress-message">
          {message ?? (state === 'PENDING' ? 'Waiting for a worker…' : running && percent === null ? 'Working…' : '')}
        </span>
        {percent !== null && <span className="progress__percent" data-testid="progress-percent">{Math.round(percent)}%</span>}
      </div>
    </div>
  );
}
