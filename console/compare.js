// Compare 2–5 versions of a model side by side: params, signature, offline scores, and the
// live figures (p95 latency, acceptance, shadow agreement, live accuracy, promotion evidence),
// with a switch that hides the rows where every version agrees.
import { html, useState, useEffect } from "./vendor/htm-preact-standalone-3.1.1.mjs";
import { get, modelPath } from "./api.js";
import { num, fixed, pct, ms, when, estimate, dash } from "./format.js";
import { ModelPicker } from "./deploy.js";

const MAX = 5;

function signature(tensors) {
  return (tensors || []).map((t) => `${t.name} ${t.datatype} [${t.shape.join(", ")}]`).join("; ") || dash;
}

function rows(model, chosen, monitoring, quality) {
  const versions = chosen.map((v) => model.versions.find((x) => x.version === v)).filter(Boolean);
  const live = (v) => monitoring && monitoring.versions.find((x) => x.version === v.version);
  const q = (v) => quality && quality.versions.find((x) => x.version === v.version);
  const evidence = (v) => quality && quality.evidence.find((e) => e.shadow === v.version);
  const keys = (pick) => [...new Set(versions.flatMap((v) => Object.keys(pick(v) || {})))].sort();
  const out = [];
  const section = (title, list) => {
    if (list.length) out.push({ section: title }, ...list);
  };
  section("Version", [
    { label: "Created", values: versions.map((v) => when(v.created_at)) },
    { label: "Run", values: versions.map((v) => v.run || dash) },
    { label: "Role", values: versions.map((v) => v.role) },
    { label: "Status", values: versions.map((v) => v.status) },
  ]);
  section("Parameters", keys((v) => v.params).map((k) => ({ label: k, values: versions.map((v) => (v.params || {})[k] ?? dash) })));
  section("Signature", [
    { label: "Inputs", values: versions.map((v) => signature(v.inputs)) },
    { label: "Outputs", values: versions.map((v) => signature(v.outputs)) },
  ]);
  for (const split of ["validation", "test"]) {
    section(`${split[0].toUpperCase()}${split.slice(1)} scores`, keys((v) => (v.metrics || {})[split]).map((k) => ({
      label: k,
      values: versions.map((v) => fixed(((v.metrics || {})[split] || {})[k])),
    })));
  }
  section("Live", [
    { label: "Latency p95", values: versions.map((v) => ms(live(v)?.latency_p95)) },
    { label: "Acceptance rate", values: versions.map((v) => pct(live(v)?.acceptance_rate)) },
    { label: "Shadow agreement", values: versions.map((v) => pct(live(v)?.shadow?.agreement_rate)) },
    { label: "Live accuracy", values: versions.map((v) => estimate(q(v)?.recent?.accuracy)) },
    { label: "Labelled rows", values: versions.map((v) => num(q(v)?.labelled)) },
    {
      label: "Promotion evidence",
      values: versions.map((v) => {
        const e = evidence(v);
        return e ? `${e.state}: ${e.paired} paired rows, p = ${num(e.p_value, 4)}` : dash;
      }),
    },
  ]);
  return { versions, rows: out };
}

export function Compare({ models, model, go }) {
  const current = models.find((m) => m.name === model) || models[0];
  const [chosen, setChosen] = useState([]);
  const [diffOnly, setDiffOnly] = useState(false);
  const [monitoring, setMonitoring] = useState(null);
  const [quality, setQuality] = useState(null);

  useEffect(() => {
    const names = current.versions.map((v) => v.version);
    const first = current.champion && names.includes(current.champion) ? current.champion : names[0];
    const second = names.find((n) => n !== first);
    setChosen([first, second].filter(Boolean));
    get(`${modelPath(current.name)}/monitoring`).then((a) => setMonitoring(a.ok ? a.data : null));
    get(`${modelPath(current.name)}/quality`).then((a) => setQuality(a.ok ? a.data : null));
  }, [current.name]);

  const toggle = (version, on) => {
    setChosen((list) => (on ? [...list, version].slice(-MAX) : list.filter((v) => v !== version)));
  };
  const table = rows(current, chosen, monitoring, quality);
  const kept = table.rows.filter((row) => row.section || !diffOnly || new Set(row.values).size > 1);
  const shown = kept.filter((row, i) => !row.section || (kept[i + 1] && !kept[i + 1].section));

  return html`<section aria-labelledby="compare-heading">
    <h2 id="compare-heading">Compare versions of ${current.name}</h2>
    <${ModelPicker} models=${models} model=${current.name} onPick=${(name) => go("compare", name)} />
    <fieldset>
      <legend>Versions to compare (2 to ${MAX})</legend>
      ${current.versions.map((v) => html`<label class="check">
        <input type="checkbox" checked=${chosen.includes(v.version)}
          disabled=${!chosen.includes(v.version) && chosen.length >= MAX}
          onChange=${(e) => toggle(v.version, e.currentTarget.checked)} />
        Compare version ${v.version}</label>`)}
    </fieldset>
    <label class="check switch">
      <input type="checkbox" role="switch" checked=${diffOnly} onChange=${(e) => setDiffOnly(e.currentTarget.checked)} />
      Show differences only</label>
    ${table.versions.length < 2
      ? html`<p class="empty">Choose at least two versions.</p>`
      : html`<div class="scroll"><table class="compare">
        <caption>${current.name}: versions ${table.versions.map((v) => v.version).join(", ")}</caption>
        <thead><tr><th scope="col">Field</th>${table.versions.map((v) => html`<th scope="col">Version ${v.version}</th>`)}</tr></thead>
        <tbody>
          ${shown.map((row) => row.section
            ? html`<tr class="section"><th scope="colgroup" colspan=${table.versions.length + 1}>${row.section}</th></tr>`
            : html`<tr class=${new Set(row.values).size > 1 ? "differs" : ""}><th scope="row">${row.label}</th>${row.values.map((value) => html`<td>${value}</td>`)}</tr>`)}
        </tbody>
      </table></div>`}
  </section>`;
}
