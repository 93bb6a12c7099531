// Studies: search by BSN, name (accents and case ignored), date and modality over the cache and
// every source; a study's series with thumbnails, and where the study lives.
import { useEffect, useState } from 'preact/hooks';
import { get, imageUrl, query } from '../api.js';

const MODALITIES = ['', 'CT', 'MR', 'CR', 'DX', 'MG', 'US', 'XA', 'NM', 'PT', 'OT', 'SR', 'KO'];

function dicomDate(d) {
  return d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d;
}

function Thumbnail({ study, series }) {
  const [url, setUrl] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    let made = null;
    let live = true;
    imageUrl(`/studies/${study}/series/${series}/thumbnail`).then(
      (u) => {
        made = u;
        if (live) setUrl(u);
        else URL.revokeObjectURL(u);
      },
      (e) => live && setError(e.message),
    );
    return () => {
      live = false;
      if (made) URL.revokeObjectURL(made);
    };
  }, [study, series]);
  if (error) return <div class="thumb missing" title={error}>no thumbnail</div>;
  if (!url) return <div class="thumb loading">…</div>;
  return <img class="thumb" src={url} alt={`series ${series}`} data-testid="thumbnail" />;
}

function Where({ where }) {
  if (!where) return null;
  return (
    <ul class="where" data-testid="where">
      <li>
        <b>cache</b>: {where.cache_instances} instances
        {where.cache_instances > 0 ? (where.cache_complete ? ' (complete)' : ' (partial)') : ''}
      </li>
      {where.sources.map((s) => (
        <li>
          <b>{s.source}</b>:{' '}
          {s.instances !== null ? `${s.instances} instances` : <span class="error">{s.error}</span>}
        </li>
      ))}
      <li>
        <b>KOS published</b>:{' '}
        {where.kos_published === null ? 'no XDS registry' : where.kos_published ? 'yes' : 'no'}
      </li>
    </ul>
  );
}

function Study({ study, onClose }) {
  const [detail, setDetail] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    setDetail(null);
    get(`/studies/${study.study_instance_uid}`).then(setDetail, (e) => setError(e.message));
  }, [study.study_instance_uid]);
  return (
    <section class="card" data-testid="study-detail">
      <h2>
        {study.patient_name} · {dicomDate(study.study_date)} · {study.study_description}
        <button class="link" onClick={onClose}>
          close
        </button>
      </h2>
      <p class="muted mono">{study.study_instance_uid}</p>
      {error && <p class="error">{error}</p>}
      {!detail && !error && <p class="muted">Loading series…</p>}
      {detail && (
        <>
          <Where where={detail.where} />
          <div class="series">
            {detail.series.map((s) => (
              <figure data-testid="series">
                <Thumbnail study={study.study_instance_uid} series={s.series_instance_uid} />
                <figcaption>
                  {s.modality} #{s.series_number} {s.series_description}
                  {s.instances !== null ? ` · ${s.instances} inst.` : ''}
                </figcaption>
              </figure>
            ))}
          </div>
        </>
      )}
    </section>
  );
}

export function Studies() {
  const [form, setForm] = useState({ bsn: '', name: '', from: '', to: '', modality: '' });
  const [result, setResult] = useState(null);
  const [error, setError] = useState('');
  const [open, setOpen] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  async function search(e) {
    e.preventDefault();
    setBusy(true);
    setError('');
    setOpen(null);
    try {
      setResult(await get(`/studies${query(form)}`));
    } catch (err) {
      setError(err.message);
      setResult(null);
    } finally {
      setBusy(false);
    }
  }
  return (
    <>
      <h1>Studies</h1>
      <form class="row" onSubmit={search} data-testid="study-search">
        <label>
          BSN
          <input name="bsn" value={form.bsn} onInput={set('bsn')} inputmode="numeric" />
        </label>
        <label>
          Name
          <input name="name" value={form.name} onInput={set('name')} placeholder="müller or muller" />
        </label>
        <label>
          From
          <input name="from" type="date" value={form.from} onInput={set('from')} />
        </label>
        <label>
          To
          <input name="to" type="date" value={form.to} onInput={set('to')} />
        </label>
        <label>
          Modality
          <select name="modality" value={form.modality} onChange={set('modality')}>
            {MODALITIES.map((m) => (
              <option value={m}>{m || 'any'}</option>
            ))}
          </select>
        </label>
        <button type="submit" disabled={busy}>
          Search
        </button>
      </form>
      {error && <p class="error">{error}</p>}
      {result && result.unanswered.length > 0 && (
        <p class="warning">Not every source answered: {result.unanswered.join('; ')}</p>
      )}
      {result && (
        <table data-testid="studies">
          <thead>
            <tr>
              <th>Patient</th>
              <th>Patient ID</th>
              <th>Date</th>
              <th>Modalities</th>
              <th>Description</th>
              <th>Series</th>
              <th>Instances</th>
            </tr>
          </thead>
          <tbody>
            {result.studies.length === 0 && (
              <tr>
                <td colspan="7" class="muted">
                  No studies found.
                </td>
              </tr>
            )}
            {result.studies.map((s) => (
              <tr
                class={open && open.study_instance_uid === s.study_instance_uid ? 'selected click' : 'click'}
                onClick={() => setOpen(s)}
                data-testid="study-row"
                data-study={s.study_instance_uid}
                data-modalities={s.modalities.join(',')}
              >
                <td>{s.patient_name}</td>
                <td class="mono">{s.patient_id}</td>
                <td>{dicomDate(s.study_date)}</td>
                <td>{s.modalities.join(', ')}</td>
                <td>{s.study_description}</td>
                <td>{s.series ?? ''}</td>
                <td>{s.instances ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open && <Study study={open} onClose={() => setOpen(null)} />}
    </>
  );
}
