// The admin API as the console uses it: every call carries the bearer token kept in
// sessionStorage (never a cookie), and every answer becomes {ok, status, data, error}.

const TOKEN_KEY = "vigil-admin-token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(json) {
  const h = {};
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function answer(response) {
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  const error = response.ok
    ? null
    : `${response.status} ${(data && data.error) || response.statusText}`;
  return { ok: response.ok, status: response.status, data, error };
}

export async function call(method, path, body) {
  try {
    const response = await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    return await answer(response);
  } catch (e) {
    return { ok: false, status: 0, data: null, error: `network error: ${e.message}` };
  }
}

export const get = (path) => call("GET", path);
export const put = (path, body) => call("PUT", path, body);
export const post = (path, body) => call("POST", path, body);
export const del = (path) => call("DELETE", path);

export const modelPath = (model) => `/admin/models/${encodeURIComponent(model)}`;

// Downloads a version's archive with the token (a plain link cannot send the header).
export async function download(model, version) {
  const path = `${modelPath(model)}/versions/${encodeURIComponent(version)}/download`;
  const response = await fetch(path, { headers: headers(false), credentials: "omit" });
  if (!response.ok) return (await answer(response)).error;
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `${model}-${version}.tar.gz`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  return null;
}
