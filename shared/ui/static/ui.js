// Model pages: charts from the page's JSON data island, and the admin actions.
// Loaded from the app (script-src 'self'); no inline script, no eval, nothing stored in the browser.
(function () {
  'use strict';

  var island = document.getElementById('page-data');
  var data = island ? JSON.parse(island.textContent) : null;
  var PALETTE = ['#1f6feb', '#cf222e', '#1a7f37', '#9a6700', '#8250df', '#bf3989', '#0a7f8c', '#6e7781', '#953800', '#116329'];

  function color(i) { return PALETTE[i % PALETTE.length]; }

  function baseOptions(xTitle, yTitle) {
    return {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { position: 'bottom' } },
      scales: {
        x: { title: { display: !!xTitle, text: xTitle } },
        y: { title: { display: !!yTitle, text: yTitle } }
      }
    };
  }

  function metricChart(canvas) {
    var name = canvas.dataset.metric;
    var metrics = data.metrics;
    var values = metrics.series[name] || [];
    var labels = metrics.versions.map(function (v) { return 'v' + v; });
    var radius = metrics.versions.map(function (v) { return v === data.selected || v === data.champion ? 5 : 2; });
    var datasets = [{ label: name, data: values, borderColor: color(0), backgroundColor: color(0), spanGaps: true,
                      pointRadius: radius }];
    var bar = metrics.bars[name] || {};
    ['min', 'max'].forEach(function (side) {
      if (typeof bar[side] === 'number') {
        datasets.push({ label: 'quality bar (' + side + ' ' + bar[side] + ')', data: values.map(function () { return bar[side]; }),
                        borderColor: color(1), borderDash: [6, 4], pointRadius: 0, borderWidth: 1.5 });
      }
    });
    return new Chart(canvas, { type: 'line', data: { labels: labels, datasets: datasets },
                               options: baseOptions('version', name) });
  }

  function points(xs, ys) {
    return xs.map(function (x, i) { return { x: x, y: ys[i] }; });
  }

  function rocChart(canvas) {
    var datasets = data.roc.map(function (curve, i) {
      return { label: curve.label + ' (AUC ' + curve.auc + ')', data: points(curve.fpr, curve.tpr), showLine: true,
               borderColor: color(i), backgroundColor: color(i), pointRadius: 0, borderWidth: 2 };
    });
    datasets.push({ label: 'chance', data: [{ x: 0, y: 0 }, { x: 1, y: 1 }], showLine: true, borderColor: '#8c959f',
                    borderDash: [4, 4], pointRadius: 0, borderWidth: 1 });
    var options = baseOptions('false positive rate', 'true positive rate');
    options.scales.x.min = 0; options.scales.x.max = 1; options.scales.y.min = 0; options.scales.y.max = 1;
    return new Chart(canvas, { type: 'scatter', data: { datasets: datasets }, options: options });
  }

  function scatterChart(canvas) {
    var s = data.scatter;
    var all = s.actual.concat(s.predicted).filter(function (v) { return v !== null; });
    var lo = Math.min.apply(null, all), hi = Math.max.apply(null, all);
    return new Chart(canvas, {
      type: 'scatter',
      data: { datasets: [
        { label: 'holdout rows', data: points(s.actual, s.predicted), borderColor: color(0), backgroundColor: color(0),
          pointRadius: 2 },
        { label: 'predicted = actual', data: [{ x: lo, y: lo }, { x: hi, y: hi }], showLine: true, borderColor: color(1),
          borderDash: [6, 4], pointRadius: 0, borderWidth: 1.5 }
      ] },
      options: baseOptions('actual', 'predicted')
    });
  }

  function residualChart(canvas) {
    var r = data.residuals;
    var labels = r.counts.map(function (_, i) { return ((r.edges[i] + r.edges[i + 1]) / 2).toPrecision(3); });
    return new Chart(canvas, { type: 'bar', data: { labels: labels, datasets: [
      { label: 'holdout rows', data: r.counts, backgroundColor: color(0) }] },
      options: baseOptions('residual (actual − predicted)', 'rows') });
  }

  function histogramChart(canvas) {
    var h = data.histograms[canvas.dataset.feature];
    var datasets = [{ label: 'training', data: h.training, backgroundColor: color(0) }];
    if (h.live) { datasets.push({ label: 'live window', data: h.live, backgroundColor: color(1) }); }
    return new Chart(canvas, { type: 'bar', data: { labels: h.labels, datasets: datasets },
                               options: baseOptions('', 'share of rows') });
  }

  var DRAW = { metric: metricChart, roc: rocChart, scatter: scatterChart, residuals: residualChart,
               histogram: histogramChart };

  function draw(canvas) {
    if (canvas.dataset.drawn) { return; }
    canvas.dataset.drawn = 'yes';
    DRAW[canvas.dataset.chart](canvas);
  }

  function drawCharts() {
    if (!data || typeof Chart === 'undefined') { return; }
    document.querySelectorAll('canvas[data-chart]').forEach(function (canvas) {
      if (canvas.dataset.chart !== 'histogram') { draw(canvas); }
    });
    // a histogram is drawn when its feature is opened: hundreds of features stay cheap
    document.querySelectorAll('details.histogram').forEach(function (details) {
      details.addEventListener('toggle', function () {
        if (details.open) { draw(details.querySelector('canvas')); }
      });
    });
  }

  // -- actions: the admin key goes in a header of one request, never in a URL or in storage --

  var result = document.getElementById('action-result');

  function show(text, ok) {
    result.textContent = text;
    result.className = 'result ' + (ok ? 'ok' : 'error');
  }

  function request(button) {
    var action = button.dataset.action;
    var by = (document.getElementById('reviewer').value || '').trim() || 'ui';
    if (action === 'approve') {
      return { url: data.api + '/versions/' + button.dataset.version + '/approve', body: { by: by } };
    }
    if (action === 'reject') {
      var reason = (document.getElementById('reject-reason').value || '').trim();
      return { url: data.api + '/versions/' + button.dataset.version + '/reject', body: { by: by, reason: reason } };
    }
    if (action === 'rollback') {
      return { url: data.api + '/rollback', body: { from: Number(button.dataset.from), to: Number(button.dataset.to),
                                                  by: by, reason: 'rollback from the model page by ' + by } };
    }
    return { url: data.api + '/retrain', body: { reason: 'retrain requested from the model page by ' + by } };
  }

  function describe(status, text) {
    var body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
    if (status === 401) { return 'the admin key was refused (401)'; }
    if (body && body.message) { return (body.error_code ? body.error_code + ': ' : '') + body.message; }
    if (body && body.run_id) { return 'retrain queued: run ' + body.run_id; }
    return text || ('HTTP ' + status);
  }

  function act(button) {
    var keyInput = document.getElementById('admin-key');
    var key = keyInput.value;
    if (!key) { show('Enter the admin key first.', false); keyInput.focus(); return; }
    var call = request(button);
    var buttons = document.querySelectorAll('button[data-action]');
    buttons.forEach(function (b) { b.disabled = true; });
    show('Sending…', true);
    fetch(call.url, {
      method: 'POST', credentials: 'omit', cache: 'no-store', redirect: 'error', referrerPolicy: 'no-referrer',
      headers: { 'x-functions-key': key, 'content-type': 'application/json' }, body: JSON.stringify(call.body)
    }).then(function (response) {
      return response.text().then(function (text) {
        var message = describe(response.status, text);
        if (!response.ok) {
          show(response.status + ': ' + message, false);
          buttons.forEach(function (b) { b.disabled = false; });
          return;
        }
        show(message, true);
        keyInput.value = '';
        // reload to show the new state; the message survives in the fragment (never sent to the server)
        location.hash = 'result=' + encodeURIComponent(message);
        location.reload();
      });
    }).catch(function (error) {
      show('request failed: ' + error, false);
      buttons.forEach(function (b) { b.disabled = false; });
    });
  }

  function wireActions() {
    if (!result || !data) { return; }
    document.querySelectorAll('button[data-action]').forEach(function (button) {
      button.addEventListener('click', function () { act(button); });
    });
    if (location.hash.indexOf('#result=') === 0) {
      show(decodeURIComponent(location.hash.slice('#result='.length)), true);
      history.replaceState(null, '', location.pathname + location.search);
    }
  }

  drawCharts();
  wireActions();
}());
