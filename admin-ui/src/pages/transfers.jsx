// Transfers: the retrieves running now (progress in instances and bytes, rate) and the last
// ended ones, live from the server-sent events feed; a running one can be cancelled.
import { useEffect, useState } from 'preact/hooks';
import { bytes, send } from '../api.js';

export function Transfers() {
  const [list, setList] = useState(null);
  const [feed, setFeed] = useState('connecting');
  const [error, setError] = useState('');
  useEffect(() => {
    const source = new EventSource('/admin/api/transfers/events');
    source.addEventListener('transfers', (e) => {
      setList(JSON.parse(e.data).transfers);
      setFeed('live');
    });
    source.onerror = () => setFeed('reconnecting');
    return () => source.close();
  }, []);
  async function cancel(id) {
    setError('');
    try {
      await send('DELETE', `/transfers/${id}`);
    } catch (e) {
      setError(e.message);
    }
  }
  return (
    <>
      <h1>
        Transfers <span class={`badge ${feed}`} data-testid="feed">{feed}</span>
      </h1>
      {error && <p class="error">{error}</p>}
      {list && list.length === 0 && <p class="muted">No transfers since the gateway started.</p>}
      {list && list.length > 0 && (
        <table data-testid="transfers">
          <thead>
            <tr>
              <th>#</th>
              <th>Kind</th>
              <th>From</th>
              <th>Study</th>
              <th>Progress</th>
              <th>Bytes</th>
              <th>Rate</th>
              <th>State</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.map((t) => (
              <tr
                data-testid="transfer"
                data-id={t.id}
                data-state={t.state}
                data-received={t.received}
                data-expected={t.expected}
                data-study={t.study_uids.join(',')}
              >
                <td>{t.id}</td>
                <td>{t.kind}</td>
                <td>{t.source}</td>
                <td class="mono small">
                  {t.study_uids.join(', ')}
                  {t.series_uids.length > 0 ? ` / ${t.series_uids.length} series` : ''}
                </td>
                <td>
                  <progress max={t.expected || 1} value={t.received} />
                  <span class="small">
                    {' '}
                    {t.received}/{t.expected || '?'}
                  </span>
                </td>
                <td>{bytes(t.bytes)}</td>
                <td>{bytes(t.rate)}/s</td>
                <td class={`state ${t.state}`} title={t.detail}>
                  {t.state}
                </td>
                <td>
                  {t.state === 'running' && (
                    <button class="small" onClick={() => cancel(t.id)} data-testid="cancel">
                      Cancel
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
