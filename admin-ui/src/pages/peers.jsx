// Peers: the PACS, each remote gateway and the consent service, probed now; our own
// certificate and CRLs with their expiry.
import { useEffect, useState } from 'preact/hooks';
import { get } from '../api.js';

function Cert({ cert }) {
  if (!cert) return <span class="muted">–</span>;
  return (
    <span class={cert.warning ? 'warning' : ''} title={cert.subject || ''}>
      {cert.not_after ? `until ${cert.not_after.slice(0, 10)} (${cert.days_left} d)` : 'unreadable'}
      {cert.warning ? ` · ${cert.warning}` : ''}
    </span>
  );
}

function Own({ own }) {
  const certs = (c) => (c && c.certificates) || [];
  return (
    <section class="card" data-testid="own-tls">
      <h2>Our TLS</h2>
      {!own.certificate && <p class="muted">No [tls] cert_file: plain HTTP on loopback.</p>}
      {certs(own.certificate).map((c) => (
        <p>
          Certificate {c.subject}: <Cert cert={c} />
        </p>
      ))}
      {certs(own.client_ca).map((c) => (
        <p>
          Client CA {c.subject}: <Cert cert={c} />
        </p>
      ))}
      {own.crls.map((f) =>
        (f.crls || []).map((c) => (
          <p class={c.warning ? 'warning' : ''}>
            CRL {f.file}: issued {c.this_update} ({c.age_hours} h ago), next update {c.next_update || '–'}
            {c.warning ? ` · ${c.warning}` : ''}
          </p>
        )),
      )}
    </section>
  );
}

// The real outgoing calls to the peer since start (not the probes): failures of calls, the
// mean and last latency, the last failure.
function Traffic({ traffic }) {
  if (!traffic) return <span class="muted">no calls</span>;
  return (
    <span title={traffic.last_failure ? `${traffic.last_failure.at}: ${traffic.last_failure.error}` : ''}>
      <span class={traffic.failures > 0 ? 'error' : 'ok'}>
        {traffic.failures}/{traffic.calls} failed
      </span>
      , {traffic.mean_latency_ms} ms mean, {traffic.last_latency_ms} ms last
    </span>
  );
}

export function Peers() {
  const [data, setData] = useState(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const load = () => {
    setBusy(true);
    get('/peers')
      .then(setData, (e) => setError(e.message))
      .finally(() => setBusy(false));
  };
  useEffect(load, []);
  return (
    <>
      <h1>
        Peers{' '}
        <button class="small" onClick={load} disabled={busy} data-testid="probe">
          {busy ? 'Probing…' : 'Probe again'}
        </button>
      </h1>
      {error && <p class="error">{error}</p>}
      {data && (
        <p class="muted">
          Probed {data.probe_secs > 0 ? `every ${data.probe_secs} s` : 'on request only'}
          {data.checked_at ? `; last round ${data.checked_at}` : ''}.
        </p>
      )}
      {data && data.warnings.length > 0 && (
        <ul class="warning" data-testid="chain-warnings">
          {data.warnings.map((w) => (
            <li>{w}</li>
          ))}
        </ul>
      )}
      {data && data.peers.length === 0 && <p class="muted">No PACS, remote gateway or consent service configured.</p>}
      {data && data.peers.length > 0 && (
        <table data-testid="peers">
          <thead>
            <tr>
              <th>Kind</th>
              <th>Name</th>
              <th>Address</th>
              <th>Probe</th>
              <th>Latency</th>
              <th>Errors</th>
              <th>Traffic</th>
              <th>Certificate</th>
              <th>Last success</th>
              <th>Last failure</th>
            </tr>
          </thead>
          <tbody>
            {data.peers.map((p) => (
              <tr data-testid="peer" data-ok={p.probe ? String(p.probe.ok) : 'none'}>
                <td>{p.kind}</td>
                <td>{p.name}</td>
                <td class="mono small">{p.address}</td>
                <td class={p.probe && p.probe.ok ? 'ok' : 'error'}>{p.probe ? p.probe.detail : 'no endpoint'}</td>
                <td>{p.probe ? `${p.probe.latency_ms} ms` : ''}</td>
                <td>
                  {p.failures}/{p.probes}
                </td>
                <td class="small" data-testid="traffic">
                  <Traffic traffic={p.traffic} />
                </td>
                <td>
                  <Cert cert={p.certificate} />
                </td>
                <td class="small">{p.log && p.log.last_success}</td>
                <td class="small">
                  {p.log && p.log.last_failure ? `${p.log.last_failure.at}: ${p.log.last_failure.error}` : ''}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {data && <Own own={data.own} />}
    </>
  );
}
