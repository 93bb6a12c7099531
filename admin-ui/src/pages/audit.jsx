// Audit: one patient's NEN 7513 trail (who saw their data), with the verification of the
// whole hash chain, and its export as CSV. Each read is itself recorded.
import { useState } from 'preact/hooks';
import { get, query } from '../api.js';

export function Audit() {
  const [bsn, setBsn] = useState('');
  const [trail, setTrail] = useState(null);
  const [error, setError] = useState('');
  async function show(e) {
    e.preventDefault();
    setError('');
    try {
      setTrail(await get(`/audit${query({ bsn: bsn.trim() })}`));
    } catch (err) {
      setError(err.message);
      setTrail(null);
    }
  }
  return (
    <>
      <h1>Audit trail</h1>
      <form class="row" onSubmit={show} data-testid="audit-search">
        <label>
          BSN / patient ID
          <input name="bsn" value={bsn} onInput={(e) => setBsn(e.currentTarget.value)} />
        </label>
        <button type="submit" disabled={!bsn.trim()}>
          Show
        </button>
      </form>
      {error && <p class="error">{error}</p>}
      {trail && (
        <>
          <p class={trail.verification.ok ? 'ok' : 'error'} data-testid="chain">
            {trail.chain}
          </p>
          <p>
            <a
              href={`/admin/api/audit.csv${query({ bsn: trail.patient_id })}`}
              download={`audit-${trail.patient_id}.csv`}
              data-testid="csv"
            >
              Export as CSV
            </a>{' '}
            <span class="muted">({trail.records.length} records)</span>
          </p>
          <table data-testid="audit-records">
            <thead>
              <tr>
                <th>#</th>
                <th>Time</th>
                <th>Operation</th>
                <th>Outcome</th>
                <th>Who</th>
                <th>Organisation</th>
                <th>Role</th>
                <th>From</th>
                <th>Detail</th>
                <th title="The exchange's correlation id across gateways: the same id is in the other gateway's record">Correlation</th>
                <th title="The OpenTelemetry trace of the transfer (W3C trace id), when traces are exported: find it in the tracing backend">Trace</th>
              </tr>
            </thead>
            <tbody>
              {trail.records.map((r) => (
                <tr data-testid="audit-record">
                  <td>{r.seq}</td>
                  <td class="small">{r.time}</td>
                  <td>{r.operation}</td>
                  <td class={`state ${r.outcome}`}>{r.outcome}</td>
                  <td>{r.professional_uzi || r.gateway}</td>
                  <td>{r.organisation_ura}</td>
                  <td>{r.role}</td>
                  <td class="small">{r.source_address}</td>
                  <td class="small">{r.detail}</td>
                  <td class="mono small">{r.correlation_id}</td>
                  <td class="mono small" data-testid="audit-trace">{r.trace_id}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </>
  );
}
