/* mtl studio's page (docs/studio.md). Plain script, no build step: it runs with the CodeMirror
 * bundle (editor.js, window.MtlEditor) or, when that is missing or fails, on the page's own
 * textarea. Every answer about the spec comes from the server's analysis core; this file only
 * shows it. Positions from the server are 1-based lines and columns in characters. */
(function () {
  'use strict';
  document.documentElement.classList.add('js');
  const body = document.body;
  const token = body.dataset.token;
  const $ = (selector, root) => (root || document).querySelector(selector);
  const COLOURS = ['#1f77b4', '#e07b00', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
                   '#7f7f7f', '#bcbd22', '#17becf'];
  const S = { path: body.dataset.path || null, version: 0, saved: '', tasks: [], changedAt: 0 };
  let editor = null;
  let checkTimer = 0;
  let dataTimer = 0;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v);
    }
    for (const c of children.flat()) node.append(c instanceof Node ? c : String(c ?? ''));
    return node;
  }

  async function call(method, url, data) {
    const response = await fetch(url, {
      method, headers: { 'X-Mtl-Token': token, 'Content-Type': 'application/json' },
      body: data === undefined ? undefined : JSON.stringify(data) });
    const json = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(json.error || response.statusText);
    return json;
  }
  const get = (url) => call('GET', url);
  const post = (url, data) => call('POST', url, data);
  const withToken = (url) => url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
  const say = (text) => { $('#status').textContent = text; };

  /* ---- the editor ------------------------------------------------------------------ */

  function textareaEditor(area, onChange) {
    area.addEventListener('input', () => onChange(area.value));
    const offset = (line) => area.value.split('\n').slice(0, line - 1)
      .reduce((n, l) => n + l.length + 1, 0);
    return {
      kind: 'textarea',
      getText: () => area.value,
      setText: (text) => { area.value = text; },
      setDiagnostics: () => {},
      selectLines: (first, last) => {
        const lines = area.value.split('\n');
        const start = offset(first);
        const end = start + lines.slice(first - 1, last).join('\n').length;
        area.focus();
        area.setSelectionRange(start, end);
      },
      focus: () => area.focus(),
    };
  }

  function makeEditor(language) {
    const form = $('#fallback');
    const area = $('#source');
    form.addEventListener('submit', (e) => { e.preventDefault(); save(); });
    if (window.MtlEditor) {
      try {
        const host = el('div', { id: 'cm', class: 'cm-host' });
        const made = window.MtlEditor.create({
          parent: host, doc: area.value, language, onChange: changed, onSave: save,
          hover: (text, line, column) => post('/api/hover', { path: S.path, text, line, column })
            .then((r) => r.markdown).catch(() => null),
          complete: (text, line, column) => post('/api/complete', { path: S.path, text, line, column })
            .catch(() => null),
        });
        form.replaceWith(host);
        body.dataset.editor = 'codemirror';
        return made;
      } catch (err) {
        console.error('the CodeMirror editor failed; the plain textarea stays', err);
      }
    }
    body.dataset.editor = 'textarea';
    return textareaEditor(area, changed);
  }

  function changed() {
    S.version += 1;
    S.changedAt = performance.now();
    setDirty();
    clearTimeout(checkTimer);
    clearTimeout(dataTimer);
    checkTimer = setTimeout(() => check(false), 100);
    dataTimer = setTimeout(() => check(true), 1200);
  }

  function setDirty() {
    const dirty = editor && S.path && editor.getText() !== S.saved;
    $('#save').disabled = !dirty;
    document.title = (dirty ? '● ' : '') + 'mtl studio · ' + (S.path || '');
  }

  async function save() {
    if (!S.path) return;
    const text = editor.getText();
    try {
      await post('/api/spec', { path: S.path, text });
      S.saved = text;
      setDirty();
      say('saved ' + S.path);
    } catch (err) { say('not saved: ' + err.message); throw err; }
  }

  async function open(path) {
    const spec = await get('/api/spec?path=' + encodeURIComponent(path));
    S.path = path;
    S.saved = spec.text;
    editor.setText(spec.text);
    history.replaceState(null, '', withToken('/?path=' + encodeURIComponent(path)));
    changed();
  }

  /* ---- diagnostics, summary, diagram ------------------------------------------------- */

  async function check(data) {
    if (!S.path) return;
    const version = S.version;
    const text = editor.getText();
    let found;
    try {
      found = await post('/api/check', { path: S.path, text, version, data });
    } catch (err) { say('check failed: ' + err.message); return; }
    if (version !== S.version) return; // the text has changed since: a newer check follows
    showDiagnostics(found.diagnostics);
    body.dataset.checkMs = String(Math.round(performance.now() - S.changedAt));
    showSummary(found);
    if (found.ok && !data) drawDiagram(text, version);
    if (!found.ok) $('#diagram').classList.add('stale');
  }

  function showDiagnostics(diagnostics) {
    editor.setDiagnostics(diagnostics);
    const list = $('#diagnostics');
    list.replaceChildren();
    const errors = diagnostics.filter((d) => d.severity === 'error').length;
    say(errors ? `${errors} error${errors > 1 ? 's' : ''}` : 'ok');
    if (!diagnostics.length) list.append(el('li', { class: 'ok' }, 'no diagnostics: ', S.path));
    for (const d of diagnostics) {
      const where = d.span ? `line ${d.span.line}:${d.span.column} ` : '';
      list.append(el('li', {
        class: d.severity, 'data-line': d.span ? d.span.line : '',
        onclick: () => d.span && editor.selectLines(d.span.line, d.span.end_line),
      }, where, el('span', { class: 'code' }, `${d.severity}[${d.code}]`), ' ', d.message,
      d.hint ? el('span', { class: 'hint' }, '= help: ' + d.hint) : ''));
    }
  }

  function showSummary(found) {
    const box = $('#summary');
    if (!found.ok || !found.size) { box.classList.add('stale'); return; }
    box.classList.remove('stale');
    const rows = Object.entries(found.blocks).map(([name, b]) => el('tr', {},
      el('td', {}, name), el('td', {}, b.kind), el('td', { class: 'num' }, b.width ?? '–'),
      el('td', { class: 'num' }, (b.params ?? 0).toLocaleString()),
      el('td', { class: 'num' }, megabytes(found.memory[name])),
      el('td', { class: (b.tasks || []).length > 1 ? 'shared' : '', title: (b.tasks || []).length > 1 ? 'shared' : '' },
        (b.tasks || []).join(', '))));
    box.replaceChildren(el('p', { class: 'total' }, found.size.text),
      el('table', {}, el('thead', {}, el('tr', {}, ...['block', 'kind', 'width', 'params', 'train mem', 'tasks']
        .map((h, i) => el('th', { class: i > 1 && i < 5 ? 'num' : '' }, h)))), el('tbody', {}, rows)));
  }

  const megabytes = (n) => (n === null || n === undefined ? '–' : n < 1e6 ? (n / 1e3).toFixed(1) + ' kB' : (n / 1e6).toFixed(1) + ' MB');

  async function drawDiagram(text, version) {
    let found;
    try { found = await post('/api/diagram', { path: S.path, text, version }); } catch (err) { return; }
    if (version !== S.version) return;
    const box = $('#diagram');
    if (!found.svg) { box.replaceChildren(el('p', { class: 'muted' }, found.reason)); return; }
    box.replaceChildren(parseSvg(found.svg));
    box.classList.remove('stale');
    box.dataset.version = String(version);
    wireDiagram(box, found.nodes);
  }

  function parseSvg(text) {
    const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
    return document.importNode(doc.documentElement, true);
  }

  function wireDiagram(box, nodes) {
    box.querySelectorAll('g.node').forEach((g) => {
      const id = $('title', g).textContent;
      const node = nodes[id];
      if (!node) return;
      g.dataset.node = id;
      g.addEventListener('click', () => {
        box.querySelectorAll('g.picked').forEach((p) => p.classList.remove('picked'));
        g.classList.add('picked');
        if (node.line) editor.selectLines(node.line, node.end_line);
      });
      if (node.kind === 'task') {
        g.addEventListener('mouseenter', () => trace(box, nodes, node.name));
        g.addEventListener('mouseleave', () => box.classList.remove('tracing'));
      }
    });
  }

  function trace(box, nodes, task) {
    const on = new Set(Object.keys(nodes).filter((id) => nodes[id].tasks.includes(task)));
    box.querySelectorAll('g.node').forEach((g) => g.classList.toggle('on', on.has(g.dataset.node)));
    box.querySelectorAll('g.edge').forEach((g) => {
      const [from, to] = $('title', g).textContent.split('->');
      g.classList.toggle('on', on.has(from) && on.has(to));
    });
    box.classList.add('tracing');
  }

  window.MtlStudio = { el, call, get, post, withToken, say, parseSvg, COLOURS, state: S,
                       editor: () => editor };

  /* ---- start ---------------------------------------------------------------------- */

  async function start() {
    const state = await get('/api/state');
    editor = makeEditor(state.language);
    S.saved = editor.getText();
    const select = $('#spec-select');
    for (const spec of state.specs) select.append(el('option', { value: spec, selected: spec === S.path }, spec));
    select.addEventListener('change', () => {
      if (editor.getText() !== S.saved && !confirm('Discard the unsaved changes?')) { select.value = S.path; return; }
      open(select.value);
    });
    $('#save').addEventListener('click', save);
    $('#runs-folder').textContent = state.runs + '/';
    if (!state.graphviz) $('#diagram').replaceChildren(el('p', { class: 'muted' }, "Graphviz's dot is missing: no diagram"));
    if (window.MtlRuns) window.MtlRuns.start(save);
    changed();
  }

  start().catch((err) => say('the studio could not start: ' + err.message));
}());
