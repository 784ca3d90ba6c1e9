// The Fleet console: a list of requests and a page per request, drawn from the HTTP API
// beside it (the same calls a client makes, with the same token) and refreshed every few
// seconds. No dependency, no build step: this file is served as it is.
'use strict';

(() => {
  const POLL_MS = 3000;
  const TOKEN_KEY = 'fleet.api.token';
  const JOB_STATES = ['PENDING', 'RUNNING', 'RETRYING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];
  const REQUEST_STATES = ['RUNNING', 'FINISHED', 'FAILED', 'CANCELLED'];
  const PAGE = 20;
  const FAILURES_PAGE = 25;

  let timer = null;
  let generation = 0;
  // The requests list: its filter and the cursors of the pages before the one shown.
  const list = { state: '', cursors: [null], page: 0 };

  const $ = (id) => document.getElementById(id);

  // An element with attributes (`on*` functions become listeners) and children.
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    return fill(el, attrs, kids);
  }

  function s(tag, attrs, ...kids) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    return fill(el, attrs, kids);
  }

  function fill(el, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // One API call: JSON in and out, the token as a bearer token. A 401 asks for the token.
  async function api(path, options = {}) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = 'Bearer ' + token;
    let body;
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(options.body);
    }
    const r = await fetch(path, {
      method: options.method || 'GET',
      headers,
      body,
      credentials: 'omit',
      cache: 'no-store',
    });
    let data = null;
    try {
      data = await r.json();
    } catch (_) {
      data = null;
    }
    const err = (data && data.error) || {};
    if (r.status === 401) {
      askToken(token ? 'The API refused this token: ' + (err.message || 'unauthorized') : '');
      throw new ApiError(401, 'unauthorized', err.message || 'the API needs its token');
    }
    if (!r.ok) {
      throw new ApiError(r.status, err.code || 'error', err.message || 'HTTP ' + r.status);
    }
    return data;
  }

  // ---- the token ----

  function askToken(message) {
    stopPolling();
    $('main').hidden = true;
    $('token').hidden = false;
    $('token-error').textContent = message || '';
    $('token-input').focus();
  }

  function tokenGiven(ev) {
    ev.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('token-input').value = '';
    $('token').hidden = true;
    $('main').hidden = false;
    route();
  }

  // ---- formatting ----

  const pad = (n) => String(n).padStart(2, '0');

  function time(ms) {
    if (!ms) return '–';
    const d = new Date(ms);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
  }

  function duration(secs) {
    if (!isFinite(secs) || secs < 0) return '–';
    secs = Math.round(secs);
    if (secs < 60) return `${secs} s`;
    const m = Math.floor(secs / 60);
    if (m < 60) return `${m} min ${pad(secs % 60)} s`;
    const hours = Math.floor(m / 60);
    return `${hours} h ${pad(m % 60)} min`;
  }

  function usd(cost) {
    if (!cost) return '–';
    const x = cost.total_usd;
    return '$' + (x < 0.01 ? x.toFixed(5) : x.toFixed(2));
  }

  const number = (n) => (n === undefined || n === null ? '–' : Number(n).toLocaleString('en-US'));

  function finished(st) {
    const c = st.states || {};
    return (c.SUCCEEDED || 0) + (c.FAILED || 0) + (c.CANCELLED || 0);
  }

  // Jobs finished per second since it was submitted, and the time left at that pace.
  function pace(st) {
    const done = finished(st);
    if (!st.created_at_ms) return { rate: null, eta: null };
    const end = st.finished_at_ms || (st.state === 'RUNNING' ? Date.now() : st.cancelled_at_ms || Date.now());
    const secs = Math.max((end - st.created_at_ms) / 1000, 0.001);
    const rate = done / secs;
    const left = st.total - done;
    const eta = st.state === 'RUNNING' && rate > 0 ? left / rate : null;
    return { rate, eta };
  }

  function percent(st) {
    return st.total > 0 ? Math.floor((100 * finished(st)) / st.total) : 0;
  }

  function stateBadge(state) {
    return h('span', { class: `state state-${state}` }, state);
  }

  function progressBar(st, label) {
    const p = percent(st);
    const bar = h('span', { class: 'fill' });
    bar.style.width = p + '%';
    return h('div', { class: 'progress' },
      h('div', {
        class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
        'aria-valuenow': p, 'aria-label': label || 'progress',
      }, bar),
      h('span', { class: 'pct', 'data-percent': p }, p + '%'));
  }

  function notice(text) {
    $('notice').textContent = text || '';
  }

  function updated() {
    $('updated').textContent = 'updated ' + time(Date.now()).slice(11);
  }

  // ---- views ----

  function stopPolling() {
    if (timer) clearInterval(timer);
    timer = null;
  }

  function poll(fn) {
    stopPolling();
    const mine = generation;
    const tick = async () => {
      if (mine !== generation) return;
      try {
        await fn();
        if (mine === generation) {
          notice('');
          updated();
        }
      } catch (e) {
        if (mine === generation && e.status !== 401) notice('Could not refresh: ' + e.message);
      }
    };
    tick();
    timer = setInterval(tick, POLL_MS);
  }

  function route() {
    generation += 1;
    notice('');
    if (!$('token').hidden) return;
    const m = location.hash.match(/^#\/requests\/([^/?#]+)$/);
    if (m) requestPage(decodeURIComponent(m[1]));
    else listPage();
  }

  // The requests list: newest first, filtered by state, a page at a time.
  function listPage() {
    const main = $('main');
    const filter = h('select', {
      id: 'state-filter',
      onchange: (ev) => {
        list.state = ev.target.value;
        list.cursors = [null];
        list.page = 0;
        refresh();
      },
    }, h('option', { value: '' }, 'All states'),
    REQUEST_STATES.map((st) => h('option', { value: st, selected: list.state === st }, st)));
    const body = h('tbody', { id: 'requests-body' });
    const newer = h('button', {
      id: 'newer', type: 'button',
      onclick: () => { list.page -= 1; refresh(); },
    }, '← Newer');
    const older = h('button', {
      id: 'older', type: 'button',
      onclick: () => { list.page += 1; refresh(); },
    }, 'Older →');
    main.replaceChildren(
      h('h1', {}, 'Requests'),
      h('div', { class: 'filters' }, h('label', { for: 'state-filter' }, 'State'), filter),
      h('div', { class: 'scroll' },
        h('table', { class: 'requests', id: 'requests' },
          h('thead', {}, h('tr', {},
            ['Request', 'Tenant', 'Job type', 'State', 'Progress', 'Jobs/s', 'ETA', 'Started', 'Cost']
              .map((c) => h('th', { scope: 'col' }, c)))),
          body)),
      h('nav', { class: 'pager', 'aria-label': 'pages' }, newer, older));
    const refresh = async () => {
      const q = new URLSearchParams({ limit: PAGE });
      if (list.state) q.set('state', list.state);
      const cursor = list.cursors[list.page];
      if (cursor) q.set('cursor', cursor);
      const page = await api('/v1/requests?' + q);
      list.cursors[list.page + 1] = page.next || undefined;
      newer.disabled = list.page === 0;
      older.disabled = !page.next;
      const rows = page.requests.map((st) => {
        const { rate, eta } = pace(st);
        return h('tr', { 'data-request': st.request_id, 'data-state': st.state },
          h('td', {}, h('a', { href: '#/requests/' + encodeURIComponent(st.request_id) }, st.request_id)),
          h('td', {}, st.tenant),
          h('td', {}, st.job_type || '–'),
          h('td', {}, stateBadge(st.state)),
          h('td', {}, progressBar(st, 'progress of ' + st.request_id)),
          h('td', { class: 'num' }, rate === null ? '–' : rate.toFixed(1)),
          h('td', { class: 'num' }, eta === null ? '–' : duration(eta)),
          h('td', { class: 'num' }, time(st.created_at_ms)),
          h('td', { class: 'num' }, usd(st.cost)));
      });
      if (!rows.length) {
        rows.push(h('tr', {}, h('td', { colspan: 9, class: 'muted' },
          list.state ? `No ${list.state} requests.` : 'No requests yet.')));
      }
      body.replaceChildren(...rows);
    };
    poll(refresh);
  }

  // One request: its counts, pace, cost, chart, failures and actions.
  function requestPage(id) {
    const base = '/v1/requests/' + encodeURIComponent(id);
    const main = $('main');
    const failures = { cursors: [null], page: 0 };
    const title = h('h1', { id: 'request-title' }, id, ' ');
    const badge = h('span', { id: 'request-state' });
    title.append(badge);
    const summary = h('div', { class: 'cards', id: 'summary' });
    const chart = h('div', { class: 'chart', id: 'chart' });
    const failBody = h('tbody', { id: 'failures-body' });
    const failPrev = h('button', {
      type: 'button', id: 'failures-prev',
      onclick: () => { failures.page -= 1; refresh(); },
    }, '← Previous');
    const failNext = h('button', {
      type: 'button', id: 'failures-next',
      onclick: () => { failures.page += 1; refresh(); },
    }, 'Next →');
    const result = h('p', { id: 'action-result', class: 'action-result', role: 'status' });
    const stopRunning = h('input', { type: 'checkbox', id: 'stop-running' });
    const limitInput = h('input', {
      type: 'number', id: 'limit-input', min: 1, step: 1, inputmode: 'numeric',
      'aria-describedby': 'limit-help',
    });
    const cancelButton = h('button', {
      type: 'button', id: 'cancel', class: 'danger',
      onclick: () => act(
        'Cancel this request?',
        `Request ${id}: jobs not started will not start` +
          (stopRunning.checked ? ', and running jobs are stopped.' : '; running jobs finish.'),
        () => api(`${base}/cancel?stop_running=${stopRunning.checked}`, { method: 'POST' }),
        (r) => `Cancelled at ${time(r.cancelled_at_ms)}.`),
    }, 'Cancel request');
    const redriveButton = h('button', {
      type: 'button', id: 'redrive',
      onclick: () => act(
        'Redrive the failed jobs?',
        `Every FAILED job of ${id} gets more attempts and is queued again.`,
        () => api(`${base}/redrive`, { method: 'POST', body: {} }),
        (r) => `Redriven: ${r.redriven} job(s)` +
          (r.skipped && r.skipped.length ? `; ${r.skipped.length} skipped.` : '.')),
    }, 'Redrive failures');
    const limitButton = h('button', {
      type: 'button', id: 'limit',
      onclick: () => {
        const n = Number(limitInput.value);
        if (!Number.isInteger(n) || n < 1) {
          showResult('Give max_concurrency as a whole number of at least 1.', true);
          limitInput.focus();
          return;
        }
        act('Change max_concurrency?',
          `Request ${id} runs at most ${n} job(s) at a time from now.`,
          () => api(`${base}/limit`, { method: 'POST', body: { max_concurrency: n } }),
          (r) => `max_concurrency is ${r.max_concurrency}.`);
      },
    }, 'Set limit');

    function showResult(text, isError) {
      result.textContent = text;
      result.className = 'action-result' + (isError ? ' error' : ' ok');
      result.setAttribute('role', isError ? 'alert' : 'status');
    }

    async function act(question, detail, call, done) {
      if (!(await confirmAction(question, detail))) return;
      try {
        const r = await call();
        showResult(done(r), false);
        await refresh();
      } catch (e) {
        showResult(`Refused (${e.status} ${e.code}): ${e.message}`, true);
      }
    }

    main.replaceChildren(
      h('nav', { class: 'crumbs', 'aria-label': 'breadcrumb' },
        h('a', { href: '#/' }, 'Requests'), ' › ', id),
      title,
      summary,
      h('section', { class: 'card wide', 'aria-labelledby': 'chart-title' },
        h('h2', { id: 'chart-title' }, 'Throughput'), chart),
      h('section', { class: 'card wide actions', 'aria-labelledby': 'actions-title' },
        h('h2', { id: 'actions-title' }, 'Actions'),
        h('div', { class: 'action-row' }, cancelButton,
          h('label', { for: 'stop-running', class: 'check' }, stopRunning, ' also stop running jobs')),
        h('div', { class: 'action-row' }, redriveButton),
        h('div', { class: 'action-row' },
          h('label', { for: 'limit-input' }, 'max_concurrency'), limitInput, limitButton,
          h('span', { id: 'limit-help', class: 'muted' }, 'windowed requests only')),
        result),
      h('section', { class: 'card wide', 'aria-labelledby': 'failures-title' },
        h('h2', { id: 'failures-title' }, 'Failures'),
        h('div', { class: 'scroll' },
          h('table', { class: 'failures', id: 'failures' },
            h('thead', {}, h('tr', {},
              ['Job', 'Attempts', 'Error class', 'Message', 'Last target']
                .map((c) => h('th', { scope: 'col' }, c)))),
            failBody)),
        h('nav', { class: 'pager', 'aria-label': 'failure pages' }, failPrev, failNext)));

    const refresh = async () => {
      const q = new URLSearchParams({ limit: FAILURES_PAGE });
      const cursor = failures.cursors[failures.page];
      if (cursor) q.set('cursor', cursor);
      const [st, tp, fl] = await Promise.all([
        api(base), api(base + '/throughput'), api(`${base}/failures?${q}`),
      ]);
      badge.replaceChildren(stateBadge(st.state));
      const running = st.state === 'RUNNING';
      cancelButton.disabled = !running;
      stopRunning.disabled = !running;
      redriveButton.disabled = running || !(st.states.FAILED > 0) || st.cancelled_at_ms !== undefined;
      limitButton.disabled = !running || st.max_concurrency === undefined;
      limitInput.disabled = limitButton.disabled;
      if (limitInput.disabled || document.activeElement !== limitInput) {
        limitInput.placeholder = st.max_concurrency === undefined ? 'none' : String(st.max_concurrency);
      }
      summary.replaceChildren(...summaryCards(st));
      chart.replaceChildren(throughputChart(tp, st));
      failures.cursors[failures.page + 1] = fl.next || undefined;
      failPrev.disabled = failures.page === 0;
      failNext.disabled = !fl.next;
      const rows = fl.failures.map((f) => h('tr', { 'data-job': f.job_id },
        h('td', { class: 'mono' }, f.job_id),
        h('td', { class: 'num' }, f.attempts),
        h('td', {}, f.error_class || '–'),
        h('td', { class: 'message' }, f.error || '–'),
        h('td', {}, f.last_target || '–')));
      if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No failed jobs.')));
      failBody.replaceChildren(...rows);
    };
    poll(refresh);
  }

  function summaryCards(st) {
    const { rate, eta } = pace(st);
    const dl = (pairs) => h('dl', {}, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    const counts = h('dl', { class: 'counts', id: 'counts' },
      JOB_STATES.map((state) => [
        h('dt', {}, state),
        h('dd', { 'data-state': state, class: 'num' }, number(st.states[state] || 0)),
      ]));
    const targets = st.attempts_by_target || { lambda: 0, ecs: 0 };
    const all = targets.lambda + targets.ecs;
    const split = h('div', { class: 'split', role: 'img',
      'aria-label': `Lambda ${targets.lambda} attempts, ECS ${targets.ecs} attempts` });
    const lambda = h('span', { class: 'lambda' });
    lambda.style.width = (all ? (100 * targets.lambda) / all : 0) + '%';
    const ecs = h('span', { class: 'ecs' });
    ecs.style.width = (all ? (100 * targets.ecs) / all : 0) + '%';
    split.append(lambda, ecs);
    const manifest = st.results
      ? h('a', { href: s3Console(st.results), rel: 'noopener noreferrer', target: '_blank', id: 'manifest' }, st.results)
      : 'not exported';
    return [
      h('section', { class: 'card', 'aria-labelledby': 'progress-title' },
        h('h2', { id: 'progress-title' }, 'Progress'),
        progressBar(st, 'progress'),
        h('p', { class: 'muted' }, `${number(finished(st))} of ${number(st.total)} jobs finished · ${number(st.attempts)} attempts`),
        counts),
      h('section', { class: 'card', 'aria-labelledby': 'pace-title' },
        h('h2', { id: 'pace-title' }, 'Pace and cost'),
        dl([
          ['Jobs/s', rate === null ? '–' : rate.toFixed(1)],
          ['ETA', eta === null ? '–' : duration(eta)],
          ['Started', time(st.created_at_ms)],
          ['Finished', time(st.finished_at_ms)],
          ['Cost', st.cost ? `${usd(st.cost)} (compute $${st.cost.compute_usd.toFixed(5)}, requests $${st.cost.requests_usd.toFixed(5)})` : '–'],
          ['Prices', st.cost ? st.cost.prices : '–'],
        ]),
        h('p', { class: 'legend' },
          h('span', { class: 'key lambda' }), ` Lambda ${number(targets.lambda)} `,
          h('span', { class: 'key ecs' }), ` ECS ${number(targets.ecs)} attempts`),
        split),
      h('section', { class: 'card', 'aria-labelledby': 'settings-title' },
        h('h2', { id: 'settings-title' }, 'Settings'),
        dl([
          ['Tenant', st.tenant],
          ['Job type', st.job_type || '–'],
          ['max_concurrency', st.max_concurrency === undefined ? 'none (all released)' : number(st.max_concurrency)],
          ['Released', st.released === undefined ? 'all' : number(st.released)],
          ['Tolerated failures', st.tolerated_failures === undefined ? 'any' : number(st.tolerated_failures)],
          ['Failed as a whole', st.failed ? `${time(st.failed.at_ms)}: ${st.failed.reason}` : 'no'],
          ['Cancelled', time(st.cancelled_at_ms)],
          ['Results', manifest],
        ])),
    ];
  }

  // `s3://bucket/key` as the address of the object in the AWS console.
  function s3Console(uri) {
    const m = uri.match(/^s3:\/\/([^/]+)\/(.*)$/);
    if (!m) return '#';
    return `https://s3.console.aws.amazon.com/s3/object/${encodeURIComponent(m[1])}?prefix=${encodeURIComponent(m[2])}`;
  }

  // Jobs finished per second in each bucket, succeeded below failed, as an inline SVG.
  function throughputChart(tp, st) {
    const W = 800, H = 200, L = 48, B = 24, T = 10, R = 10;
    const points = tp.points || [];
    const bucket = tp.bucket_ms || 10000;
    if (!points.length) {
      return h('p', { class: 'muted chart-empty' }, 'No finished jobs recorded yet.');
    }
    const first = points[0].at_ms;
    const lastAt = Math.max(points[points.length - 1].at_ms,
      st.state === 'RUNNING' ? Date.now() - (Date.now() % bucket) : 0);
    const n = Math.max(Math.round((lastAt - first) / bucket) + 1, 1);
    const perSec = (c) => c / (bucket / 1000);
    const peak = Math.max(...points.map((p) => perSec(p.succeeded + p.failed)), 0.1);
    const x = (at) => L + ((at - first) / bucket) * ((W - L - R) / n);
    const bw = Math.max((W - L - R) / n - 1, 1);
    const y = (v) => T + (H - T - B) * (1 - v / peak);
    const bars = [];
    for (const p of points) {
      const ok = perSec(p.succeeded), bad = perSec(p.failed);
      bars.push(s('rect', { class: 'ok', x: x(p.at_ms), y: y(ok), width: bw, height: y(0) - y(ok) },
        s('title', {}, `${time(p.at_ms)}: ${p.succeeded} succeeded, ${p.failed} failed`)));
      if (bad > 0) {
        bars.push(s('rect', { class: 'bad', x: x(p.at_ms), y: y(ok + bad), width: bw, height: y(ok) - y(ok + bad) }));
      }
    }
    const label = `Throughput: peak ${peak.toFixed(1)} jobs/s over ${duration((lastAt + bucket - first) / 1000)}`;
    return s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'throughput' },
      s('title', {}, label),
      s('line', { class: 'axis', x1: L, y1: y(0), x2: W - R, y2: y(0) }),
      s('line', { class: 'axis', x1: L, y1: T, x2: L, y2: y(0) }),
      s('text', { x: L - 6, y: T + 10, 'text-anchor': 'end' }, peak.toFixed(1)),
      s('text', { x: L - 6, y: y(0), 'text-anchor': 'end' }, '0'),
      s('text', { x: 4, y: T + 26 }, 'jobs/s'),
      s('text', { x: L, y: H - 6 }, time(first).slice(11)),
      s('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, time(lastAt + bucket).slice(11)),
      bars);
  }

  // Asks before an action; true when confirmed. Escape or "Keep as is" answers no.
  function confirmAction(question, detail) {
    const dialog = $('confirm');
    $('confirm-title').textContent = question;
    $('confirm-text').textContent = detail;
    return new Promise((resolve) => {
      const answer = (yes) => {
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(yes);
      };
      $('confirm-form').onsubmit = (ev) => { ev.preventDefault(); answer(true); };
      $('confirm-no').onclick = () => answer(false);
      dialog.onclose = () => resolve(false);
      dialog.showModal();
      $('confirm-no').focus();
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('token-form').addEventListener('submit', tokenGiven);
    window.addEventListener('hashchange', route);
    route();
  });
})();
