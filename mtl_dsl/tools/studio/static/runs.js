/* mtl studio's training and runs (docs/studio.md): Train starts a job on the server, whose
 * events (the run folder's metrics.jsonl records, streamed as server-sent events) draw the
 * loss and metric charts and the experts' heat map; the runs table is `mtl runs`'s; the
 * compare view is `mtl compare`'s table of the selected runs, with their curves overlaid.
 * Loaded before studio.js, which calls MtlRuns.start once the page is set up. */
(function () {
  'use strict';
  let M = null; // window.MtlStudio, once studio.js has run
  let refreshTimer = 0;
  const selected = new Set();

  /* ---- charts --------------------------------------------------------------------- */

  function lineChart(title, series, xLabel) {
    const { el, COLOURS } = M;
    const W = 320; const H = 160; const L = 44; const R = 8; const T = 8; const B = 22;
    const points = series.flatMap((s) => s.points);
    const box = el('div', { class: 'chart' }, el('h3', {}, title));
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.dataset.points = String(points.length);
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    add('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' });
    add('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' });
    if (points.length) {
      const xs = points.map((p) => p[0]); const ys = points.map((p) => p[1]);
      const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
      let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
      if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
      const px = (x) => L + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - L - R);
      const py = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
      add('text', { x: L - 4, y: T + 8, 'text-anchor': 'end' }, fmt(y1));
      add('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, fmt(y0));
      add('text', { x: L, y: H - 6 }, fmt(x0));
      add('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, `${fmt(x1)} ${xLabel}`);
      series.forEach((s, i) => {
        if (!s.points.length) return;
        const d = s.points.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ');
        add('polyline', { points: d, class: 'series', stroke: s.colour || COLOURS[i % COLOURS.length] });
        if (s.points.length < 30) {
          s.points.forEach((p) => add('circle', { cx: px(p[0]), cy: py(p[1]), r: 2.2, fill: s.colour || COLOURS[i % COLOURS.length] }));
        }
      });
    }
    box.append(svg, el('div', { class: 'legend' }, series.map((s, i) => el('span', {},
      colourMark(s.colour || COLOURS[i % COLOURS.length]), s.name))));
    return box;
  }

  function colourMark(colour) {
    const mark = M.el('i', {});
    mark.style.background = colour;
    return mark;
  }

  const fmt = (v) => (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(Math.round(v)) : Number(v).toPrecision(3));

  function heatMaps(epochs) {
    const { el } = M;
    const last = epochs.filter((r) => r.experts).slice(-1)[0];
    if (!last) return [];
    return Object.entries(last.experts.gates).map(([gate, info]) => {
      const rows = info.experts.map((expert, i) => el('tr', {}, el('th', {}, expert), epochs
        .filter((r) => r.experts && r.experts.gates[gate]).map((r) => {
          const v = r.experts.gates[gate].mean[i];
          const cell = el('td', { title: `epoch ${r.epoch}: ${expert} mean weight ${v.toFixed(3)}` });
          cell.style.background = `rgba(31, 95, 168, ${Math.min(1, v * info.experts.length / 2).toFixed(3)})`;
          return cell;
        })));
      return el('div', { class: 'heat', 'data-gate': gate },
        el('h3', {}, `gate ${gate}: each expert's mean weight (rows) by epoch (columns)`), el('table', {}, rows));
    });
  }

  /* A run's records drawn as charts; `add` takes each record as it streams in. */
  function RunView(container) {
    const steps = []; const epochs = []; let pending = false;
    const charts = M.el('div', { class: 'charts' });
    container.append(charts);
    function draw() {
      pending = false;
      const tasks = [...new Set(steps.flatMap((r) => Object.keys(r.train_loss || {})))];
      const loss = lineChart('training loss by step', tasks.map((t) => ({
        name: t, points: steps.filter((r) => r.train_loss[t] !== null).map((r) => [r.step, r.train_loss[t]]) })), 'steps');
      loss.classList.add('loss-chart');
      const valTasks = [...new Set(epochs.flatMap((r) => Object.keys(r.val || {})))];
      const metric = (t) => Object.keys((epochs.find((r) => r.val && r.val[t]) || { val: { [t]: {} } }).val[t])
        .find((m) => m !== 'loss') || 'loss';
      const val = lineChart('validation metric by epoch', valTasks.map((t) => ({
        name: `${t}.${metric(t)}`, points: epochs.filter((r) => r.val && r.val[t] && r.val[t][metric(t)] !== null)
          .map((r) => [r.epoch, r.val[t][metric(t)]]) })), 'epochs');
      val.classList.add('metric-chart');
      charts.replaceChildren(loss, val, ...heatMaps(epochs));
    }
    return {
      add(record) {
        if (record.type === 'step') steps.push(record);
        else if (record.type === 'epoch') epochs.push(record);
        else return;
        if (!pending) { pending = true; requestAnimationFrame(draw); }
      },
      draw,
    };
  }

  /* ---- jobs ----------------------------------------------------------------------- */

  function jobCard(job) {
    const { el, withToken } = M;
    const name = el('span', { class: 'name' }, job.run || `${job.spec} (starting)`);
    const state = el('span', { class: 'state' }, job.state);
    const stop = el('button', { type: 'button', class: 'stop', onclick: () => M.post(`/api/jobs/${job.id}/stop`).catch(() => {}) }, 'Stop');
    const output = el('pre', { class: 'output', hidden: true });
    const card = el('div', { class: 'card', 'data-job': job.id }, el('header', {}, name, state, stop), output);
    const jobs = document.getElementById('jobs');
    if (!jobs.querySelector('.card')) jobs.replaceChildren();
    jobs.prepend(card);
    const view = RunView(card);
    view.draw();
    const events = new EventSource(withToken(`/api/jobs/${job.id}/events`));
    events.addEventListener('record', (e) => view.add(JSON.parse(e.data)));
    events.addEventListener('job', (e) => {
      const now = JSON.parse(e.data);
      if (now.run) { name.textContent = now.run; card.dataset.run = now.run; }
      state.textContent = now.stopping && now.state === 'running' ? 'stopping (saving its state)' : now.state;
      card.dataset.state = now.state;
      refreshRuns();
      if (now.state !== 'running') {
        events.close();
        stop.remove();
        if (now.state === 'failed' || now.returncode === 1 || now.returncode === 2) {
          output.hidden = false;
          output.textContent = now.output.join('\n');
        }
      }
    });
    events.addEventListener('status', () => refreshRuns());
  }

  async function train(save, resume) {
    const S = M.state;
    if (!S.path) return;
    try {
      if (M.editor().getText() !== S.saved) await save();
      jobCard(await M.post('/api/train', resume ? { path: S.path, resume } : { path: S.path }));
      M.say(resume ? `resuming ${resume}` : `training ${S.path}`);
    } catch (err) { M.say('not started: ' + err.message); }
  }

  /* ---- the runs table ------------------------------------------------------------- */

  const duration = (s) => {
    if (s === null || s === undefined) return '-';
    const m = Math.floor(s / 60);
    return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${String(Math.floor(s % 60)).padStart(2, '0')}`
      : `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
  };
  const size = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`);
  const best = (r) => {
    const parts = Object.entries(r.best || {}).flatMap(([t, ms]) => Object.entries(ms)
      .filter(([k, v]) => k !== 'loss' && typeof v === 'number').map(([k, v]) => `${t}.${k}=${v.toPrecision(4)}`));
    return parts.length ? (r.best_epoch !== null && r.best_epoch !== undefined ? `@${r.best_epoch} ` : '') + parts.join('  ') : '-';
  };

  async function refreshRuns() {
    const { el } = M;
    let rows;
    try { rows = await M.get('/api/runs'); } catch (err) { return; }
    const body = document.querySelector('#runs tbody');
    body.replaceChildren(...rows.map((r) => el('tr', { 'data-run': r.name },
      el('td', {}, el('input', { type: 'checkbox', checked: selected.has(r.name), 'aria-label': 'select ' + r.name,
        onchange: (e) => { e.target.checked ? selected.add(r.name) : selected.delete(r.name); compareButton(); } })),
      el('td', {}, el('a', { href: '#', onclick: (e) => { e.preventDefault(); showRun(r.name); } }, r.name)),
      el('td', { class: 'status-' + r.status, title: r.error || '' }, r.status),
      el('td', { class: 'num' }, r.epochs_done === null ? '-' : r.epochs ? `${r.epochs_done}/${r.epochs}` : r.epochs_done),
      el('td', {}, best(r)), el('td', { class: 'num' }, duration(r.seconds)), el('td', { class: 'num' }, size(r.bytes)),
      el('td', {}, !r.job && ['interrupted', 'killed', 'failed'].includes(r.status)
        ? el('button', { type: 'button', onclick: () => train(M.save, r.name) }, 'Resume') : ''))));
    compareButton();
    clearTimeout(refreshTimer);
    if (rows.some((r) => r.status === 'running')) refreshTimer = setTimeout(refreshRuns, 2000);
  }

  function compareButton() {
    document.getElementById('compare').disabled = selected.size < 2;
  }

  /* ---- a run, and the compare view -------------------------------------------------- */

  async function showRun(name) {
    const { el, withToken } = M;
    const detail = document.getElementById('detail');
    const run = await M.get('/api/runs/' + encodeURIComponent(name));
    const diagram = el('div', { class: 'diagram' });
    if (run.diagram.svg) diagram.append(M.parseSvg(run.diagram.svg));
    const images = run.files.filter((f) => f.endsWith('.png')).map((f) => el('img', {
      src: withToken(`/api/runs/${encodeURIComponent(name)}/files/${f}`), alt: `${name} ${f}` }));
    const card = el('div', { class: 'card', 'data-detail': name }, el('header', {}, el('span', { class: 'name' }, name)));
    detail.replaceChildren(card);
    const view = RunView(card);
    run.records.forEach((r) => view.add(r));
    view.draw();
    card.append(el('div', { class: 'charts' }, diagram), ...images);
    if (run.job) {
      const events = new EventSource(withToken(`/api/runs/${encodeURIComponent(name)}/events`));
      let seen = run.records.length;
      events.addEventListener('record', (e) => { if (seen > 0) { seen -= 1; return; } view.add(JSON.parse(e.data)); });
      events.addEventListener('end', () => events.close());
    }
  }

  async function compare() {
    const { el } = M;
    const names = [...selected];
    const detail = document.getElementById('detail');
    let table;
    try { table = await M.post('/api/compare', { runs: names }); } catch (err) { M.say(err.message); return; }
    const tasks = Object.keys(table.primary);
    const head = el('tr', {}, el('th', {}, 'arm'), el('th', {}, 'runs'), el('th', {}, 'seeds'),
      tasks.map((t) => el('th', { class: 'num' }, `${t} ${table.primary[t]}`)),
      tasks.map((t) => el('th', { class: 'num' }, `Δ ${t} %`)));
    const rows = table.arms.map((a) => el('tr', {}, el('td', {}, a.label), el('td', { class: 'num' }, a.runs.length),
      el('td', {}, a.seeds.join(', ')),
      tasks.map((t) => el('td', { class: 'num' }, ((a.metrics[t] || {})[table.primary[t]]) || '-')),
      tasks.map((t) => {
        const d = a.delta[t];
        return el('td', { class: 'num' + (d && d.flag ? ' flag-' + d.flag : '') }, d ? d.text + (d.flag ? ` (${d.flag})` : '') : '');
      })));
    const runs = await Promise.all(names.map((n) => M.get('/api/runs/' + encodeURIComponent(n))));
    const curves = tasks.map((t) => lineChart(`${t}.${table.primary[t]} by epoch`, runs.map((r) => ({
      name: r.name, points: r.records.filter((x) => x.type === 'epoch' && x.val && x.val[t] && x.val[t][table.primary[t]] !== null)
        .map((x) => [x.epoch, x.val[t][table.primary[t]]]) })), 'epochs'));
    detail.replaceChildren(el('div', { class: 'card compare' },
      el('header', {}, el('span', { class: 'name' }, `compare: ${names.length} runs`)),
      el('table', {}, el('thead', {}, head), el('tbody', {}, rows)),
      el('p', { class: 'muted' }, `Δ against ${table.reference}, paired by seed. ${table.rule}`),
      el('div', { class: 'charts' }, curves)));
  }

  window.MtlRuns = {
    start(save) {
      M = window.MtlStudio;
      M.save = save;
      document.getElementById('train').addEventListener('click', () => train(save));
      document.getElementById('compare').addEventListener('click', compare);
      refreshRuns();
    },
    RunView, lineChart,
  };
}());
