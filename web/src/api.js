// The REST calls the console and dashboard pages make, over the same origin
// as the page. The access token lives in sessionStorage only: it goes with
// the tab. The refresh token is kept in memory only: it renews the access
// token of a page that signed in itself and is revoked on sign-out; a page
// loaded with only the tab's access token signs in again when it expires.

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

/** hasRefresh says whether this page holds a refresh token. */
export function hasRefresh() {
	return refreshToken !== "";
}

let refreshing = null;

/**
 * refresh trades the in-memory refresh token for a new pair; concurrent
 * callers share one request. It resolves true when the tab has a fresh
 * access token, false when it must sign in again.
 */
export function refresh() {
	if (!refreshToken) return Promise.resolve(false);
	if (!refreshing) {
		refreshing = (async () => {
			try {
				const pair = await request("POST", "/v1/auth/refresh", { refresh_token: refreshToken });
				if (!pair || !pair.access_token) return false;
				sessionStorage.setItem(TOKEN_KEY, pair.access_token);
				refreshToken = pair.refresh_token || refreshToken;
				return true;
			} catch {
				refreshToken = "";
				return false;
			} finally {
				refreshing = null;
			}
		})();
	}
	return refreshing;
}

/** get reads a JSON resource; a 401 is retried once after a refresh. */
export async function get(path) {
	try {
		return await request("GET", path);
	} catch (err) {
		if (err.status === 401 && (await refresh())) return request("GET", path);
		throw err;
	}
}

/**
 * listAll reads every page of a list. It answers the items and the lowest
 * meta.revision of its pages: watching from there misses no change, and a
 * change a later page already shows is recognised by the row's revision.
 */
export async function listAll(path) {
	const items = [];
	let revision = 0;
	let cursor = "";
	for (;;) {
		const sep = path.includes("?") ? "&" : "?";
		const page = await get(path + sep + "limit=200" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
		items.push(...(page.items || []));
		const rev = page.meta?.revision || 0;
		if (rev && (!revision || rev < revision)) revision = rev;
		cursor = page.next_cursor || "";
		if (!cursor) return { items, revision };
	}
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
