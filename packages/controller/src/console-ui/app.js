/**
 * pgfleet web console (docs/console.md): Preact + htm for the pages (a few KB, no build step of
 * its own beyond the bundle, JSX-free so the source runs as it is written) and uPlot for the
 * charts (canvas, ~50 KB, fast with thousands of points). Everything is bundled by build.mjs into
 * the controller's dist: no CDN, works offline.
 *
 * Every figure comes from POST /api/<AdminService method> (console/server.ts) with the token kept
 * in sessionStorage; pages poll (the fleet every few seconds, a running job every second).
 */
import { h, render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import uPlot from 'uplot';

const html = htm.bind(h);
const TOKEN_KEY = 'pgfleet-console-token';

class ApiError extends Error {
  constructor(status, body) {
    super(`${body.code ?? status}: ${body.message ?? 'request failed'}`);
    this.status = status;
    this.code = body.code;
  }
}

async function api(method, body = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const res = await fetch(`/api/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/**
 * Every row of a paged listing (ListClusters, ListBackups: admin/paging.ts), as one response:
 * { [key]: all rows }.
 */
async function apiAll(method, body, key) {
  const rows = [];
  let pageToken = '';
  do {
    const data = await api(method, { ...body, pageSize: 5000, pageToken });
    rows.push(...(data[key] ?? []));
    pageToken = data.nextPageToken ?? '';
  } while (pageToken);
  return { [key]: rows };
}

/**
 * Calls fn now and every `ms` while the component lives (and again when deps change), until
 * `done(data)` says the figures cannot change any more (a finished job).
 */
function usePoll(fn, deps, ms, done = () => false) {
  const [state, setState] = useState({ data: undefined, error: undefined });
  useEffect(() => {
    let stopped = false;
    let timer;
    const tick = async () => {
      try {
        const data = await fn();
        if (stopped) return;
        setState({ data, error: undefined });
        if (done(data)) return;
      } catch (error) {
        if (!stopped) setState((s) => ({ data: s.data, error }));
      }
      if (!stopped) timer = setTimeout(tick, ms);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, deps);
  return state;
}

// ---- formatting -------------------------------------------------------------------------------

const ms = (ts) => (ts ? Date.parse(ts) : undefined);
function fmtDuration(seconds) {
  if (seconds === undefined || seconds === null || Number.isNaN(seconds)) return '—';
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}
const age = (ts, now) => (ts ? fmtDuration((now - ms(ts)) / 1000) : '—');
function fmtBytes(n) {
  const v = Number(n ?? 0);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = v;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
const shortEnum = (v, prefix) =>
  String(v ?? '')
    .replace(prefix, '')
    .toLowerCase();
const jobState = (j) => shortEnum(j?.state, 'JOB_STATE_');
const isFinal = (j) => ['succeeded', 'failed', 'cancelled'].includes(jobState(j));
const localTime = (t) => new Date(t).toLocaleString();

// ---- fleet page -------------------------------------------------------------------------------

/** green: fine; amber: agent away or nothing known yet; red: an alert or failing archiving. */
function health(c) {
  if ((c.alerts ?? []).length > 0 || c.archiveState === 'failing') return 'bad';
  if (!c.agentConnected) return 'warn';
  if (!c.rpoKnown) return 'unknown';
  return 'ok';
}
const HEALTH_RANK = { bad: 0, warn: 1, unknown: 2, ok: 3 };

function fleetRow(c, now) {
  const pitrFrom = ms(c.pitrFrom);
  return {
    name: c.name,
    health: health(c),
    rpo: c.rpoKnown ? c.rpoSeconds : undefined,
    backupAge: c.lastBackup ? (now - ms(c.lastBackup.stopTime)) / 1000 : undefined,
    pitr: pitrFrom ? (now - pitrFrom) / 1000 : undefined,
    pitrFrom,
    verify: c.lastVerify,
    drill: c.lastDrill,
    alerts: c.alerts ?? [],
  };
}

const COLUMNS = [
  ['name', 'Cluster', (r) => r.name],
  ['health', 'Health', (r) => HEALTH_RANK[r.health]],
  ['rpo', 'RPO now', (r) => r.rpo ?? Infinity],
  ['backup', 'Last backup', (r) => r.backupAge ?? Infinity],
  ['pitr', 'PITR window', (r) => r.pitr ?? -1],
  ['verify', 'Last verify', (r) => (r.verify ? (r.verify.ok ? 1 : 0) : -1)],
  ['drill', 'Last drill RTO', (r) => (r.drill?.ok ? r.drill.rtoSeconds : Infinity)],
  ['alerts', 'Alerts', (r) => r.alerts.length],
];

function FleetPage() {
  const { data, error } = usePoll(() => apiAll('listClusters', {}, 'clusters'), [], 3000);
  const [filter, setFilter] = useState('');
  const [sort, setSort] = useState({ key: 'name', dir: 1 });
  const now = Date.now();
  const rows = (data?.clusters ?? [])
    .map((c) => fleetRow(c, now))
    .filter(
      (r) => !filter || r.name.includes(filter) || r.alerts.some((a) => a.includes(filter)) || r.health === filter,
    );
  const col = COLUMNS.find((c) => c[0] === sort.key);
  rows.sort((a, b) => {
    const x = col[2](a);
    const y = col[2](b);
    return (x < y ? -1 : x > y ? 1 : 0) * sort.dir;
  });
  const by = (key) => setSort((s) => ({ key, dir: s.key === key ? -s.dir : 1 }));
  return html`<h2>Fleet</h2>
    <p>
      <input
        id="filter"
        placeholder="filter: name, alert, ok/warn/bad"
        value=${filter}
        onInput=${(e) => setFilter(e.target.value)}
      />
    </p>
    ${error && html`<p class="error">${error.message}</p>`}
    <table id="fleet">
      <thead>
        <tr>
          ${COLUMNS.map(
            ([key, title]) =>
              html`<th data-sort=${key} onClick=${() => by(key)}>
                ${title}${sort.key === key ? (sort.dir > 0 ? ' ▲' : ' ▼') : ''}
              </th>`,
          )}
        </tr>
      </thead>
      <tbody>
        ${rows.map(
          (r) =>
            html`<tr data-cluster=${r.name}>
              <td data-col="name"><a href=${`#/cluster/${encodeURIComponent(r.name)}`}>${r.name}</a></td>
              <td data-col="health" data-health=${r.health}>
                <span class=${`dot health-${r.health}`}></span>${r.health}
              </td>
              <td data-col="rpo" data-seconds=${r.rpo ?? ''}>${fmtDuration(r.rpo)}</td>
              <td data-col="backup" data-seconds=${r.backupAge ?? ''}>
                ${r.backupAge === undefined ? 'never' : `${fmtDuration(r.backupAge)} ago`}
              </td>
              <td
                data-col="pitr"
                data-from=${r.pitrFrom ?? ''}
                title=${r.pitrFrom ? `${localTime(r.pitrFrom)} → now` : ''}
              >
                ${r.pitr === undefined ? '—' : fmtDuration(r.pitr)}
              </td>
              <td data-col="verify" data-ok=${r.verify ? String(r.verify.ok) : ''}>
                ${r.verify ? `${r.verify.ok ? 'ok' : 'FAILED'} ${age(r.verify.time, now)} ago` : '—'}
              </td>
              <td data-col="drill" data-rto=${r.drill?.ok ? r.drill.rtoSeconds : ''}>
                ${r.drill ? (r.drill.ok ? fmtDuration(r.drill.rtoSeconds) : 'FAILED') : '—'}
              </td>
              <td data-col="alerts">${r.alerts.map((a) => html`<span class="alert">${a}</span>`)}</td>
            </tr>`,
        )}
      </tbody>
    </table>`;
}

// ---- charts -----------------------------------------------------------------------------------

/** A uPlot chart whose data follows the props (created once, data replaced on change). */
function Chart({ id, title, opts, data }) {
  const ref = useRef();
  const plot = useRef();
  useEffect(() => {
    plot.current = new uPlot({ width: 520, height: 220, title, ...opts }, data, ref.current);
    return () => plot.current.destroy();
  }, []);
  useEffect(() => {
    plot.current?.setData(data);
  }, [JSON.stringify(data)]);
  return html`<div class="chart" id=${id} ref=${ref}></div>`;
}

/**
 * The x range from the data itself, at least `minSpan` seconds wide (a lone backup or drill still
 * gets a readable time axis), a little padding on both sides so edge points are not cut.
 */
const timeRangeOf = (minSpan) => (u) => {
  const xs = u.data[0] ?? [];
  const now = Date.now() / 1000;
  let lo = xs.length ? xs[0] : now - minSpan;
  let hi = xs.length ? xs[xs.length - 1] : now;
  if (hi - lo < minSpan) {
    const mid = (lo + hi) / 2;
    lo = mid - minSpan / 2;
    hi = mid + minSpan / 2;
  }
  const pad = (hi - lo) * 0.03;
  return [lo - pad, hi + pad];
};
const timeRange = timeRangeOf(3600);

function BackupChart({ backups }) {
  const xs = backups.map((b) => ms(b.stopTime) / 1000);
  const data = [
    xs,
    backups.map((b) => Number(b.sizeBytes) / 2 ** 20),
    backups.map((b) => (ms(b.stopTime) - ms(b.startTime)) / 1000),
  ];
  return html`<${Chart}
    id="chart-backups"
    title="Backups: size (MiB) and duration (s)"
    data=${data}
    opts=${{
      scales: { x: { time: true, range: timeRange }, s: { auto: true } },
      series: [
        {},
        {
          label: 'size MiB',
          stroke: '#3b5bdb',
          fill: 'rgba(59,91,219,0.35)',
          paths: uPlot.paths.bars({ size: [0.6, 24] }),
        },
        { label: 'duration s', stroke: '#e8590c', scale: 's', points: { size: 8, fill: '#e8590c' }, width: 2 },
      ],
      axes: [{}, { label: 'MiB' }, { side: 1, scale: 's', label: 's', grid: { show: false } }],
    }}
  />`;
}

function RpoChart({ buckets }) {
  const data = [
    buckets.map((b) => ms(b.start) / 1000),
    buckets.map((b) => b.rpoMaxSeconds),
    buckets.map((b) => b.rpoAvgSeconds),
  ];
  return html`<${Chart}
    id="chart-rpo"
    title="RPO over time (s)"
    data=${data}
    opts=${{
      scales: { x: { time: true, range: timeRange } },
      series: [
        {},
        { label: 'max', stroke: '#d13b3b', width: 2, points: { show: buckets.length < 3, size: 8, fill: '#d13b3b' } },
        { label: 'mean', stroke: '#2e9e5b', points: { show: buckets.length < 3, size: 8, fill: '#2e9e5b' } },
      ],
    }}
  />`;
}

/** The recoverable span (oldest backup's consistent point to now) as a band, backups as marks; a click picks a PITR target. */
function PitrChart({ pitrFrom, backups, onPick }) {
  const now = Date.now() / 1000;
  const from = pitrFrom ? ms(pitrFrom) / 1000 : undefined;
  const marks = backups.map((b) => ms(b.stopTime) / 1000);
  const xs = [...new Set([...(from ? [from, now] : [now]), ...marks])].sort((a, b) => a - b);
  const band = xs.map((x) => (from !== undefined && x >= from ? 1 : null));
  const dots = xs.map((x) => (marks.includes(x) ? 1 : null));
  const pick = useRef(onPick);
  pick.current = onPick;
  return html`<${Chart}
    id="chart-pitr"
    title="PITR window (click to pick a restore target)"
    data=${[xs, band, dots]}
    opts=${{
      scales: { x: { time: true, range: timeRangeOf(60) }, y: { range: [0, 1.5] } },
      series: [
        {},
        { label: 'recoverable', stroke: '#2e9e5b', fill: 'rgba(46,158,91,0.3)', width: 2 },
        { label: 'backups', stroke: '#3b5bdb', paths: () => null, points: { show: true, size: 10, fill: '#3b5bdb' } },
      ],
      axes: [{}, { show: false }],
      hooks: {
        init: [
          (u) =>
            u.over.addEventListener('click', () => {
              const t = u.posToVal(u.cursor.left, 'x');
              if (Number.isFinite(t)) pick.current(Math.round(t * 1000));
            }),
        ],
      },
    }}
  />`;
}

function DrillChart({ drills }) {
  const done = drills.filter((d) => d.result && d.finishedAt).reverse();
  const data = [done.map((d) => ms(d.finishedAt) / 1000), done.map((d) => d.result.rtoSeconds ?? 0)];
  return html`<${Chart}
    id="chart-drills"
    title="Drill RTO (s)"
    data=${data}
    opts=${{
      scales: { x: { time: true, range: timeRange } },
      series: [{}, { label: 'RTO s', stroke: '#7048e8', width: 2, points: { show: true, size: 10, fill: '#7048e8' } }],
    }}
  />`;
}

// ---- cluster page -----------------------------------------------------------------------------

function ProgressBar({ job }) {
  const p = job.progress ?? {};
  const total = Number(p.bytesTotal ?? 0);
  const done = Number(p.bytesDone ?? 0);
  const pct = isFinal(job) && jobState(job) === 'succeeded' ? 100 : total > 0 ? Math.min(100, (100 * done) / total) : 0;
  return html`<span class="progress" data-percent=${pct.toFixed(0)}><div style=${`width:${pct}%`}></div></span>
    <span class="muted"> ${p.phase ?? ''} ${total > 0 ? `${fmtBytes(done)} / ${fmtBytes(total)}` : ''}</span>`;
}

function JobsTable({ jobs }) {
  return html`<table id="jobs">
    <thead>
      <tr>
        <th>Job</th>
        <th>Kind</th>
        <th>State</th>
        <th>Progress</th>
        <th>Started</th>
      </tr>
    </thead>
    <tbody>
      ${jobs.map(
        (j) =>
          html`<tr data-job=${j.id} data-state=${jobState(j)}>
            <td><a href=${`#/job/${j.id}`}>${j.id}</a></td>
            <td>${j.kind}</td>
            <td>${jobState(j)}</td>
            <td><${ProgressBar} job=${j} /></td>
            <td>${j.startedAt ? localTime(ms(j.startedAt)) : '—'}</td>
          </tr>`,
      )}
    </tbody>
  </table>`;
}

function RestoreWizard({ cluster, target, setTarget, onStarted, onClose }) {
  const [dir, setDir] = useState('');
  const [error, setError] = useState();
  const submit = async (e) => {
    e.preventDefault();
    try {
      const t = target === 'latest' ? { latest: true } : { time: new Date(target).toISOString() };
      const { job } = await api('startRestore', { cluster, targetDir: dir, target: t });
      onStarted(job);
    } catch (err) {
      setError(err.message);
    }
  };
  return html`<form class="wizard" id="restore-wizard" onSubmit=${submit}>
    <strong>Restore ${cluster}</strong>
    <p>
      Target:
      <select
        id="restore-kind"
        value=${target === 'latest' ? 'latest' : 'time'}
        onChange=${(e) => setTarget(e.target.value === 'latest' ? 'latest' : Date.now())}
      >
        <option value="latest">latest (all archived WAL)</option>
        <option value="time">a point in time</option>
      </select>
      ${
        target !== 'latest' &&
        html` <input
            id="restore-time"
            type="datetime-local"
            step="1"
            value=${toLocalInput(target)}
            data-ms=${target}
            onInput=${(e) => setTarget(Date.parse(e.target.value))}
          />
          <span class="muted"> (or click the PITR chart)</span>`
      }
    </p>
    <p>
      Into directory on the agent's host (empty or absent):
      <input id="restore-dir" size="50" value=${dir} onInput=${(e) => setDir(e.target.value)} />
    </p>
    ${error && html`<p class="error">${error}</p>`}
    <button type="submit" id="restore-start">Start restore</button>
    <button type="button" class="secondary" onClick=${onClose}>Close</button>
  </form>`;
}

function toLocalInput(t) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function Actions({ cluster, allowed, onPickRestore }) {
  const [type, setType] = useState('BACKUP_TYPE_FULL');
  const [error, setError] = useState();
  const start = (method, body) => async () => {
    try {
      const { job } = await api(method, { cluster, ...body });
      location.hash = `#/job/${job.id}`;
    } catch (err) {
      setError(err.message);
    }
  };
  const can = (m) => allowed.includes(m);
  if (!['startBackup', 'startVerify', 'startDrill', 'startRestore'].some(can))
    return html`<p class="muted" id="read-only">read-only: this token's role starts no jobs</p>`;
  return html`<div class="actions" id="actions">
      ${
        can('startBackup') &&
        html`<select id="backup-type" value=${type} onChange=${(e) => setType(e.target.value)}>
            <option value="BACKUP_TYPE_FULL">full</option>
            <option value="BACKUP_TYPE_DIFF">diff</option>
            <option value="BACKUP_TYPE_INCR">incr</option>
          </select>
          <button id="action-backup" onClick=${start('startBackup', { type })}>Backup</button>`
      }
      ${can('startVerify') && html`<button id="action-verify" onClick=${start('startVerify', {})}>Verify</button>`}
      ${can('startDrill') && html`<button id="action-drill" onClick=${start('startDrill', {})}>Drill</button>`}
      ${can('startRestore') && html`<button id="action-restore" onClick=${onPickRestore}>Restore…</button>`}
    </div>
    ${error && html`<p class="error">${error}</p>`}`;
}

function ClusterPage({ name, session }) {
  const { data, error } = usePoll(
    async () => {
      const [clusters, backups, history, drills, events, jobs] = await Promise.all([
        apiAll('listClusters', {}, 'clusters'),
        apiAll('listBackups', { cluster: name }, 'backups'),
        api('getClusterHistory', { cluster: name }),
        api('listDrills', { cluster: name, limit: 50 }),
        api('listEvents', { cluster: name, latest: true, limit: 30 }),
        api('listJobs', { cluster: name, limit: 15 }),
      ]);
      return {
        cluster: (clusters.clusters ?? []).find((c) => c.name === name),
        backups: backups.backups ?? [],
        rpo: history.rpo ?? [],
        drills: drills.drills ?? [],
        events: (events.events ?? []).slice().reverse(),
        jobs: jobs.jobs ?? [],
      };
    },
    [name],
    3000,
  );
  const [restoreTarget, setRestoreTarget] = useState();
  if (!data) return html`<p>${error ? html`<span class="error">${error.message}</span>` : 'loading…'}</p>`;
  const c = data.cluster;
  const allowed = session.allowed;
  const pick = (t) => allowed.includes('startRestore') && setRestoreTarget(t);
  return html`<h2>${name} ${c && html`<span class=${`dot health-${health(c)}`}></span>`}</h2>
    ${error && html`<p class="error">${error.message}</p>`}
    ${
      c &&
      html`<p class="muted">
        ${`RPO ${c.rpoKnown ? fmtDuration(c.rpoSeconds) : '—'} · ${data.backups.length} backups · PITR from ${c.pitrFrom ? localTime(ms(c.pitrFrom)) : '—'} · agent ${c.agentConnected ? 'connected' : 'away'}`}
        ${(c.alerts ?? []).map((a) => html` <span class="alert">${a}</span>`)}
      </p>`
    }
    <${Actions} cluster=${name} allowed=${allowed} onPickRestore=${() => setRestoreTarget('latest')} />
    ${
      restoreTarget !== undefined &&
      html`<${RestoreWizard}
        cluster=${name}
        target=${restoreTarget}
        setTarget=${setRestoreTarget}
        onStarted=${(job) => (location.hash = `#/job/${job.id}`)}
        onClose=${() => setRestoreTarget(undefined)}
      />`
    }
    <div class="charts">
      <${BackupChart} backups=${data.backups} />
      <${RpoChart} buckets=${data.rpo} />
      <${PitrChart} pitrFrom=${c?.pitrFrom} backups=${data.backups} onPick=${pick} />
      <${DrillChart} drills=${data.drills} />
    </div>
    <h3>Jobs</h3>
    <${JobsTable} jobs=${data.jobs} />
    <h3>Backups</h3>
    <table id="backups">
      <thead>
        <tr>
          <th>Label</th>
          <th>Type</th>
          <th>Stopped</th>
          <th>Size</th>
          <th>Stored</th>
          <th>Duration</th>
        </tr>
      </thead>
      <tbody>
        ${data.backups
          .slice()
          .reverse()
          .map(
            (b) =>
              html`<tr data-label=${b.label}>
                <td>${b.label}</td>
                <td>${shortEnum(b.type, 'BACKUP_TYPE_')}</td>
                <td>${localTime(ms(b.stopTime))}</td>
                <td>${fmtBytes(b.sizeBytes)}</td>
                <td>${fmtBytes(b.storedBytes)}</td>
                <td>${fmtDuration((ms(b.stopTime) - ms(b.startTime)) / 1000)}</td>
              </tr>`,
          )}
      </tbody>
    </table>
    <h3>Events</h3>
    <table id="events">
      <tbody>
        ${data.events.map(
          (e) =>
            html`<tr>
              <td>${e.event?.time ? localTime(ms(e.event.time)) : ''}</td>
              <td>${e.event?.kind}</td>
            </tr>`,
        )}
      </tbody>
    </table>`;
}

// ---- job page ---------------------------------------------------------------------------------

function JobPage({ id }) {
  const { data, error } = usePoll(
    () => api('getJob', { id }),
    [id],
    1000,
    (d) => isFinal(d.job),
  );
  const job = data?.job;
  if (!job) return html`<p>${error ? html`<span class="error">${error.message}</span>` : 'loading…'}</p>`;
  const p = job.progress ?? {};
  return html`<h2>Job ${job.id}</h2>
    <p>
      <a href=${`#/cluster/${encodeURIComponent(job.cluster)}`}>${job.cluster}</a> · ${job.kind} · agent ${job.agentId}
    </p>
    <p id="job-state" data-state=${jobState(job)}>State: <strong>${jobState(job)}</strong></p>
    <p id="job-progress" data-phase=${p.phase ?? ''} data-bytes-done=${p.bytesDone ?? '0'}>
      <${ProgressBar} job=${job} />
      ${p.bytesPerSecond ? html` · ${fmtBytes(p.bytesPerSecond)}/s` : ''}
      ${p.etaSeconds ? ` · ETA ${fmtDuration(p.etaSeconds)}` : ''}
      ${p.filesTotal ? ` · files ${p.filesDone ?? 0}/${p.filesTotal}` : ''}
    </p>
    ${p.message && html`<p class="muted">${p.message}</p>`}
    ${job.error && html`<p class="error" id="job-error">${job.error.code}: ${job.error.message}</p>`}
    ${job.backup && html`<p id="job-backup">Backup ${job.backup.label}: ${fmtBytes(job.backup.sizeBytes)}</p>`}
    ${job.drill && html`<p id="job-drill">Drill ${job.drill.ok ? 'ok' : 'failed'}: RTO ${fmtDuration(job.drill.rtoSeconds)}</p>`}`;
}

// ---- shell ------------------------------------------------------------------------------------

function Login({ onDone, error }) {
  const [token, setToken] = useState('');
  const submit = (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, token.trim());
    onDone();
  };
  return html`<form id="login" class="wizard" onSubmit=${submit}>
    <p>
      This controller needs an admin token (<code>pgfleet-controller token create --role viewer|operator|admin</code>).
    </p>
    ${error && html`<p class="error">${error}</p>`}
    <input
      id="token"
      type="password"
      size="60"
      autocomplete="off"
      value=${token}
      onInput=${(e) => setToken(e.target.value)}
    />
    <button type="submit" id="login-submit">Sign in</button>
  </form>`;
}

function useHash() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function App() {
  const [session, setSession] = useState();
  const [loginError, setLoginError] = useState();
  const [attempt, setAttempt] = useState(0);
  const hash = useHash();
  useEffect(() => {
    api('session')
      .then((s) => {
        setSession(s);
        setLoginError(undefined);
      })
      .catch((err) => {
        setSession(null);
        setLoginError(sessionStorage.getItem(TOKEN_KEY) ? err.message : undefined);
      });
  }, [attempt]);
  const signOut = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    setAttempt((n) => n + 1);
  };
  const route = hash.replace(/^#/, '').split('/').filter(Boolean);
  let page;
  if (session === undefined) page = html`<p>loading…</p>`;
  else if (session === null) page = html`<${Login} error=${loginError} onDone=${() => setAttempt((n) => n + 1)} />`;
  else if (route[0] === 'cluster' && route[1])
    page = html`<${ClusterPage} key=${route[1]} name=${decodeURIComponent(route[1])} session=${session} />`;
  else if (route[0] === 'job' && route[1]) page = html`<${JobPage} key=${route[1]} id=${route[1]} />`;
  else page = html`<${FleetPage} />`;
  return html`<header>
      <a href="#/">pgfleet</a>
      <span class="who" id="who" data-role=${session?.role ?? ''}>
        ${session ? `${session.name || 'no token'} · ${session.role}` : ''}
        ${session?.tokens && html` <button class="secondary" onClick=${signOut}>Sign out</button>`}
      </span>
    </header>
    <main>${page}</main>`;
}

render(html`<${App} />`, document.getElementById('app'));
