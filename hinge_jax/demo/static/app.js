// The demo page: draws the plane, the table and the chart, and edits the problem. Every
// loss, score of a point, gradient step and accuracy comes from the server (hinge_jax);
// the page only draws. Plain JS, no build step, no external files.
'use strict';

(() => {
  const VIEW = 2;  // the plane shows [-VIEW, VIEW]²
  const COLORS = ['#d43d3a', '#2e8b2e', '#2f62d0'];
  const REGIONS = [[248, 212, 210], [210, 238, 206], [208, 222, 250]];
  const HISTORY = 400;  // steps the chart keeps
  const MAX_POINTS = 1024;  // the server's limit (schema.MAX_POINTS)
  const REG_OFF = -5;  // the λ slider's leftmost position means λ = 0
  const $ = (id) => document.getElementById(id);

  const state = {
    W: [[1, 2], [2, -4], [3, -1]], b: [0, 0.5, -0.5],
    points: [], labels: [],
    loss: 'multiclass_svm', squared: false, margin: 1, reg: 0.1, lr: 0.1,
    origin: null, steps: 0, history: [], report: null, reportVersion: -1,
    version: 0, invalid: new Set(), running: false, busy: false,
    updates: 0, requests: 0,
  };

  // ------------------------------------------------------------------------ the server

  async function post(name, body) {
    state.requests++;
    const response = await fetch('/api/' + name, {
      method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body),
    });
    let data;
    try {
      data = await response.json();
    } catch (e) {
      throw new Error(`the server answered ${response.status} without JSON`);
    }
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function problem(W = state.W, b = state.b) {
    return {W, b, points: state.points, labels: state.labels, loss: state.loss,
            squared: state.squared, margin: state.margin, reg: state.reg, lr: state.lr};
  }

  // Why a step is refused now ('' when it is not).
  function cannotTrain() {
    if (state.invalid.size) return 'Fix the field marked in red first: its value is not used.';
    if (!state.points.length) return 'No points: click the plane to add some, or load a data set.';
    const classes = new Set(state.labels);
    if (classes.size < 2) {
      return `All points are of class ${state.labels[0]}: add points of another class to train.`;
    }
    return '';
  }

  // Anything but a step changed the problem: training restarts from here (the export's W0).
  function changed() {
    state.version++;
    state.origin = {W: state.W.map((r) => r.slice()), b: state.b.slice()};
    state.steps = 0;
    drawPlane();
    updateStatus();
    refresh();
  }

  let evalPending = false, evalBusy = false;
  function refresh() {
    evalPending = true;
    if (!evalBusy) pumpEvaluate();
  }

  async function pumpEvaluate() {
    evalBusy = true;
    while (evalPending) {
      evalPending = false;
      const version = state.version, updates = state.updates;
      try {
        const report = await post('evaluate', problem());
        if (version === state.version && updates === state.updates) {  // no edit, no step since
          state.report = report;
          state.reportVersion = version;
          render();
        }
      } catch (e) {
        setStatus(e.message, true);
      }
    }
    evalBusy = false;
  }

  // One step at a time: each step starts from the previous one's W (a click while a step is
  // under way does nothing), so the steps counted are the steps taken (the export relies on it).
  async function stepOnce() {
    if (state.busy) return true;
    const why = cannotTrain();
    if (why) {
      setStatus(why, true);
      return false;
    }
    const version = state.version;
    let report;
    state.busy = true;
    try {
      report = await post('step', problem());
    } finally {
      state.busy = false;
    }
    if (version !== state.version) return true;  // edited meanwhile: this step is stale
    state.W = report.W;
    state.b = report.b;
    state.report = report;
    state.reportVersion = version;
    state.steps++;
    state.history.push([report.loss, report.accuracy]);
    if (state.history.length > HISTORY) state.history.shift();
    state.updates++;
    writeParams();
    render();
    return true;
  }

  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));

  let looping = false;
  async function runLoop() {
    if (looping) return;  // stop and start again while a step is under way: one loop goes on
    looping = true;
    try {
      while (state.running) {
        let ok = false;
        try {
          ok = await stepOnce();
        } catch (e) {
          setStatus(e.message, true);
        }
        if (!ok) setRunning(false);
        else await nextFrame();
      }
    } finally {
      looping = false;
    }
  }

  function setRunning(on) {
    if (on && cannotTrain()) {
      setStatus(cannotTrain(), true);
      return;
    }
    state.running = on;
    $('run').textContent = on ? 'stop' : 'start';
    if (on) runLoop();
  }

  // --------------------------------------------------------------------------- drawing

  const plane = $('plane');
  const toPx = (x, y) => [(x + VIEW) / (2 * VIEW) * plane.width,
                          (VIEW - y) / (2 * VIEW) * plane.height];
  const fromPx = (px, py) => [px / plane.width * 2 * VIEW - VIEW,
                              VIEW - py / plane.height * 2 * VIEW];
  const regions = document.createElement('canvas');
  regions.width = regions.height = 260;
  const regionCtx = regions.getContext('2d');
  const regionImage = regionCtx.createImageData(regions.width, regions.height);

  // The class with the highest score at every cell: drawing only (the scores a loss sees
  // come from the server).
  function drawRegions(ctx) {
    const n = regions.width, data = regionImage.data, W = state.W, b = state.b;
    for (let i = 0; i < n; i++) {
      const y = VIEW - (i + 0.5) / n * 2 * VIEW;
      for (let j = 0; j < n; j++) {
        const x = (j + 0.5) / n * 2 * VIEW - VIEW;
        let best = 0, top = -Infinity;
        for (let c = 0; c < 3; c++) {
          const s = W[c][0] * x + W[c][1] * y + b[c];
          if (s > top) { top = s; best = c; }
        }
        const k = 4 * (i * n + j), rgb = REGIONS[best];
        data[k] = rgb[0]; data[k + 1] = rgb[1]; data[k + 2] = rgb[2]; data[k + 3] = 255;
      }
    }
    regionCtx.putImageData(regionImage, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(regions, 0, 0, plane.width, plane.height);
  }

  function drawAxes(ctx) {
    ctx.strokeStyle = 'rgba(0, 0, 0, 0.15)';
    ctx.lineWidth = 1;
    for (let v = -VIEW; v <= VIEW; v += 0.5) {
      const [px, py] = toPx(v, v);
      ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, plane.height); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(plane.width, py); ctx.stroke();
    }
    ctx.strokeStyle = 'rgba(0, 0, 0, 0.45)';
    const [ox, oy] = toPx(0, 0);
    ctx.beginPath(); ctx.moveTo(ox, 0); ctx.lineTo(ox, plane.height); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, oy); ctx.lineTo(plane.width, oy); ctx.stroke();
  }

  // Each class's zero-score line w·x + b = 0, and its normal w/|w| at the line's point
  // nearest the origin.
  function drawLines(ctx) {
    for (let c = 0; c < 3; c++) {
      const [w0, w1] = state.W[c], norm2 = w0 * w0 + w1 * w1;
      if (norm2 < 1e-12) continue;
      const norm = Math.sqrt(norm2);
      const p = [-state.b[c] * w0 / norm2, -state.b[c] * w1 / norm2];
      const d = [-w1 / norm, w0 / norm], far = 4 * VIEW;
      const [ax, ay] = toPx(p[0] - far * d[0], p[1] - far * d[1]);
      const [bx, by] = toPx(p[0] + far * d[0], p[1] + far * d[1]);
      ctx.strokeStyle = COLORS[c];
      ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by); ctx.stroke();
      const [sx, sy] = toPx(p[0], p[1]);
      const [ex, ey] = toPx(p[0] + 0.35 * w0 / norm, p[1] + 0.35 * w1 / norm);
      ctx.beginPath(); ctx.moveTo(sx, sy); ctx.lineTo(ex, ey); ctx.stroke();
      const angle = Math.atan2(ey - sy, ex - sx);
      ctx.fillStyle = COLORS[c];
      ctx.beginPath();
      ctx.moveTo(ex, ey);
      ctx.lineTo(ex - 9 * Math.cos(angle - 0.4), ey - 9 * Math.sin(angle - 0.4));
      ctx.lineTo(ex - 9 * Math.cos(angle + 0.4), ey - 9 * Math.sin(angle + 0.4));
      ctx.closePath(); ctx.fill();
    }
  }

  function drawPoints(ctx) {
    const losses = state.report && state.report.losses.length === state.points.length
      ? state.report.losses : null;
    state.points.forEach(([x, y], i) => {
      const [px, py] = toPx(x, y);
      ctx.beginPath();
      ctx.arc(px, py, 6, 0, 2 * Math.PI);
      ctx.fillStyle = COLORS[state.labels[i]];
      ctx.fill();
      ctx.lineWidth = losses && losses[i] > 0 ? 2.5 : 1;
      ctx.strokeStyle = losses && losses[i] > 0 ? '#000' : '#fff';
      ctx.stroke();
    });
  }

  function drawPlane() {
    const ctx = plane.getContext('2d');
    drawRegions(ctx);
    drawAxes(ctx);
    drawLines(ctx);
    drawPoints(ctx);
  }

  function drawChart() {
    const canvas = $('chart'), ctx = canvas.getContext('2d');
    const w = canvas.width, h = canvas.height, pad = 4, hist = state.history;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = '#ccc';
    ctx.strokeRect(0.5, 0.5, w - 1, h - 1);
    if (hist.length < 2) return;
    const top = Math.max(...hist.map((r) => r[0])) || 1;
    const xAt = (i) => pad + i / (hist.length - 1) * (w - 2 * pad);
    const series = [[0, top, '#b03030'], [1, 1, '#3060b0']];
    for (const [k, scale, color] of series) {
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      hist.forEach((r, i) => {
        const y = h - pad - r[k] / scale * (h - 2 * pad);
        if (i) ctx.lineTo(xAt(i), y); else ctx.moveTo(xAt(i), y);
      });
      ctx.stroke();
    }
    ctx.fillStyle = '#555';
    ctx.font = '11px sans-serif';
    ctx.fillText(`loss ≤ ${top.toPrecision(3)}`, 8, 14);
  }

  const fmt = (v, digits = 3) => (v === null || v === undefined ? '–' : v.toFixed(digits));

  function setNumber(id, value, text) {
    const cell = $(id);
    cell.textContent = value === null ? '–' : text;
    cell.dataset.value = value === null ? '' : String(value);
  }

  function renderTotals() {
    const r = state.report;
    if (!r) return;
    setNumber('data-loss', r.data_loss, r.data_loss === null ? '' : r.data_loss.toPrecision(6));
    setNumber('reg-loss', r.reg_loss, r.reg_loss.toPrecision(6));
    setNumber('total-loss', r.loss, r.loss === null ? '' : r.loss.toPrecision(6));
    setNumber('accuracy', r.accuracy, r.accuracy === null ? ''
      : `${(100 * r.accuracy).toFixed(1)} %`);
    $('steps').textContent = String(state.steps);
  }

  function renderTable() {
    const body = $('points').tBodies[0], r = state.report;
    const fresh = r && r.scores.length === state.points.length;
    while (body.rows.length > state.points.length) body.deleteRow(-1);
    while (body.rows.length < state.points.length) {
      const row = body.insertRow();
      for (let k = 0; k < 8; k++) row.insertCell();
      const remove = document.createElement('button');
      remove.textContent = '×';
      remove.title = 'remove this point';
      remove.className = 'remove';
      row.insertCell().appendChild(remove);
    }
    state.points.forEach(([x, y], i) => {
      const cells = body.rows[i].cells, label = state.labels[i];
      const scores = fresh ? r.scores[i] : [null, null, null];
      const values = [String(i), fmt(x), fmt(y), String(label), ...scores.map((s) => fmt(s)),
                      fresh ? fmt(r.losses[i]) : '–'];
      values.forEach((v, k) => { if (cells[k].textContent !== v) cells[k].textContent = v; });
      cells[3].style.color = COLORS[label];
      cells[8].firstChild.dataset.index = String(i);
      if (fresh) {
        const best = scores.indexOf(Math.max(...scores));
        for (let c = 0; c < 3; c++) cells[4 + c].classList.toggle('best', c === best);
      }
    });
  }

  function render() {
    drawPlane();
    renderTotals();
    renderTable();
    drawChart();
    updateStatus();
  }

  // The step button and the status line say whether a step can be taken now.
  function updateStatus() {
    const why = cannotTrain();
    $('step').disabled = !!why;
    if (why) setStatus(why, true);
    else if ($('status').classList.contains('problem')) setStatus('', false);
  }

  function setStatus(text, problem) {
    $('status').textContent = text;
    $('status').classList.toggle('problem', !!problem && !!text);
  }

  // ---------------------------------------------------------------------------- fields

  const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

  // The value typed into `input`, or null after showing why beside it (never sent).
  function readNumber(input, errorSpan, check) {
    const text = input.value.trim();
    let problem = '';
    if (!NUMBER.test(text)) {
      problem = text ? `“${text}” is not a number` : 'empty: type a number';
    }
    else if (!Number.isFinite(Number(text))) problem = `${text} is not finite`;
    else if (check) problem = check(Number(text));
    errorSpan.textContent = problem;
    input.classList.toggle('bad', !!problem);
    if (problem) state.invalid.add(input.id); else state.invalid.delete(input.id);
    return problem ? null : Number(text);
  }

  function buildParams() {
    const body = $('params').tBodies[0];
    for (let c = 0; c < 3; c++) {
      const row = body.insertRow();
      const head = row.insertCell();
      head.textContent = String(c);
      head.style.color = COLORS[c];
      for (let j = 0; j < 3; j++) {
        const id = j < 2 ? `w-${c}-${j}` : `b-${c}`;
        const cell = row.insertCell();
        cell.innerHTML =
          `<button class="inc" data-delta="-0.1" aria-label="decrease">−</button>` +
          `<input type="text" id="${id}" size="6"><button class="inc" data-delta="0.1" ` +
          `aria-label="increase">+</button><span class="err" id="${id}-err"></span>`;
        const input = cell.querySelector('input');
        const set = (v) => { if (j < 2) state.W[c][j] = v; else state.b[c] = v; };
        const get = () => (j < 2 ? state.W[c][j] : state.b[c]);
        input.addEventListener('input', () => {
          const v = readNumber(input, $(`${id}-err`));
          if (v !== null) { set(v); changed(); } else render();
        });
        cell.querySelectorAll('.inc').forEach((button) => button.addEventListener('click', () => {
          const v = Math.round((get() + Number(button.dataset.delta)) * 1e6) / 1e6;
          set(v);
          input.value = String(v);
          readNumber(input, $(`${id}-err`));
          changed();
        }));
      }
    }
  }

  // The inputs show W and b (3 decimals after a step); one being typed into is left alone.
  function writeParams() {
    for (let c = 0; c < 3; c++) {
      for (let j = 0; j < 3; j++) {
        const id = j < 2 ? `w-${c}-${j}` : `b-${c}`, input = $(id);
        if (document.activeElement === input && input.classList.contains('bad')) continue;
        const v = j < 2 ? state.W[c][j] : state.b[c];
        input.value = String(Number(v.toFixed(3)));
        input.classList.remove('bad');
        $(`${id}-err`).textContent = '';
        state.invalid.delete(id);
      }
    }
  }

  function readSliders() {
    const reg = Number($('reg').value), lr = Number($('lr').value);
    state.reg = reg <= REG_OFF ? 0 : Number(Math.pow(10, reg).toPrecision(3));
    state.lr = Number(Math.pow(10, lr).toPrecision(3));
    $('reg-value').textContent = `λ = ${state.reg}`;
    $('lr-value').textContent = `${state.lr}`;
  }

  // ------------------------------------------------------------------------- the data

  let dragging = -1;

  function pointAt(px, py) {
    let best = -1, bestD = 10 * 10;
    state.points.forEach(([x, y], i) => {
      const [qx, qy] = toPx(x, y), d = (qx - px) ** 2 + (qy - py) ** 2;
      if (d <= bestD) { best = i; bestD = d; }
    });
    return best;
  }

  function canvasXY(event) {
    const rect = plane.getBoundingClientRect();
    return [(event.clientX - rect.left) * plane.width / rect.width,
            (event.clientY - rect.top) * plane.height / rect.height];
  }

  const clampView = (v) => Math.max(-VIEW, Math.min(VIEW, v));
  const round3 = (v) => Math.round(v * 1000) / 1000;

  function removePoint(i) {
    state.points.splice(i, 1);
    state.labels.splice(i, 1);
    state.report = null;
    changed();
  }

  function setData(points, labels) {
    state.points = points.map((p) => p.slice());
    state.labels = labels.slice();
    state.report = null;
    state.history = [];
    changed();
  }

  plane.addEventListener('mousedown', (event) => {
    const [px, py] = canvasXY(event), hit = pointAt(px, py);
    if (hit >= 0 && event.shiftKey) { removePoint(hit); return; }
    if (hit >= 0) { dragging = hit; return; }
    if (state.points.length >= MAX_POINTS) {
      setStatus(`${MAX_POINTS} points is the most the demo takes.`, true);
      return;
    }
    const [x, y] = fromPx(px, py);
    state.points.push([round3(x), round3(y)]);
    state.labels.push(Number(document.querySelector('input[name=cls]:checked').value));
    dragging = state.points.length - 1;
    state.report = null;
    changed();
  });
  window.addEventListener('mousemove', (event) => {
    if (dragging < 0) return;
    const [x, y] = fromPx(...canvasXY(event));
    state.points[dragging] = [round3(clampView(x)), round3(clampView(y))];
    changed();
  });
  window.addEventListener('mouseup', () => { dragging = -1; });

  $('points').addEventListener('click', (event) => {
    if (event.target.classList.contains('remove')) removePoint(Number(event.target.dataset.index));
  });

  async function loadPreset(name) {
    try {
      const data = await post('preset', {name, seed: Math.floor(Math.random() * 1e9)});
      setData(data.points, data.labels);
    } catch (e) {
      setStatus(e.message, true);
    }
  }

  // ------------------------------------------------------------------------- controls

  document.querySelectorAll('[data-preset]').forEach((button) => {
    button.addEventListener('click', () => loadPreset(button.dataset.preset));
  });
  $('clear').addEventListener('click', () => setData([], []));
  $('loss').addEventListener('change', () => {
    state.loss = $('loss').value;
    $('squared').disabled = state.loss === 'softmax_cross_entropy';
    state.squared = $('squared').checked && !$('squared').disabled;
    state.history = [];
    changed();
  });
  $('squared').addEventListener('change', () => {
    state.squared = $('squared').checked && !$('squared').disabled;
    state.history = [];
    changed();
  });
  $('margin').addEventListener('input', () => {
    const v = readNumber($('margin'), $('margin-err'), (x) => (x > 0 ? '' : 'Δ must be > 0'));
    if (v !== null) { state.margin = v; changed(); } else render();
  });
  for (const id of ['reg', 'lr']) {
    $(id).addEventListener('input', () => { readSliders(); changed(); });
  }
  $('step').addEventListener('click', async () => {
    try {
      await stepOnce();
    } catch (e) {
      setStatus(e.message, true);
    }
  });
  $('run').addEventListener('click', () => setRunning(!state.running));
  $('randomize').addEventListener('click', () => {
    const gauss = () => Math.sqrt(-2 * Math.log(1 - Math.random())) *
      Math.cos(2 * Math.PI * Math.random());
    state.W = state.W.map((row) => row.map(() => round3(gauss())));
    state.b = state.b.map(() => round3(0.5 * gauss()));
    state.history = [];
    writeParams();
    changed();
  });
  $('export').addEventListener('click', async () => {
    const links = $('downloads');
    try {
      const body = {...problem(state.origin.W, state.origin.b), steps: state.steps};
      const data = await post('export', body);
      const npz = Uint8Array.from(atob(data.npz), (ch) => ch.charCodeAt(0));
      const urls = [[data.npz_name, new Blob([npz], {type: 'application/octet-stream'})],
                    [data.config_name, new Blob([data.config], {type: 'text/x-python'})]];
      links.innerHTML = '';
      for (const [name, blob] of urls) {
        const a = document.createElement('a');
        a.href = URL.createObjectURL(blob);
        a.download = name;
        a.textContent = name;
        a.id = 'download-' + name.split('.').pop();
        links.appendChild(a);
      }
      const note = document.createElement('p');
      note.textContent = `Save both in one folder, then: python -m hinge_jax.main ` +
        `--config=${data.config_name} --workdir=/tmp/hinge_jax/demo (${data.steps} steps ` +
        `from the W of the last change give the page's W).`;
      links.appendChild(note);
    } catch (e) {
      setStatus(e.message, true);
    }
  });

  // --------------------------------------------------------------------------- start

  buildParams();
  writeParams();
  state.origin = {W: state.W.map((r) => r.slice()), b: state.b.slice()};
  readSliders();
  window.demo = {state, stepOnce, setRunning};  // for the browser test and the console
  loadPreset('lecture');
})();
