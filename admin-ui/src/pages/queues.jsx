// Queues: STOW-RS instances on their way to the PACS (failed jobs can be re-queued) and
// studies waiting for their XDS-I publication (one whose attempts fail shows why, and can be
// published now). Refreshed every two seconds.
import { useEffect, useState } from 'preact/hooks';
import { get, send, unixTime } from '../api.js';

export function Queues() {
  const [data, setData] = useState(null);
  const [error, setError] = useState('');
  const [note, setNote] = useState('');
  const load = () => get('/queues').then(setData, (e) => setError(e.message));
  useEffect(() => {
    load();
    const timer = setInterval(load, 2000);
    return () => clearInterval(timer);
  }, []);
  async function requeue(ids) {
    setError('');
    try {
      const r = await send('POST', '/queues/forward/requeue', { ids });
      setNote(`${r.requeued} job${r.requeued === 1 ? '' : 's'} re-queued`);
      load();
    } catch (e) {
      setError(e.message);
    }
  }
  async function publishNow(study) {
    setError('');
    try {
      await send('POST', `/queues/publication/${study}/publish`);
      setNote(`publication of ${study} asked for now`);
      load();
    } catch (e) {
      setError(e.message);
    }
  }
  if (!data) return error ? <p class="error">{error}</p> : <p class="muted">Loading…</p>;
  const { forward, publication } = data;
  const failed = forward.jobs.filter((j) => j.state === 'failed');
  return (
    <>
      <h1>Queues</h1>
      {error && <p class="error">{error}</p>}
      <section class="card">
        <h2>Forward to the PACS {forward.pacs ? <span class="muted">({forward.pacs})</span> : ''}</h2>
        <p data-testid="forward-counts">
          {forward.enabled ? '' : 'Forwarding is off (pacs.forward_stow). '}
          {Object.entries(forward.counts).map(([k, v]) => (
            <span class={`pill ${k}`}>
              {k}: {v}
            </span>
          ))}
          {forward.jobs.length === 0 && <span class="muted">No jobs.</span>}
        </p>
        <button disabled={failed.length === 0} onClick={() => requeue([])} data-testid="requeue-all">
          Re-queue all failed ({failed.length})
        </button>
        {note && <span class="note" data-testid="requeue-note"> {note}</span>}
        {forward.jobs.length > 0 && (
          <table data-testid="forward-jobs">
            <thead>
              <tr>
                <th>#</th>
                <th>State</th>
                <th>Attempts</th>
                <th>Next attempt</th>
                <th>Last error</th>
                <th>Study / instance</th>
                <th>Sender</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {forward.jobs.map((j) => (
                <tr data-testid="forward-job" data-state={j.state}>
                  <td>{j.id}</td>
                  <td class={`state ${j.state}`}>{j.state}</td>
                  <td>{j.attempts}</td>
                  <td>{j.state === 'queued' ? unixTime(j.next_attempt_at) : ''}</td>
                  <td class="small">{j.last_error}</td>
                  <td class="mono small">
                    {j.study_instance_uid}
                    <br />
                    {j.sop_instance_uid}
                  </td>
                  <td>{j.sender}</td>
                  <td>
                    {j.state === 'failed' && (
                      <button class="small" onClick={() => requeue([j.id])}>
                        Re-queue
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section class="card">
        <h2>Publication (XDS-I KOS manifests)</h2>
        {!publication.enabled && <p class="muted">No XDS registry ([xds] enabled = false).</p>}
        {publication.enabled && publication.studies.length === 0 && (
          <p class="muted">Every complete study is published.</p>
        )}
        {publication.studies.length > 0 && (
          <table data-testid="publications">
            <thead>
              <tr>
                <th>Study</th>
                <th>Last arrival</th>
                <th>Arrivals</th>
                <th>Last published</th>
                <th>State</th>
                <th>Failed attempts</th>
                <th>Next attempt</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {publication.studies.map((s) => (
                <tr
                  data-testid="publication"
                  data-study={s.study_instance_uid}
                  data-state={s.failing ? 'failed' : 'waiting'}
                  data-attempts={s.failing ? s.failing.attempts : 0}
                  data-error={s.failing ? s.failing.last_error : ''}
                >
                  <td class="mono small">{s.study_instance_uid}</td>
                  <td>{unixTime(s.last_arrival)}</td>
                  <td>{s.arrivals}</td>
                  <td>{s.published_at ? unixTime(s.published_at) : 'never'}</td>
                  <td class={`state ${s.failing ? 'failed' : 'queued'}`}>
                    {s.failing ? 'failed' : 'waiting'}
                    {s.failing && <div class="small muted detail">{s.failing.last_error}</div>}
                  </td>
                  <td>{s.failing ? s.failing.attempts : ''}</td>
                  <td>{s.failing ? unixTime(s.failing.next_attempt_at) : ''}</td>
                  <td>
                    <button class="small" onClick={() => publishNow(s.study_instance_uid)} data-testid="publish-now">
                      Publish now
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}
