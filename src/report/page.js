// The report page: reads the spans (kth-data, one OTLP/JSON export
// request) and the run's figures (kth-summary), and draws the service map,
// the problems, the trace list, the waterfall and the span details. No
// framework and no request: everything is in this file.
(function () {
  'use strict';

  var data = JSON.parse(document.getElementById('kth-data').textContent || '{}');
  var summary = JSON.parse(document.getElementById('kth-summary').textContent || '{}');
  var KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];
  var KIND_BADGE = ['?', 'INT', 'SRV', 'CLI', 'PROD', 'CONS'];
  var PALETTE = ['#3b7ddd', '#27a376', '#e08a1e', '#8a5cd1', '#d6455d', '#1a9fb5', '#7c8b2a', '#c2528b', '#5d6d7e', '#b5651d'];

  // ---- helpers -----------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      for (var key in attrs) {
        if (attrs[key] === undefined || attrs[key] === null) continue;
        if (key === 'class') node.className = attrs[key];
        else if (key === 'text') node.textContent = attrs[key];
        else if (key.slice(0, 2) === 'on') node.addEventListener(key.slice(2), attrs[key]);
        else node.setAttribute(key, attrs[key]);
      }
    }
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    });
    return node;
  }
  var SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    for (var key in attrs || {}) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // Nanoseconds since the epoch (a decimal string, or a number) as
  // milliseconds, without losing the sub-millisecond part to float rounding.
  function ms(nanos) {
    var s = String(nanos || '0');
    if (s.length <= 6) return Number(s) / 1e6;
    return Number(s.slice(0, -6)) + Number(s.slice(-6)) / 1e6;
  }
  function fmtDuration(m) {
    if (!isFinite(m)) return '–';
    if (m < 1) return (m * 1000).toFixed(m < 0.01 ? 2 : 0) + ' µs';
    if (m < 1000) return (m < 10 ? m.toFixed(2) : m < 100 ? m.toFixed(1) : m.toFixed(0)) + ' ms';
    return (m / 1000).toFixed(2) + ' s';
  }
  function fmtCount(n) { return Number(n).toLocaleString('en-US'); }
  function plural(n, word) { return fmtCount(n) + ' ' + word + (n === 1 ? '' : 's'); }
  function anyValue(v) {
    if (!v) return '';
    if ('stringValue' in v) return v.stringValue;
    if ('intValue' in v) return String(v.intValue);
    if ('doubleValue' in v) return String(v.doubleValue);
    if ('boolValue' in v) return String(v.boolValue);
    if ('arrayValue' in v) return '[' + ((v.arrayValue || {}).values || []).map(anyValue).join(', ') + ']';
    if ('kvlistValue' in v) return '{' + ((v.kvlistValue || {}).values || []).map(function (kv) { return kv.key + ': ' + anyValue(kv.value); }).join(', ') + '}';
    if ('bytesValue' in v) return v.bytesValue;
    return '';
  }
  function key(traceId, spanId) { return traceId + '/' + spanId; }

  // ---- spans and traces --------------------------------------------------

  var traces = new Map();
  var spansByKey = new Map();
  var serviceColour = new Map();
  function colourOf(service) {
    if (!serviceColour.has(service)) serviceColour.set(service, PALETTE[serviceColour.size % PALETTE.length]);
    return serviceColour.get(service);
  }
  ((summary.map || {}).services || []).forEach(function (s) { colourOf(s.name); });

  (data.resourceSpans || []).forEach(function (rs) {
    var resource = (rs.resource || {}).attributes || [];
    var service = 'unknown_service';
    resource.forEach(function (kv) { if (kv.key === 'service.name') service = anyValue(kv.value); });
    (rs.scopeSpans || []).forEach(function (ss) {
      (ss.spans || []).forEach(function (s) {
        var span = {
          traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId || '',
          name: s.name || '', kind: s.kind || 0, service: service,
          start: ms(s.startTimeUnixNano), end: ms(s.endTimeUnixNano),
          attributes: s.attributes || [], events: s.events || [], links: s.links || [],
          status: s.status || {}, resource: resource, scope: ss.scope || {},
          children: [], depth: 0, parent: null
        };
        spansByKey.set(key(span.traceId, span.spanId), span);
        var trace = traces.get(span.traceId);
        if (!trace) {
          trace = { id: span.traceId, spans: [], problems: [], services: new Set(), start: Infinity, end: -Infinity };
          traces.set(span.traceId, trace);
        }
        trace.spans.push(span);
        trace.services.add(service);
        trace.start = Math.min(trace.start, span.start);
        trace.end = Math.max(trace.end, span.end);
        colourOf(service);
      });
    });
  });

  // Parents, depth-first order, roots.
  traces.forEach(function (trace) {
    trace.spans.forEach(function (span) {
      var parent = span.parentSpanId ? spansByKey.get(key(trace.id, span.parentSpanId)) : null;
      if (parent && parent !== span) { span.parent = parent; parent.children.push(span); }
    });
    var roots = trace.spans.filter(function (s) { return !s.parent; });
    var byStart = function (a, b) { return a.start - b.start || (a.name < b.name ? -1 : 1); };
    roots.sort(byStart);
    var ordered = [];
    var visited = new Set();
    function walk(span, depth) {
      if (visited.has(span)) return;
      visited.add(span);
      span.depth = depth;
      ordered.push(span);
      span.children.sort(byStart).forEach(function (c) { walk(c, depth + 1); });
    }
    roots.forEach(function (r) { walk(r, 0); });
    // Spans in a parent cycle have no root to be reached from.
    trace.spans.forEach(function (s) { if (!visited.has(s)) walk(s, 0); });
    trace.ordered = ordered;
    trace.root = roots.find(function (r) { return !r.parentSpanId; }) || roots[0] || ordered[0];
  });

  var problems = summary.problems || [];
  problems.forEach(function (p) {
    var trace = traces.get(p.traceId);
    if (trace) trace.problems.push(p);
  });

  // ---- header --------------------------------------------------------------

  var counts = summary.traces || { total: traces.size, shown: traces.size, broken: 0 };
  document.getElementById('title').textContent = summary.title || 'Trace report';
  var countsNode = document.getElementById('counts');
  countsNode.appendChild(el('span', null, [el('b', { text: fmtCount(counts.shown) }), ' of ' + fmtCount(counts.total) + ' traces shown · ',
    el('b', { text: fmtCount(counts.broken) }), ' broken · ',
    el('b', { text: fmtCount((summary.spans || {}).shown || 0) }), ' spans · ',
    el('b', { text: fmtCount(((summary.map || {}).services || []).length) }), ' services']));
  if (counts.shown < counts.total) {
    var note = document.getElementById('partial-note');
    note.hidden = false;
    note.textContent = 'This report shows ' + fmtCount(counts.shown) + ' of ' + fmtCount(counts.total) +
      ' traces: every broken trace and a sample of the others. The service map and the counts cover all ' +
      fmtCount(counts.total) + ' traces.';
  }
  var text = summary.text || '';
  document.getElementById('summary-text').textContent = text || 'No run summary: this report was made from spans alone.';

  // ---- service map ---------------------------------------------------------

  var serviceFilter = '';
  function drawMap() {
    var container = document.getElementById('map');
    container.textContent = '';
    var map = summary.map || { services: [], edges: [] };
    if (!map.services.length) { container.appendChild(el('p', { class: 'empty', text: 'No spans.' })); return; }
    // One edge per pair of services; its topics listed on it.
    var pairs = new Map();
    map.edges.forEach(function (e) {
      var id = e.from + '->' + e.to;
      if (!pairs.has(id)) pairs.set(id, { from: e.from, to: e.to, count: 0, errors: 0, topics: [] });
      var pair = pairs.get(id);
      pair.count += e.count; pair.errors += e.errors; pair.topics.push(e);
    });
    // Columns by longest path from a service nothing sends to.
    var depth = new Map();
    map.services.forEach(function (s) { depth.set(s.name, 0); });
    for (var round = 0; round < map.services.length; round++) {
      var changed = false;
      pairs.forEach(function (p) {
        if (p.from === p.to) return;
        var d = depth.get(p.from) + 1;
        if (d > depth.get(p.to) && d < map.services.length) { depth.set(p.to, d); changed = true; }
      });
      if (!changed) break;
    }
    // Services on no hop stand apart, in a last column.
    var connected = new Set();
    pairs.forEach(function (p) { connected.add(p.from); connected.add(p.to); });
    var columns = [], alone = [];
    map.services.forEach(function (s) {
      if (!connected.has(s.name) && connected.size) { alone.push(s); return; }
      var d = depth.get(s.name);
      (columns[d] = columns[d] || []).push(s);
    });
    columns = columns.filter(Boolean);
    if (alone.length) columns.push(alone);
    var NODE_W = 180, NODE_H = 58, COL_GAP = 300, ROW_GAP = 40, PAD = 16;
    var incoming = new Map();
    var tallest = Math.max.apply(null, columns.map(function (c) { return c.length; }));
    var height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP + 40;
    var width = PAD * 2 + columns.length * NODE_W + (columns.length - 1) * COL_GAP;
    var pos = new Map();
    columns.forEach(function (column, ci) {
      var columnHeight = column.length * NODE_H + (column.length - 1) * ROW_GAP;
      var top = (height - columnHeight) / 2;
      column.forEach(function (s, ri) {
        pos.set(s.name, { x: PAD + ci * (NODE_W + COL_GAP), y: top + ri * (NODE_H + ROW_GAP) });
      });
    });
    var root = svg('svg', { viewBox: '0 0 ' + width + ' ' + height, width: width, height: height, role: 'img', 'aria-label': 'Service map' });
    var defs = svg('defs');
    ['normal', 'problem'].forEach(function (kind) {
      var marker = svg('marker', { id: 'arrow-' + kind, viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto' });
      marker.appendChild(svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: kind === 'problem' ? '#d62f3a' : '#8d99ab' }));
      defs.appendChild(marker);
    });
    root.appendChild(defs);
    var edgeLayer = svg('g'), labelLayer = svg('g'), nodeLayer = svg('g');
    root.appendChild(edgeLayer); root.appendChild(nodeLayer); root.appendChild(labelLayer);
    pairs.forEach(function (p, id) {
      var a = pos.get(p.from), b = pos.get(p.to);
      if (!a || !b) return;
      var problem = p.errors > 0;
      var g = svg('g', { class: 'edge' + (problem ? ' problem' : ''), 'data-edge': id, 'data-count': String(p.count) });
      var x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
      var d;
      if (x2 > x1) {
        var mx = (x1 + x2) / 2;
        d = 'M' + x1 + ',' + y1 + ' C' + mx + ',' + y1 + ' ' + mx + ',' + y2 + ' ' + (x2 - 2) + ',' + y2;
      } else {
        // Backwards or within a column: around the bottom.
        var low = Math.max(a.y, b.y) + NODE_H + 24;
        d = 'M' + (a.x + NODE_W / 2) + ',' + (a.y + NODE_H) + ' C' + (a.x + NODE_W / 2) + ',' + low + ' ' + (b.x + NODE_W / 2) + ',' + low + ' ' + (b.x + NODE_W / 2) + ',' + (b.y + NODE_H + 2);
      }
      g.appendChild(svg('path', { d: d, 'marker-end': 'url(#arrow-' + (problem ? 'problem' : 'normal') + ')' }));
      var title = svg('title', {}, p.from + ' → ' + p.to + ': ' + p.topics.map(function (t) {
        return t.topic + ' ' + fmtCount(t.count) + ' messages, p50 ' + fmtDuration(t.p50Ms) + ', p99 ' + fmtDuration(t.p99Ms) + (t.errors ? ', ' + t.errors + ' failed' : '');
      }).join('; '));
      g.appendChild(title);
      // Label: a line per topic, just before the target, stacked when
      // several edges end at one service.
      var lines = [];
      p.topics.forEach(function (t) {
        lines.push({ text: t.topic, strong: false });
        lines.push({ text: fmtCount(t.count) + ' msgs · p50 ' + fmtDuration(t.p50Ms) + ' · p99 ' + fmtDuration(t.p99Ms) + (t.errors ? ' · ' + t.errors + ' failed' : ''), strong: true });
      });
      // Bold figures run wider than the topic names.
      var lineH = 14, boxH = lines.length * lineH + 10, boxW = 0;
      lines.forEach(function (l) { boxW = Math.max(boxW, l.text.length * (l.strong ? 6.7 : 6.2) + 14); });
      var stack = incoming.get(p.to) || 0;
      incoming.set(p.to, stack + boxH + 6);
      var lx, ly;
      if (x2 > x1) { lx = Math.max(x2 - 22 - boxW / 2, x1 + 10 + boxW / 2); ly = y2 + stack; }
      else { lx = (a.x + b.x) / 2 + NODE_W / 2; ly = Math.max(a.y, b.y) + NODE_H + 30 + stack; }
      var label = svg('g', { class: 'label-group' + (problem ? ' problem' : '') });
      label.appendChild(svg('rect', { class: 'label-bg', x: lx - boxW / 2, y: ly - boxH / 2, width: boxW, height: boxH, rx: 4 }));
      lines.forEach(function (l, i) {
        label.appendChild(svg('text', { class: 'label' + (l.strong ? ' count' : ''), x: lx, y: ly - boxH / 2 + 16 + i * lineH, 'text-anchor': 'middle' }, l.text));
      });
      g.appendChild(label);
      edgeLayer.appendChild(g);
    });
    map.services.forEach(function (s) {
      var at = pos.get(s.name);
      var problem = s.errors > 0 || s.problems > 0;
      var g = svg('g', { class: 'node' + (problem ? ' problem' : '') + (serviceFilter === s.name ? ' filtered' : ''), 'data-service': s.name, transform: 'translate(' + at.x + ',' + at.y + ')', tabindex: '0' });
      g.appendChild(svg('rect', { width: NODE_W, height: NODE_H, rx: 8 }));
      g.appendChild(svg('rect', { width: 6, height: NODE_H, rx: 3, style: 'fill:' + colourOf(s.name) + ';stroke:none' }));
      g.appendChild(svg('text', { class: 'name', x: 16, y: 23 }, s.name.length > 22 ? s.name.slice(0, 21) + '…' : s.name));
      var stat = plural(s.spans, 'span');
      g.appendChild(svg('text', { class: 'stat', x: 16, y: 42 }, stat));
      if (problem) {
        var bad = [];
        if (s.errors) bad.push(plural(s.errors, 'error'));
        if (s.problems) bad.push(plural(s.problems, 'problem'));
        g.appendChild(svg('text', { class: 'stat bad', x: 16 + stat.length * 6.3 + 8, y: 42 }, bad.join(', ')));
      }
      g.appendChild(svg('title', {}, s.name + ': ' + fmtCount(s.spans) + ' spans, ' + fmtCount(s.errors) + ' with error status, ' + fmtCount(s.problems) + ' problems'));
      var pick = function () { setServiceFilter(serviceFilter === s.name ? '' : s.name); };
      g.addEventListener('click', pick);
      g.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pick(); } });
      nodeLayer.appendChild(g);
    });
    // Labels above nodes and edges.
    edgeLayer.querySelectorAll('.label-group').forEach(function (l) { labelLayer.appendChild(l); });
    container.appendChild(root);
  }

  // ---- problems ------------------------------------------------------------

  var PROBLEM_WORDS = {
    'orphan': 'parent lost', 'dangling-link': 'link lost', 'several-roots': 'several roots',
    'wrong-trace': 'parent in another trace', 'duplicate-span-id': 'duplicate id', 'parent-cycle': 'parent cycle',
    'no-root': 'no root', 'error': 'error', 'context-lost': 'context lost', 'trace-check': 'broken trace'
  };
  function drawProblems() {
    var list = document.getElementById('problems');
    var badge = document.getElementById('problem-count');
    badge.textContent = fmtCount(problems.length);
    badge.className = 'badge' + (problems.length ? ' bad' : '');
    if (!problems.length) { list.appendChild(el('li', { class: 'none', text: 'No problem found: every parent and link resolves.' })); return; }
    var LIMIT = 500;
    problems.slice(0, LIMIT).forEach(function (p) {
      var item = el('li', {
        'data-problem': p.kind, 'data-problem-trace-id': p.traceId, 'data-problem-span-id': p.spanId,
        tabindex: '0', title: 'Show this span',
        onclick: function () { showProblem(p, item); },
        onkeydown: function (e) { if (e.key === 'Enter') showProblem(p, item); }
      }, [el('span', { class: 'kind', text: PROBLEM_WORDS[p.kind] || p.kind }), p.message]);
      list.appendChild(item);
    });
    if (problems.length > LIMIT) list.appendChild(el('li', { class: 'none', text: 'and ' + fmtCount(problems.length - LIMIT) + ' more (filter the traces by "Only broken" to see them all)' }));
  }
  function showProblem(p, item) {
    document.querySelectorAll('.problems li.active').forEach(function (n) { n.classList.remove('active'); });
    item.classList.add('active');
    var span = spansByKey.get(key(p.traceId, p.spanId));
    if (!traces.has(p.traceId)) return;
    selectTrace(p.traceId);
    var trace = traces.get(p.traceId);
    selectSpan(span || trace.root, true);
  }

  // ---- trace list ----------------------------------------------------------

  var traceList = Array.from(traces.values()).sort(function (a, b) {
    return (b.problems.length > 0) - (a.problems.length > 0) || a.start - b.start;
  });
  var selectedTrace = null;
  var selectedSpan = null;
  var searchText = new Map();
  function textOf(trace) {
    if (!searchText.has(trace.id)) {
      var parts = [trace.id];
      trace.spans.forEach(function (s) {
        parts.push(s.spanId, s.name, s.service);
        s.attributes.forEach(function (kv) { parts.push(anyValue(kv.value)); });
      });
      searchText.set(trace.id, parts.join('\n').toLowerCase());
    }
    return searchText.get(trace.id);
  }
  function setServiceFilter(name) {
    serviceFilter = name;
    document.getElementById('service-filter').value = name;
    document.querySelectorAll('.map .node').forEach(function (n) {
      n.classList.toggle('filtered', n.getAttribute('data-service') === name);
    });
    drawTraces();
  }
  var select = document.getElementById('service-filter');
  serviceColour.forEach(function (_, name) { select.appendChild(el('option', { value: name, text: name })); });
  select.addEventListener('change', function () { setServiceFilter(select.value); });
  document.getElementById('broken-only').addEventListener('change', drawTraces);
  var searchTimer = null;
  document.getElementById('search').addEventListener('input', function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(drawTraces, 120);
  });

  function drawTraces() {
    var container = document.getElementById('traces');
    container.textContent = '';
    var brokenOnly = document.getElementById('broken-only').checked;
    var query = document.getElementById('search').value.trim().toLowerCase();
    var shown = traceList.filter(function (t) {
      if (brokenOnly && !t.problems.length) return false;
      if (serviceFilter && !t.services.has(serviceFilter)) return false;
      if (query && textOf(t).indexOf(query) < 0) return false;
      return true;
    });
    document.getElementById('trace-count').textContent = shown.length === traceList.length
      ? fmtCount(traceList.length) : fmtCount(shown.length) + ' / ' + fmtCount(traceList.length);
    var fragment = document.createDocumentFragment();
    shown.forEach(function (t) {
      var root = t.root || {};
      var broken = t.problems.length > 0;
      var row = el('div', {
        class: 'trace-row' + (broken ? ' broken' : ''), 'data-trace-id': t.id, role: 'option', tabindex: '0',
        'aria-current': selectedTrace === t ? 'true' : null,
        onclick: function () { selectTrace(t.id); },
        onkeydown: function (e) { if (e.key === 'Enter') selectTrace(t.id); }
      }, [
        el('div', { class: 'title', text: (root.service || '?') + ': ' + (root.name || '?') }),
        el('div', { class: 'dur', text: fmtDuration(t.end - t.start) }),
        el('div', { class: 'meta' }, [plural(t.spans.length, 'span') + ' · ' + plural(t.services.size, 'service'),
          broken ? el('span', { class: 'probs', text: ' · ' + t.problems.length + (t.problems.length === 1 ? ' problem' : ' problems') }) : null]),
        el('div', { class: 'tid', text: t.id.slice(0, 12) })
      ]);
      fragment.appendChild(row);
    });
    container.appendChild(fragment);
    if (!shown.length) container.appendChild(el('div', { class: 'more', text: 'No trace matches.' }));
  }

  // ---- waterfall -----------------------------------------------------------

  function selectTrace(id) {
    var trace = traces.get(id);
    if (!trace) return;
    if (selectedTrace !== trace) {
      selectedTrace = trace;
      selectedSpan = null;
      drawWaterfall(trace);
    }
    document.querySelectorAll('.trace-row').forEach(function (r) {
      if (r.getAttribute('data-trace-id') === id) r.setAttribute('aria-current', 'true');
      else r.removeAttribute('aria-current');
    });
    if (!selectedSpan) selectSpan(trace.root, false);
  }

  function drawWaterfall(trace) {
    var header = document.getElementById('trace-header');
    header.textContent = '';
    var root = trace.root || {};
    var total = Math.max(trace.end - trace.start, 1e-6);
    header.appendChild(el('h3', { text: (root.service || '?') + ': ' + (root.name || '?') }));
    header.appendChild(el('div', { class: 'meta' }, ['Trace ', el('code', { text: trace.id }), ' · ' + fmtDuration(trace.end - trace.start) +
      ' · ' + trace.spans.length + ' spans · ' + Array.from(trace.services).join(', ') + ' · started ' + new Date(trace.start).toISOString().replace('T', ' ').replace('Z', ' UTC')]));
    var wf = document.getElementById('waterfall');
    wf.textContent = '';
    var ticks = el('div', { class: 'ticks' });
    [0, 0.25, 0.5, 0.75, 1].forEach(function (f) {
      ticks.appendChild(el('div', { class: 'tick' + (f === 1 ? ' last' : ''), style: 'left:' + (f * 100) + '%', text: fmtDuration(total * f) }));
    });
    wf.appendChild(el('div', { class: 'wf-ruler' }, [el('div', { class: 'name-col', text: 'Service and operation' }), ticks]));
    var problemSpans = new Set(trace.problems.map(function (p) { return p.spanId; }));
    trace.ordered.forEach(function (span) {
      var left = (span.start - trace.start) / total * 100;
      var width = Math.max((span.end - span.start) / total * 100, 0.15);
      var error = span.status.code === 2;
      var nameCol = el('div', { class: 'name-col', style: 'padding-left:' + (8 + span.depth * 16) + 'px' }, [
        el('span', { class: 'chip', style: 'background:' + colourOf(span.service) }),
        el('span', { class: 'svc', text: span.service }),
        el('span', { class: 'op', text: span.name }),
        el('span', { class: 'kind', text: KIND_BADGE[span.kind] || '?', title: 'kind ' + (KINDS[span.kind] || span.kind) }),
        error ? el('span', { class: 'err-mark', text: 'ERROR', title: span.status.message || 'error status' }) : null,
        span.parentSpanId && !span.parent ? el('span', { class: 'orphan-mark', text: 'parent lost', title: 'its parent span ' + span.parentSpanId + ' is not in this report' }) : null,
        !error && !(span.parentSpanId && !span.parent) && problemSpans.has(span.spanId) ? el('span', { class: 'orphan-mark', text: 'problem' }) : null
      ]);
      // The duration after the bar; before it if the bar reaches the
      // right edge; inside it if it spans nearly everything.
      var labelStyle = left + width <= 80 ? 'left:calc(' + (left + width) + '% + 6px)'
        : left >= 15 ? 'right:calc(' + (100 - left) + '% + 6px)'
        : 'left:calc(' + left + '% + 6px);color:#fff;font-weight:600';
      var timeline = el('div', { class: 'timeline' }, [
        el('div', { class: 'gridline', style: 'left:25%' }), el('div', { class: 'gridline', style: 'left:50%' }), el('div', { class: 'gridline', style: 'left:75%' }),
        el('div', { class: 'bar' + (error ? ' error' : ''), style: 'left:' + left + '%;width:' + width + '%;background-color:' + colourOf(span.service) }),
        el('div', { class: 'bar-label', style: labelStyle, text: fmtDuration(span.end - span.start) })
      ]);
      var row = el('div', {
        class: 'wf-row', role: 'treeitem', 'aria-level': String(span.depth + 1), 'aria-selected': 'false', tabindex: '-1',
        'data-span-id': span.spanId,
        onclick: function () { selectSpan(span, false); }
      }, [nameCol, timeline]);
      span.row = row;
      wf.appendChild(row);
    });
  }

  function selectSpan(span, scroll) {
    if (!span) return;
    if (selectedTrace === null || selectedTrace.id !== span.traceId) selectTrace(span.traceId);
    selectedSpan = span;
    document.querySelectorAll('.wf-row[aria-selected="true"]').forEach(function (r) { r.setAttribute('aria-selected', 'false'); });
    if (span.row) {
      span.row.setAttribute('aria-selected', 'true');
      if (scroll) {
        span.row.scrollIntoView({ block: 'center' });
        span.row.focus({ preventScroll: true });
      }
    }
    drawDetails(span);
  }

  function kvTable(kvs) {
    if (!kvs.length) return el('p', { class: 'muted', text: 'none' });
    return el('table', { class: 'kv' }, [el('tbody', null, kvs.map(function (kv) {
      return el('tr', null, [el('td', { text: kv.key }), el('td', { text: anyValue(kv.value) })]);
    }))]);
  }

  function linkWhy(link) {
    var why = (summary.linkTargets || {})[key(link.traceId, link.spanId)];
    if (why === 'never-captured') return 'The linked span was never captured: no service recorded it, or its trace context was lost on the way.';
    return 'The linked trace was not kept: this report shows ' + fmtCount(counts.shown) + ' of ' + fmtCount(counts.total) +
      ' traces (every broken one and a sample of the others).';
  }

  function drawDetails(span) {
    var details = document.getElementById('details');
    details.textContent = '';
    var trace = traces.get(span.traceId);
    var status = span.status.code === 2 ? el('span', { class: 'status-error', text: 'ERROR' + (span.status.message ? ': ' + span.status.message : '') })
      : el('span', { text: span.status.code === 1 ? 'OK' : 'unset' });
    details.appendChild(el('h3', { text: span.name }));
    var info = [
      { key: 'service', value: { stringValue: span.service } },
      { key: 'kind', value: { stringValue: KINDS[span.kind] || String(span.kind) } },
      { key: 'duration', value: { stringValue: fmtDuration(span.end - span.start) } },
      { key: 'starts at', value: { stringValue: '+' + fmtDuration(span.start - trace.start) + ' in the trace' } },
      { key: 'span id', value: { stringValue: span.spanId } },
      { key: 'parent span id', value: { stringValue: span.parentSpanId ? span.parentSpanId + (span.parent ? '' : ' (not in this report: parent lost)') : 'none (a root)' } },
      { key: 'trace id', value: { stringValue: span.traceId } }
    ];
    var table = kvTable(info);
    table.querySelector('tbody').appendChild(el('tr', null, [el('td', { text: 'status' }), el('td', null, [status])]));
    details.appendChild(table);
    details.appendChild(el('h4', { text: 'Attributes (' + span.attributes.length + ')' }));
    details.appendChild(kvTable(span.attributes));
    details.appendChild(el('h4', { text: 'Events (' + span.events.length + ')' }));
    if (!span.events.length) details.appendChild(el('p', { class: 'muted', text: 'none' }));
    else details.appendChild(el('ul', { class: 'events' }, span.events.map(function (e) {
      return el('li', null, [el('span', { class: 'at', text: '+' + fmtDuration(ms(e.timeUnixNano) - span.start) }), el('b', { text: e.name }),
        (e.attributes || []).length ? kvTable(e.attributes) : null]);
    })));
    details.appendChild(el('h4', { text: 'Links (' + span.links.length + ')' }));
    if (!span.links.length) details.appendChild(el('p', { class: 'muted', text: 'none' }));
    else details.appendChild(el('ul', { class: 'links' }, span.links.map(function (l) {
      var target = spansByKey.get(key(l.traceId, l.spanId));
      var label = target ? target.service + ': ' + target.name + (target.traceId === span.traceId ? ' (this trace)' : ' (trace ' + target.traceId.slice(0, 12) + '…)')
        : 'span ' + l.spanId + ' of trace ' + l.traceId;
      var button = el('button', {
        class: 'link-button', type: 'button', 'data-link-trace-id': l.traceId, 'data-link-span-id': l.spanId,
        onclick: function () { if (target) { selectSpan(target, true); } }
      }, [label]);
      if (!target) button.setAttribute('aria-disabled', 'true');
      return el('li', null, [button, target ? null : el('span', { class: 'link-why', text: linkWhy(l) }),
        (l.attributes || []).length ? kvTable(l.attributes) : null]);
    })));
    details.appendChild(el('h4', { text: 'Resource' }));
    details.appendChild(kvTable(span.resource));
    details.appendChild(el('h4', { text: 'Instrumentation scope' }));
    details.appendChild(kvTable([{ key: 'name', value: { stringValue: span.scope.name || '' } }, { key: 'version', value: { stringValue: span.scope.version || '' } }]));
  }

  // ---- start ---------------------------------------------------------------

  drawMap();
  drawProblems();
  drawTraces();
  if (traceList.length) selectTrace(traceList[0].id);
})();
