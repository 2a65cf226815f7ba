// The monitor of one model: charts over the history the gateway keeps (request rate, latency,
// outlier scores, predictions, shadow agreement, live accuracy) and the latest KS drift test per
// feature as a table, coloured by the statistic, with every value and verdict in words.
import { html, useState, useEffect, useRef } from "./vendor/htm-preact-standalone-3.1.1.mjs";
import { get, post, modelPath } from "./api.js";
import { num, when, dash } from "./format.js";
import { ModelPicker } from "./deploy.js";

const COLOURS = ["#1f5fae", "#b3261e", "#2e7d32", "#8e24aa", "#e65100", "#00695c", "#5d4037"];
const WIDTH = 560;
const HEIGHT = 220;

// One uPlot chart, redrawn when its data changes; `summary` is what a screen reader hears.
function Chart({ title, summary, options, data }) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current || !globalThis.uPlot) return undefined;
    const plot = new globalThis.uPlot({ width: WIDTH, height: HEIGHT, ...options }, data, box.current);
    return () => plot.destroy();
  }, [JSON.stringify(data), JSON.stringify(options.series.map((s) => s.label))]);
  return html`<figure class="chart">
    <figcaption>${title}</figcaption>
    <div ref=${box} role="img" aria-label=${`${title}: ${summary}`}></div>
  </figure>`;
}

function NoData({ title, why }) {
  return html`<figure class="chart"><figcaption>${title}</figcaption><p class="empty">${why}</p></figure>`;
}

// Time series: x = every sampled time, one series per (version, field).
function timeSeries(versions, lines) {
  const times = [...new Set(versions.flatMap((v) => v.points.map((p) => p.time)))].sort((a, b) => a - b);
  const series = [{}];
  const data = [times];
  lines.forEach(({ version, label, value }, i) => {
    const at = new Map(version.points.map((p) => [p.time, value(p)]));
    series.push({ label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: true });
    data.push(times.map((t) => (at.has(t) && at.get(t) !== null && at.get(t) !== undefined ? at.get(t) : null)));
  });
  const hasValues = data.slice(1).some((column) => column.some((v) => v !== null));
  return { options: { series, scales: { x: { time: true } } }, data, hasValues };
}

function bars(labels, counts, label) {
  const x = labels.map((_, i) => i);
  return {
    options: {
      series: [{}, { label, fill: "#1f5fae88", stroke: "#1f5fae", paths: globalThis.uPlot.paths.bars({ size: [0.8, 64] }) }],
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] } },
      axes: [{ values: (_, ticks) => ticks.map((t) => labels[t] ?? "") , splits: () => x }, {}],
    },
    data: [x, counts],
  };
}

function lineChart(title, versions, lines, unit, missing) {
  const { options, data, hasValues } = timeSeries(versions, lines);
  if (!hasValues || data[0].length < 2) {
    const why = hasValues || !missing ? "Not enough points yet: the history gains one per interval." : missing;
    return html`<${NoData} title=${title} why=${why} />`;
  }
  const last = lines.map((l, i) => `${l.label} ${num(data[i + 1][data[0].length - 1])}${unit}`).join(", ");
  return html`<${Chart} title=${title} summary=${`latest ${last}`} options=${options} data=${data} />`;
}

// Background from white (D = 0) to a light red (D = 1), with black text: contrast stays high.
function heat(statistic) {
  const d = Math.max(0, Math.min(1, statistic || 0));
  return `hsl(0, 80%, ${Math.round(100 - d * 22)}%)`;
}

function DriftTable({ version }) {
  const drift = version.drift;
  if (!drift) {
    return html`<p>No drift evaluation yet for version ${version.version} (it needs a full window of rows and reference data).</p>`;
  }
  return html`<div class="scroll"><table class="drift">
    <caption>KS drift of version ${version.version} (${version.role}): ${drift.window_rows} recent rows against ${drift.reference_rows} reference rows, evaluated ${when(drift.evaluated_at)}; ${drift.drifted_features} feature(s) drifted</caption>
    <thead><tr><th scope="col">Feature</th><th scope="col">KS statistic D</th><th scope="col">p-value</th><th scope="col">Drift</th></tr></thead>
    <tbody>${drift.features.map((f) => html`<tr class=${f.drifted ? "drifted" : ""}>
      <th scope="row">${f.feature}</th>
      <td style=${`background:${heat(f.statistic)}`}>${num(f.statistic, 4)}</td>
      <td style=${`background:${heat(f.drifted ? 1 : 0)}`}>${num(f.p_value, 4)}</td>
      <td>${f.drifted ? "drifted" : "no drift"}</td>
    </tr>`)}</tbody>
  </table></div>`;
}

