// The few REST calls the console page makes, over the same origin as the
// page. The access token lives in sessionStorage only: it goes with the tab,
// and the refresh token is kept in memory, only to revoke it on sign-out.

const TOKEN_KEY = "otherix.access_token";

let refreshToken = "";

/** APIError is a non-2xx answer, with the API's error envelope unpacked. */
export class APIError extends Error {
	constructor(status, code, message) {
		super(message);
		this.status = status;
		this.code = code;
	}
}

export function accessToken() {
	return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function clearSession() {
	sessionStorage.removeItem(TOKEN_KEY);
}

async function request(method, path, body) {
	const headers = { Accept: "application/json" };
	if (body !== undefined) headers["Content-Type"] = "application/json";
	const token = accessToken();
	if (token) headers.Authorization = "Bearer " + token;
	let resp;
	try {
		resp = await fetch(path, {
			method,
			headers,
			body: body === undefined ? undefined : JSON.stringify(body),
			cache: "no-store",
			credentials: "omit",
		});
	} catch (err) {
		throw new APIError(0, "network", "cannot reach the API: " + err.message);
	}
	const text = await resp.text();
	let data = null;
	if (text) {
		try {
			data = JSON.parse(text);
		} catch {
			data = null;
		}
	}
	if (!resp.ok) {
		const e = (data && data.error) || {};
		throw new APIError(resp.status, e.code || "http_" + resp.status, e.message || resp.statusText || "request failed");
	}
	return data;
}

/** login exchanges the user's password for an access token. */
export async function login(email, password) {
	const pair = await request("POST", "/v1/auth/login", { email, password });
	if (!pair || !pair.access_token) throw new APIError(500, "bad_answer", "the API answered the login without a token");
	sessionStorage.setItem(TOKEN_KEY, pair.access_token);
	refreshToken = pair.refresh_token || "";
}

/** logout forgets the access token and revokes the refresh token if this tab holds it. */
export async function logout() {
	clearSession();
	const rt = refreshToken;
	refreshToken = "";
	if (rt) {
		try {
			await request("POST", "/v1/auth/logout", { refresh_token: rt });
		} catch {
			// Signed out locally either way; the token expires on its own.
		}
	}
}

/** getVM reads a VM by name or id. */
export function getVM(name) {
	return request("GET", "/v1/vms/" + encodeURIComponent(name));
}

/** consoleToken asks for a single-use console token: {token, url, mode, expires_at}. */
export function consoleToken(id, mode, force) {
	const body = { mode };
	if (force) body.force = true;
	return request("POST", "/v1/vms/" + encodeURIComponent(id) + "/console", body);
}
