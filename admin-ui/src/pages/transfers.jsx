// Transfers: the retrieves, sends (studies going to a client: C-MOVE, C-GET, WADO-RS), forwards
// (to the PACS) and publications (XDS-I) running now, with
// their progress in instances and bytes and the rate, and the last ended ones, live from the
// server-sent events feed; a running one can be cancelled.
import { useEffect, useState } from 'preact/hooks';
import { bytes, send } from '../api.js';

const KINDS = ['retrieve', 'send', 'forward', 'publication'];

export function Transfers() {
  const [all, setList] = useState(null);
  const [kind, setKind] = useState('');
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
  const list = all && all.filter((t) => !kind || t.kind === kind);
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
      <p class="kinds">
        {['', ...KINDS].map((k) => (
          <button
            class={`small ${kind === k ? '' : 'off'}`}
            data-testid={`kind-${k || 'all'}`}
            onClick={() => setKind(k)}
          >
            {k ? `${k}s` : 'all'}
            {all ? ` (${all.filter((t) => !k || t.kind === k).length})` : ''}
          </button>
        ))}
      </p>
      {list && list.length === 0 && <p class="muted">No {kind ? `${kind}s` : 'transfers'} since the gateway started.</p>}
      {list && list.length > 0 && (
        <table data-testid="transfers">
          <thead>
            <tr>
              <th>#</th>
              <th>Kind</th>
              <th>From</th>
              <th>To</th>
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
                data-kind={t.kind}
                data-detail={t.detail}
                data-bytes={t.bytes}
                data-state={t.state}
                data-received={t.received}
                data-expected={t.expected}
                data-study={t.study_uids.join(',')}
              >
                <td>{t.id}</td>
                <td>{t.kind}</td>
                <td>{t.source}</td>
                <td>{t.destination}</td>
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
                <td>
                  {bytes(t.bytes)}
                  {t.expected_bytes ? ` of ${bytes(t.expected_bytes)}` : ''}
                </td>
                <td>{bytes(t.rate)}/s</td>
                <td class={`state ${t.state}`} title={t.detail}>
                  {t.state}
                  {t.detail && t.state !== 'running' && <div class="small muted detail">{t.detail}</div>}
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