export function Monitor({ models, model, go }) {
  const current = models.find((m) => m.name === model) || models[0];
  const [history, setHistory] = useState(null);
  const [monitoring, setMonitoring] = useState(null);
  const [error, setError] = useState(null);

  const refresh = async () => {
    const [h, m] = await Promise.all([
      get(`${modelPath(current.name)}/monitoring/history`),
      get(`${modelPath(current.name)}/monitoring`),
    ]);
    setError(h.ok && m.ok ? null : h.error || m.error);
    if (h.ok) setHistory(h.data);
    if (m.ok) setMonitoring(m.data);
  };

  useEffect(() => {
    setHistory(null);
    setMonitoring(null);
    refresh();
    const timer = setInterval(refresh, 5000);
    return () => clearInterval(timer);
  }, [current.name]);

  const evaluate = async () => {
    const answer = await post(`${modelPath(current.name)}/monitoring/evaluate`);
    if (answer.ok) setMonitoring(answer.data);
    else setError(answer.error);
  };

  const versions = history ? history.versions : [];
  const champion = versions.find((v) => v.role === "champion");
  const shadows = versions.filter((v) => v.role === "shadow");
  const named = (v) => `version ${v.version} (${v.role})`;

  let predictions;
  const span = champion && champion.window;
  if (span && span.predictions) {
    const entries = Object.entries(span.predictions);
    const b = bars(entries.map(([k]) => k), entries.map(([, v]) => v), "predictions");
    predictions = entries.some(([, v]) => v > 0)
      ? html`<${Chart} title="Prediction distribution (champion, time kept)" summary=${entries.map(([k, v]) => `${k} ${v}`).join(", ")} options=${b.options} data=${b.data} />`
      : html`<${NoData} title="Prediction distribution (champion, time kept)" why="No prediction in the time kept." />`;
  } else {
    predictions = lineChart("Mean prediction", versions, versions.map((v) => ({ version: v, label: named(v), value: (p) => p.prediction_mean })), "");
  }
  let outliers;
  if (span && span.outlier_histogram && span.outlier_histogram.counts.some((c) => c > 0)) {
    const { edges, counts } = span.outlier_histogram;
    const labels = counts.map((_, i) => (i === 0 ? `<${edges[0]}` : i === edges.length ? `≥${edges[i - 1]}` : `${edges[i - 1]}`));
    const b = bars(labels, counts, "rows");
    outliers = html`<${Chart} title="Outlier scores (champion, time kept)" summary=${labels.map((l, i) => `${l}: ${counts[i]}`).join(", ")} options=${b.options} data=${b.data} />`;
  } else {
    outliers = html`<${NoData} title="Outlier scores (champion, time kept)" why="No scored row yet (scores need reference data)." />`;
  }

  return html`<section aria-labelledby="monitor-heading">
    <h2 id="monitor-heading">Monitor of ${current.name}</h2>
    <${ModelPicker} models=${models} model=${current.name} onPick=${(name) => go("monitor", name)} />
    ${error && html`<p class="outcome error" role="alert">${error}</p>`}
    ${history && html`<p>One point every ${num(history.interval_seconds, 1)} s, the last ${history.points_kept} kept.</p>`}
    <div class="charts">
      ${lineChart("Request rate (requests/s)", versions, versions.map((v) => ({ version: v, label: named(v), value: (p) => p.request_rate })), " /s")}
      ${lineChart("Latency (ms)", versions, versions.flatMap((v) => (v.role === "champion"
        ? [["p50", "latency_p50"], ["p95", "latency_p95"], ["p99", "latency_p99"]]
        : [["p95", "latency_p95"]]).map(([q, field]) => ({ version: v, label: `${q} ${named(v)}`, value: (p) => (p[field] == null ? null : p[field] * 1000) }))), " ms")}
      ${outliers}
      ${predictions}
      ${shadows.length
        ? lineChart("Shadow agreement with the champion", shadows, shadows.map((v) => ({ version: v, label: named(v), value: (p) => p.agreement_rate })), "")
        : html`<${NoData} title="Shadow agreement with the champion" why="No shadow is served." />`}
      ${lineChart("Live accuracy (recent labels)", versions, versions.map((v) => ({ version: v, label: named(v), value: (p) => (p.live_accuracy ? p.live_accuracy.value : null) })), "",
        "No labels yet: live accuracy comes from ground truth sent to POST /v1/models/{model}/feedback.")}
    </div>
    <h3>Drift per feature</h3>
    <p><button type="button" onClick=${evaluate}>Evaluate drift now</button></p>
    ${monitoring ? monitoring.versions.map((v) => html`<${DriftTable} key=${v.version} version=${v} />`) : html`<p>${dash}</p>`}
  </section>`;
}
