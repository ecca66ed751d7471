import { useCallback, useEffect, useState } from 'react';

const REFRESH_MS = 60_000;

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/**
 * The newest nightly report from MongoDB (Celery Beat runs it): the last
 * day's tasks by name and state, and how many old records it archived.
 */
export function NightlyReport({ latestReport }) {
  const [report, setReport] = useState(undefined); // undefined while loading, null before the first report
  const [error, setError] = useState(null);

  const load = useCallback(async () => {
    try {
      setReport(await latestReport());
      setError(null);
    } catch (err) {
      setError(err.message);
    }
  }, [latestReport]);

  useEffect(() => {
    load();
    const timer = setInterval(load, REFRESH_MS);
    return () => clearInterval(timer);
  }, [load]);

  return (
    <section className="panel panel--report" aria-labelledby="report-heading" data-testid="nightly-report">
      <div className="panel__heading">
        <h2 id="report-heading">Nightly report</h2>
        <button type="button" className="button button--ghost" onClick={load}>Refresh</button>
      </div>
      {error && <p className="launch-card__error" role="alert">{error}</p>}
      {report === undefined && !error && <p className="loading" aria-busy="true">Loading…</p>}
      {report === null && <p className="empty">No report yet: Celery Beat runs it every night (every few minutes in the demo).</p>}
      {report && (
        <>
          <p data-testid="report-summary">
            {`${report.total} task${report.total === 1 ? '' : 's'} in the day before ${when(report.generated_at)}; `
              + `${report.archived} old record${report.archived === 1 ? '' : 's'} archived.`}
          </p>
          {report.counts.length > 0 && (
            <table className="report-table">
              <thead><tr><th>Task</th><th>State</th><th>Count</th></tr></thead>
              <tbody>
                {report.counts.map((row) => (
                  <tr key={`${row.task}/${row.state}`}>
                    <td><code>{row.task.replace(/^workers\.tasks\./, '')}</code></td>
                    <td>{row.state}</td>
                    <td>{row.count}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </section>
  );
}
