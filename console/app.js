// The console's shell: the admin token form, the navigation between views, and the model list
// every view starts from. Views: board, compare, deployment, monitor (hash routes).
import { html, render, useState, useEffect, useCallback } from "./vendor/htm-preact-standalone-3.1.1.mjs";
import { get, token, setToken } from "./api.js";
import { Board } from "./board.js";
import { Compare } from "./compare.js";
import { Deployment } from "./deploy.js";
import { Monitor } from "./monitor.js";

const VIEWS = [
  ["board", "Board"],
  ["compare", "Compare"],
  ["deploy", "Deployment"],
  ["monitor", "Monitor"],
];

function route() {
  const [view, model] = location.hash.replace(/^#\/?/, "").split("/");
  return {
    view: VIEWS.some(([id]) => id === view) ? view : "board",
    model: model ? decodeURIComponent(model) : null,
  };
}

const refusal = (answer) => ({
  ok: false,
  text: `The admin API refused the request (no valid admin token): ${answer.error}`,
});

function TokenForm({ access, onToken }) {
  const [value, setValue] = useState("");
  const submit = (e) => {
    e.preventDefault();
    onToken(value);
    setValue("");
  };
  return html`<form class="token" onSubmit=${submit}>
    <label for="admin-token">Admin token</label>
    <input id="admin-token" type="password" autocomplete="off" value=${value}
      onInput=${(e) => setValue(e.currentTarget.value)} />
    <button type="submit">Use token</button>
    ${token() && html`<button type="button" onClick=${() => onToken("")}>Forget token</button>`}
    <span class=${`access ${access.ok ? "ok" : "error"}`} role="status" aria-label="Access">${access.text}</span>
  </form>`;
}

function App() {
  const [where, setWhere] = useState(route());
  const [models, setModels] = useState(null);
  const [access, setAccess] = useState({ ok: false, text: "" });

  const load = useCallback(async () => {
    if (!token()) {
      setModels(null);
      setAccess({ ok: false, text: "No admin token: enter it to see and change deployments." });
      return;
    }
    const answer = await get("/admin/models");
    if (answer.ok) {
      setModels(answer.data.models);
      setAccess({ ok: true, text: "Signed in with the admin token." });
    } else {
      setModels(null);
      setAccess(refusal(answer));
    }
  }, []);

  useEffect(() => {
    load();
    const onHash = () => setWhere(route());
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, [load]);

  // A change refused for want of a valid token: say so and offer no more changes.
  const refused = useCallback((answer) => {
    if (answer && (answer.status === 401 || answer.status === 403)) {
      setModels(null);
      setAccess(refusal(answer));
    }
  }, []);

  const onToken = (value) => {
    setToken(value);
    load();
  };

  const model = where.model || (models && models[0] && models[0].name);
  const go = (view, name) => {
    location.hash = `#/${view}${name ? `/${encodeURIComponent(name)}` : ""}`;
  };

  let body;
  if (!models) {
    body = html`<p class="empty">The console shows models once the admin API accepts the token.</p>`;
  } else if (where.view === "board") {
    body = html`<${Board} models=${models} reload=${load} refused=${refused} />`;
  } else if (where.view === "compare") {
    body = html`<${Compare} models=${models} model=${model} go=${go} />`;
  } else if (where.view === "deploy") {
    body = html`<${Deployment} models=${models} model=${model} go=${go} reload=${load} refused=${refused} />`;
  } else {
    body = html`<${Monitor} models=${models} model=${model} go=${go} />`;
  }

  return html`
    <header>
      <h1>vigil</h1>
      <nav aria-label="Views">
        <ul>
          ${VIEWS.map(([id, label]) => html`<li>
            <a href=${`#/${id}${where.model ? `/${encodeURIComponent(where.model)}` : ""}`}
               aria-current=${where.view === id ? "page" : undefined}>${label}</a>
          </li>`)}
        </ul>
      </nav>
      <${TokenForm} access=${access} onToken=${onToken} />
    </header>
    <main>${body}</main>`;
}

render(html`<${App} />`, document.getElementById("app"));
