// `qcrash report REPORT.json -o REPORT.html`: the explore report as one
// self-contained page (docs/report.md): inline CSS and JavaScript, the
// report embedded as JSON, nothing loaded from anywhere (a Content-Security-
// Policy forbids it), so the file can be mailed or attached to a CI run.
// `qcrash report merge ...` goes to RunReportMerge (cli/report_merge.h).
#include <getopt.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cli/cli_common.h"
#include "cli/report_merge.h"

namespace qcrash::cli {
namespace {

constexpr const char* kUsage =
    "usage: qcrash report REPORT.json -o REPORT.html\n"
    "       qcrash report merge A.json B.json... -o ALL.json\n"
    "  REPORT.json: a report of `qcrash explore --workload W --report REPORT.json`\n"
    "  -o, --output FILE: the HTML page to write (one file, it loads nothing)\n";

// The page. The data block is filled in by RenderPage; the script draws
// everything from it. No SVG (its namespace is a URL), no external name of
// any kind: the only URL-like text in the page is the data's own.
constexpr const char* kPageHead = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>qcrash report</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 8px; }
h2 { font-size: 16px; margin: 22px 0 8px; border-bottom: 1px solid #ccc; padding-bottom: 3px; }
h3 { font-size: 14px; margin: 0 0 6px; }
table { border-collapse: collapse; margin: 4px 0 8px; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, monospace; font-size: 12px; }
.swatch { display: inline-block; width: 11px; height: 11px; border: 1px solid #888; margin-right: 5px; vertical-align: -1px; }
.legend span.item { margin-right: 14px; white-space: nowrap; }
.lane-label { font-size: 12px; color: #555; margin: 6px 0 2px; }
.lane { position: relative; background: #fafafa; border: 1px solid #ddd; overflow: hidden; }
.lane div { position: absolute; box-sizing: border-box; }
.op { top: 2px; height: 20px; border: 1px solid #fff; background: #9aa5b1; color: #fff; font-size: 11px; overflow: hidden; white-space: nowrap; padding-left: 2px; }
.op.flush { background: #444; }
.flush-tick { top: 0; bottom: 0; width: 1px; background: #000; }
.fua-tick { bottom: 0; height: 8px; width: 2px; background: #e6007e; }
.vmark { top: 0; height: 18px; color: #fff; background: #d62728; font-size: 11px; padding: 0 3px; white-space: nowrap; border-radius: 2px; }
.axis { position: relative; height: 16px; font-size: 11px; color: #666; }
.axis span { position: absolute; }
.violation { border: 1px solid #d62728; border-left: 6px solid #d62728; padding: 8px 12px; margin: 10px 0; background: #fffafa; }
.note { color: #666; font-size: 12px; }
.bad { color: #b00; font-weight: 600; }
details { margin: 6px 0; }
</style>
</head>
<body>
<h1 id="title">qcrash report</h1>
<noscript>This page draws itself with JavaScript, inline in the file; enable it to see the report.</noscript>
<div id="app"></div>
<script type="application/json" id="qcrash-data">)HTML";

constexpr const char* kPageTail = R"HTML(</script>
<script>
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('qcrash-data').textContent);
  const R = data.report;
  const app = document.getElementById('app');
  const WIDTH = 1300;
  const ZONE_COLOURS = {
    'header': '#6a3d9a', 'L1 table': '#ff7f00', 'L2 table': '#fdbf6f',
    'refcount table': '#33a02c', 'refcount block': '#b2df8a', 'data': '#1f78b4',
    'journal': '#fb9a99', 'snapshot': '#cab2d6', 'bitmap': '#b15928',
    'unowned': '#bbbbbb', 'data file': '#a6cee3'
  };
  const VERDICT_COLOURS = {
    'unchecked': '#e4e4e4', 'clean': '#2ca02c', 'leaks-only': '#bcbd22', 'repaired': '#17becf',
    'stale-data-exposed': '#ff7f0e', 'data-loss': '#d62728', 'unrecoverable': '#6b0000'
  };
  const MAX_VIOLATIONS = 50, MAX_FINDINGS = 20, MAX_RECORD_ROWS = 2000;

  function el(tag, attrs) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const k of Object.keys(attrs)) {
        if (k === 'class') e.className = attrs[k];
        else if (k === 'style') e.style.cssText = attrs[k];
        else e.setAttribute(k, attrs[k]);
      }
    }
    for (let i = 2; i < arguments.length; ++i) {
      const kid = arguments[i];
      if (kid === null || kid === undefined) continue;
      e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }
  function swatch(colour) { return el('span', {class: 'swatch', style: 'background:' + colour}); }
  function num(n) { return el('td', {class: 'num'}, Number(n).toLocaleString('en-US')); }
  function table(headers, rows, id) {
    const t = el('table', id ? {id: id} : null);
    t.append(el('tr', null, ...headers.map(h => el('th', null, h))));
    for (const r of rows) t.append(el('tr', null, ...r.map(c => c instanceof Node ? c : el('td', null, c))));
    return t;
  }
  function bytes(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1) + ' MiB';
    if (n >= 1024) return (n / 1024).toFixed(1) + ' KiB';
    return n + ' B';
  }
  function hex(n) { return '0x' + Number(n).toString(16); }
  function pointOf(stateId) {
    const m = /^p(\d+)/.exec(stateId || '');
    return m ? Number(m[1]) : null;
  }

  // ---- summary --------------------------------------------------------------
  document.getElementById('title').textContent =
      'qcrash report: ' + (R.workload || '?') + ', policy ' + (R.policy || '?');
  const summary = el('section', {id: 'summary'});
  summary.append(table(['field', 'value'], [
    ['workload', R.workload], ['policy', R.policy], ['enumerator', R.enumerator],
    ['engine', R.engine || 'qcrash'], ['bug switches', (R.bugs || []).join(', ') || 'none'],
    ['crash points', R.crash_points], ['states checked', R.states_checked + ' of ' + R.states_total +
        (R.budget_exhausted ? ' (budget exhausted)' : '')],
    ['violating states', R.violating_states], ['elapsed', Number(R.elapsed_seconds).toFixed(2) + ' s'],
    ['guest writes / flushes', R.guest_writes + ' / ' + R.guest_flushes],
    ['device flushes', R.device_flushes]
  ]));
  if (R.workload_error) summary.append(el('p', {class: 'bad'}, 'workload error: ' + R.workload_error));
  app.append(summary);

  // Verdicts best to worst (JSON objects come back sorted by name).
  const VERDICT_ORDER = Object.keys(VERDICT_COLOURS);
  const ordered = obj => VERDICT_ORDER.filter(k => k in obj).concat(Object.keys(obj).filter(k => !VERDICT_ORDER.includes(k)));
  const verdictRows = ordered(R.verdicts || {}).map(v => [
    el('td', null, swatch(VERDICT_COLOURS[v] || '#999'), v), num(R.verdicts[v])]);
  app.append(el('h2', null, 'Verdicts (states)'), table(['verdict', 'states'], verdictRows, 'verdicts'));
  const inv = R.violations_by_invariant || {};
  const invRows = Object.keys(inv).map(k => [k, num(inv[k])]);
  app.append(el('h2', null, 'Violations by invariant (states)'),
             invRows.length ? table(['invariant', 'violating states'], invRows, 'invariants')
                            : el('p', {id: 'invariants'}, 'No state violates an invariant.'));

  // ---- timeline -------------------------------------------------------------
  const W = R.write_log;
  const ops = R.ops || [];
  const P = R.points;
  const tl = el('section', {id: 'timeline'});
  app.append(el('h2', null, 'Timeline: operations, write log, crash points'), tl);
  if (!W || !P) {
    tl.append(el('p', {class: 'note'}, 'This report has no write log: run `qcrash explore --workload W ' +
        '--report FILE` (a crash enumerator, not eio) for the timeline.'));
  } else {
    const units = Math.max(1, W.record_count + 1);  // point p sits before record p
    const x = u => (u / units) * WIDTH;
    const span = (a, b) => Math.max(1, x(b) - x(a));
    const place = (d, a, b) => { d.style.left = x(a) + 'px'; d.style.width = span(a, b) + 'px'; return d; };
    tl.append(el('p', {class: 'note'}, W.record_count + ' log records (' + W.flushes +
        ' flushes), ' + ops.length + ' operations, ' + P.count + ' crash points. ' +
        'The horizontal axis is the log: crash point p is the crash just before record p ' +
        '(records 0..p-1 issued), drawn above that record.' +
        (W.bin_width > 1 ? ' Writes are drawn in bins of ' + W.bin_width + ' records.' : '') +
        (P.range_width > 1 ? ' Crash points are drawn in ranges of ' + P.range_width + '.' : '')));
    // Operations.
    tl.append(el('div', {class: 'lane-label'}, 'guest operations'));
    const opLane = el('div', {class: 'lane', id: 'ops-lane', style: 'height:24px;width:' + WIDTH + 'px'});
    for (const op of ops) {
      const d = place(el('div', {class: 'op' + (op.kind === 'flush' ? ' flush' : '')}), op.start, Math.max(op.end, op.start + 0.5));
      // Narrow ops lose their white border (it would hide them) and
      // alternate shades so that neighbours stay apart.
      if (span(op.start, op.end) < 6) {
        d.style.border = 'none';
        if (op.kind !== 'flush' && op.index % 2) d.style.background = '#5d6d7e';
      }
      d.title = 'op ' + op.index + ': ' + op.kind + (op.length ? ' ' + hex(op.offset) + ' +' + op.length : '') +
          ', records ' + op.start + '..' + op.end;
      if (span(op.start, op.end) > 30) d.textContent = op.kind;
      opLane.append(d);
    }
    tl.append(opLane);
    // Writes by zone, flushes and FUA writes.
    tl.append(el('div', {class: 'lane-label'}, 'write log: writes by metadata zone (bar height: writes in the bin), flushes (black), FUA (pink)'));
    const H = 90;
    const logLane = el('div', {class: 'lane', id: 'log-lane', style: 'height:' + H + 'px;width:' + WIDTH + 'px'});
    const zones = W.zones;
    let maxWrites = 1;
    for (const b of W.bins) {
      let s = 0;
      for (let z = 0; z < zones.length; ++z) s += b[5 + z];
      maxWrites = Math.max(maxWrites, s);
    }
    for (const b of W.bins) {
      let y = 0;
      const parts = [], bars = [];
      for (let z = 0; z < zones.length; ++z) {
        const n = b[5 + z];
        if (!n) continue;
        parts.push(zones[z] + ' ' + n);
        const h = Math.max(2, (n / maxWrites) * (H - 10));
        const d = place(el('div', {class: 'zone-bar', style: 'background:' + ZONE_COLOURS[zones[z]]}), b[0], b[1]);
        d.style.bottom = y + 'px';
        d.style.height = h + 'px';
        y += h;
        bars.push(d);
      }
      const title = 'records ' + b[0] + '..' + (b[1] - 1) + ': ' + (parts.join(', ') || 'no writes') +
          (b[2] ? ', ' + b[2] + ' flush(es)' : '') + (b[3] ? ', ' + b[3] + ' FUA' : '');
      for (const d of bars) {
        d.title = title;
        logLane.append(d);
      }
      if (b[2]) {
        const t = el('div', {class: 'flush-tick', title: title});
        t.style.left = x(b[1] - 0.5) + 'px';
        logLane.append(t);
      }
      if (b[3]) {
        const t = el('div', {class: 'fua-tick', title: title});
        t.style.left = x(b[0]) + 'px';
        logLane.append(t);
      }
    }
    tl.append(logLane);
    // Crash points by worst verdict.
    tl.append(el('div', {class: 'lane-label'}, 'crash points, coloured by the worst verdict of their states; a red stripe above: a state there violates an invariant'));
    const pLane = el('div', {class: 'lane', id: 'points-lane', style: 'height:26px;width:' + WIDTH + 'px'});
    const NV = P.verdicts.length;
    for (const r of P.ranges) {
      const worst = r[2] < 0 ? 'unchecked' : P.verdicts[r[2]];
      const violating = r[3 + NV] || 0;
      const d = place(el('div', {style: 'top:6px;bottom:0;background:' + VERDICT_COLOURS[worst]}), r[0], r[1]);
      const counts = P.verdicts.map((v, i) => r[3 + i] ? v + ' ' + r[3 + i] : null).filter(Boolean);
      d.title = 'points ' + r[0] + '..' + (r[1] - 1) + ': worst ' + (r[2] < 0 ? 'none (no state checked)' : worst) +
          (counts.length ? ' (' + counts.join(', ') + ')' : '') + (violating ? ', ' + violating + ' violating' : '');
      pLane.append(d);
      // A red stripe over points with a violating state: a repaired state
      // may break an invariant (I1) while its verdict is not the worst.
      if (violating) {
        const v = place(el('div', {class: 'violating-stripe', style: 'top:0;height:6px;background:#d62728'}), r[0], r[1]);
        v.title = d.title;
        pLane.append(v);
      }
    }
    tl.append(pLane);
    // Violations at their points.
    const vLane = el('div', {class: 'lane', id: 'violations-lane', style: 'width:' + WIDTH + 'px'});
    const rowEnds = [];  // a marker goes to the first row where it does not cover another
    (R.violations || []).slice(0, MAX_VIOLATIONS).forEach((v, i) => {
      const p = pointOf(v.state_id);
      if (p === null) return;
      const left = Math.min(x(p), WIDTH - 60);
      let row = rowEnds.findIndex(end => end <= left);
      if (row < 0) row = rowEnds.push(0) - 1;
      rowEnds[row] = left + 60;
      const d = el('div', {class: 'vmark', title: v.invariant + ' at ' + v.state_id + ': ' + v.message}, '#' + i + ' ' + v.invariant);
      d.style.left = left + 'px';
      d.style.top = (row * 20) + 'px';
      vLane.append(d);
    });
    vLane.style.height = Math.max(1, rowEnds.length) * 20 + 'px';
    tl.append(el('div', {class: 'lane-label'}, 'violations (first state of each class)'), vLane);
    const axis = el('div', {class: 'axis', style: 'width:' + WIDTH + 'px'});
    for (let k = 0; k <= 10; ++k) {
      const u = Math.round(k * (units - 1) / 10);
      const s = el('span', null, String(u));
      s.style.left = Math.min(x(u), WIDTH - 40) + 'px';
      axis.append(s);
    }
    tl.append(axis);
    const legend = el('div', {class: 'legend', id: 'zone-legend'}, 'zones: ');
    for (const z of zones) legend.append(el('span', {class: 'item'}, swatch(ZONE_COLOURS[z]), z));
    const vlegend = el('div', {class: 'legend'}, 'verdicts: ');
    for (const v of ['unchecked'].concat(P.verdicts)) vlegend.append(el('span', {class: 'item'}, swatch(VERDICT_COLOURS[v]), v === 'unchecked' ? 'no state checked' : v));
    vlegend.append(el('span', {class: 'item'}, swatch('#d62728'), 'stripe: violating'));
    tl.append(legend, vlegend);

    // ---- zones and points tables --------------------------------------------
    app.append(el('h2', null, 'Writes by metadata zone'),
               table(['zone', 'writes', 'FUA writes', 'bytes'], W.zone_totals.filter(t => t.writes > 0).map(t => [
                 el('td', null, swatch(ZONE_COLOURS[t.zone]), t.zone), num(t.writes), num(t.fua_writes),
                 el('td', {class: 'num'}, bytes(t.bytes))]), 'zones'));
    const pw = P.by_worst_verdict;
    const pointRows = ordered(pw).filter(k => pw[k] > 0).map(k => [
      el('td', null, swatch(VERDICT_COLOURS[k] || '#999'), k === 'unchecked' ? 'no state checked' : k), num(pw[k])]);
    pointRows.push([el('td', null, swatch('#d62728'), el('b', null, 'with a violating state')), num(P.violating_points || 0)]);
    app.append(el('h2', null, 'Crash points by worst verdict'),
               el('p', {class: 'note'}, 'A point with no state checked: the enumerator gave it none of its own ' +
                   '(its states equal an earlier point\'s) or a budget stopped the run first.'),
               table(['worst verdict', 'crash points'], pointRows, 'points-summary'));
  }

  // ---- violations -----------------------------------------------------------
  const vs = R.violations || [];
  const vsec = el('section', {id: 'violations'});
  app.append(el('h2', null, 'Violations (' + vs.length + ' classes' +
      (R.violation_classes_dropped ? ', ' + R.violation_classes_dropped + ' more not kept' : '') + ')'), vsec);
  if (!vs.length) vsec.append(el('p', null, 'None: every state checked recovers within the invariants.'));
  function opAt(point) {
    for (const op of ops) if (point < op.end) return op;
    return null;
  }
  vs.slice(0, MAX_VIOLATIONS).forEach((v, i) => {
    const card = el('div', {class: 'violation', id: 'violation-' + i});
    const p = pointOf(v.state_id);
    const op = p === null ? null : opAt(p);
    card.append(el('h3', null, 'Violation #' + i + ': ' + v.invariant + ' during ' + v.op_class +
        (op ? ' (op ' + op.index + ')' : '') + (p === null ? '' : ' at crash point ' + p)));
    card.append(el('p', null, v.message));
    const m = v.minimized || {};
    card.append(table(['', 'state'], [
      ['found', el('td', {class: 'mono'}, v.state_id)],
      ['minimized', el('td', null, el('span', {class: 'mono'}, m.state_id || v.state_id),
          ' (' + (m.ops !== undefined ? m.ops : '?') + ' operations): ' + (m.message || ''))]]));
    const devs = m.deviations || [];
    card.append(el('div', null, el('b', null, 'Deviating sectors'),
        ' (how the minimized state differs from the latest state at its point): ' +
        (devs.length ? devs.length : 'none, the latest state itself fails')));
    if (devs.length) {
      card.append(table(['sector', 'offset', 'device', 'zone', 'holds'], devs.slice(0, 200).map(d => [
        num(d.sector), el('td', {class: 'mono'}, hex(d.offset)), d.device,
        el('td', null, swatch(ZONE_COLOURS[d.zone] || '#999'), d.zone), d.choice])));
    }
    const findings = m.raw_findings || v.raw_findings || [];
    if (findings.length) {
      const ul = el('ul', {class: 'findings'});
      for (const f of findings.slice(0, MAX_FINDINGS)) ul.append(el('li', {class: 'mono'}, f));
      if (findings.length > MAX_FINDINGS) ul.append(el('li', null, (findings.length - MAX_FINDINGS) + ' more'));
      card.append(el('div', null, el('b', null, 'Findings'), ' (the raw check of the crash image)'), ul);
    }
    card.append(el('div', null, el('b', null, 'Replay: '),
        el('code', {class: 'replay'}, 'qcrash replay ' + data.report_path + '#' + i)));
    if (v.reproducer) card.append(el('div', {class: 'note'}, 'reproducer: ' + v.reproducer));
    vsec.append(card);
  });
  if (vs.length > MAX_VIOLATIONS) vsec.append(el('p', {class: 'note'}, (vs.length - MAX_VIOLATIONS) + ' more violations in the JSON report.'));

  // ---- records --------------------------------------------------------------
  if (W && W.records.length) {
    const det = el('details', {id: 'records'});
    det.append(el('summary', null, 'Write log records (' + Math.min(W.records.length, MAX_RECORD_ROWS) +
        ' of ' + W.record_count + ' listed)'));
    const rows = [];
    let k = 0;
    W.records.slice(0, MAX_RECORD_ROWS).forEach((r, i) => {
      while (k < ops.length && i >= ops[k].end) ++k;
      const zone = r[4] < 0 ? '' : W.zones[r[4]];
      rows.push([num(i), k < ops.length ? ops[k].index + ' ' + ops[k].kind : 'end', r[0],
                 r[1] ? 'data file' : 'image', el('td', {class: 'mono'}, hex(r[2])), num(r[3]),
                 el('td', null, zone ? swatch(ZONE_COLOURS[zone]) : null, zone)]);
    });
    det.append(table(['record', 'op', 'kind', 'device', 'offset / size', 'length', 'zone'], rows));
    app.append(el('h2', null, 'Records'), det);
  }
  document.body.setAttribute('data-rendered', 'yes');
})();
</script>
</body>
</html>
)HTML";

// `json` as text safe inside a <script> element: '<' only occurs inside
// JSON strings, where \u003c reads back as '<', so no "</script" or "<!--"
// can end or change the block.
std::string ScriptSafeJson(const nlohmann::json& json) {
  const std::string text = DumpJson(json);
  std::string out;
  out.reserve(text.size() + text.size() / 16);
  for (char c : text) {
    if (c == '<') {
      out += "\\u003c";
    } else {
      out += c;
    }
  }
  return out;
}

Result<nlohmann::json> LoadExploreReport(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IoError("cannot open the report");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    return Status::InvalidArgument("not JSON: byte " + std::to_string(e.byte) + ": " + e.what());
  }
  if (!j.is_object() || !j.contains("verdicts") || !j["verdicts"].is_object() ||
      !j.contains("violations") || !j["violations"].is_array()) {
    return Status::InvalidArgument(
        "not the report of `qcrash explore --workload W --report FILE` (no \"verdicts\" object "
        "or \"violations\" array; a suite report has neither)");
  }
  return j;
}

// The page for report `j` read from `report_path` (the replay commands name it).
std::string RenderReportPage(const nlohmann::json& j, const std::string& report_path) {
  const nlohmann::json data = {{"report", j}, {"report_path", report_path}};
  return std::string(kPageHead) + ScriptSafeJson(data) + kPageTail;
}

}  // namespace

int RunReport(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "merge") return RunReportMerge(argc - 1, argv + 1);
  static const option kLong[] = {{"output", required_argument, nullptr, 'o'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {nullptr, 0, nullptr, 0}};
  ResetGetopt();
  std::string output;
  for (int c; (c = getopt_long(argc, argv, "o:h", kLong, nullptr)) != -1;) {
    switch (c) {
      case 'o':
        output = optarg;
        break;
      default:
        return HelpOrBadOption(c, kUsage);
    }
  }
  if (optind + 1 != argc) {
    std::fputs(kUsage, stderr);
    return ReportUsage(optind == argc ? "report: expecting one REPORT.json"
                                      : "report: expecting one REPORT.json, got more");
  }
  if (output.empty()) return ReportUsage("report: -o REPORT.html is required");
  const std::string input = argv[optind];
  auto report = LoadExploreReport(input);
  if (!report.ok()) return ReportError(input, report.status());
  const std::string page = RenderReportPage(*report, input);
  // Written beside the target and renamed: a failed write leaves nothing.
  const std::string temp = output + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << page;
    out.flush();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(temp, ignored);
      return ReportError(output, Status::IoError("cannot write the page"));
    }
  }
  std::error_code error;
  std::filesystem::rename(temp, output, error);
  if (error) {
    std::filesystem::remove(temp, error);
    return ReportError(output, Status::IoError("cannot write the page"));
  }
  std::printf("qcrash report: %s: %zu violation(s), %s crash points, %zu bytes\n", output.c_str(),
              report->at("violations").size(),
              report->contains("crash_points") ? report->at("crash_points").dump().c_str() : "?",
              page.size());
  return 0;
}

}  // namespace qcrash::cli
