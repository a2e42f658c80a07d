// A live collection: list it (GET with meta.revision), then follow
// GET /v1/watch?types=TYPE from that revision, applying added, modified and
// deleted events in place. A 410 revision_compacted or a resync event lists
// again; a broken or closed stream reconnects with Last-Event-ID, which the
// API resumes from on any replica, so nothing is missed or repeated.
import * as api from "./api.js";
import { SSEParser } from "./sse.js";

// Reconnect backoff, in ms; the first retry is immediate-ish.
const backoff = [250, 1000, 2000, 5000, 10000, 15000];
// The API sends a bookmark every 15 s on an idle stream: nothing at all for
// this long means the connection is dead even if TCP has not noticed.
const idleTimeoutMs = 45000;

/**
 * Collection holds one resource type by id. A row's `revision` is its etcd
 * mod revision: an event older than the row held is a replay of a change a
 * later list page already showed, and is ignored.
 */
export class Collection {
	constructor() {
		this.items = new Map();
	}

	reset(items) {
		this.items = new Map();
		for (const it of items) if (it && it.id) this.items.set(it.id, it);
	}

	/** apply applies one watch event; it returns whether anything changed. */
	apply(kind, obj) {
		if (!obj || typeof obj.id !== "string") return false;
		if (kind === "deleted") return this.items.delete(obj.id);
		if (kind !== "added" && kind !== "modified") return false;
		const prev = this.items.get(obj.id);
		if (prev && (prev.revision || 0) > (obj.revision || 0)) return false;
		this.items.set(obj.id, obj);
		return true;
	}
}

/**
 * LiveList keeps a Collection of one watch type current.
 * opts: {type, path, onChange(collection), onStatus(state, detail), onAuth()}
 * states: listing, live, reconnecting, stopped, error.
 */
export class LiveList {
	constructor(opts) {
		this.opts = opts;
		this.col = new Collection();
		this.rev = 0;
		this.stopped = true;
		this.ctrl = null;
		this.attempt = 0;
		this.timer = 0;
		// gen changes at every start and stop: a loop of an earlier start,
		// still waiting on a request, sees it and ends instead of running
		// beside the new one.
		this.gen = 0;
	}

	start() {
		if (!this.stopped) return;
		this.stopped = false;
		this.gen++;
		this.rev = 0;
		this.attempt = 0;
		this.run(true, this.gen);
	}

	stop() {
		this.stopped = true;
		this.gen++;
		clearTimeout(this.timer);
		// A loop waiting out a backoff wakes up and sees it is over.
		if (this.wake) this.wake();
		if (this.ctrl) this.ctrl.abort();
		this.ctrl = null;
		// What one sign-in listed is never shown to the next: a stopped
		// list holds nothing.
		this.col.reset([]);
		this.rev = 0;
		this.status("stopped");
	}

	status(state, detail) {
		this.state = state;
		if (this.opts.onStatus) this.opts.onStatus(state, detail || "");
	}

	async run(list, gen) {
		const over = () => this.stopped || gen !== this.gen;
		while (!over()) {
			if (list) {
				this.status("listing");
				try {
					const { items, revision } = await api.listAll(this.opts.path);
					if (over()) return;
					this.col.reset(items);
					this.rev = revision;
					this.opts.onChange(this.col);
				} catch (err) {
					if (over()) return;
					if (err.status === 401) return this.authFailed();
					if (err.status === 403) {
						this.status("error", `your role may not list ${this.opts.type}`);
						this.stopped = true;
						return;
					}
					await this.wait(`cannot list ${this.opts.type}: ${err.message}`);
					continue;
				}
			}
			const next = await this.stream();
			if (over()) return;
			switch (next) {
				case "relist":
					list = true;
					break;
				case "auth":
					if (await api.refresh()) {
						list = false;
						break;
					}
					if (over()) return;
					return this.authFailed();
				default:
					// "reconnect" and any failure: back off, resume from rev.
					list = false;
					await this.wait(next.startsWith("reconnect") ? "stream closed; reconnecting" : next);
			}
		}
	}

	authFailed() {
		this.stop();
		if (this.opts.onAuth) this.opts.onAuth();
	}

	wait(detail) {
		this.status("reconnecting", detail);
		const delay = backoff[Math.min(this.attempt, backoff.length - 1)];
		this.attempt++;
		return new Promise((resolve) => {
			this.wake = () => {
				this.wake = null;
				resolve();
			};
			this.timer = setTimeout(this.wake, delay);
		});
	}

	// stream follows the watch until it ends and says what to do next:
	// "relist", "auth" (refresh, then resume at once), "reconnect", or a
	// message saying why it failed.
	async stream() {
		const ctrl = new AbortController();
		this.ctrl = ctrl;
		const headers = { Accept: "text/event-stream" };
		const token = api.accessToken();
		if (token) headers.Authorization = "Bearer " + token;
		// Last-Event-ID names the last revision applied (the list's first,
		// then each event's id): the API resumes right after it.
		if (this.rev > 0) headers["Last-Event-ID"] = String(this.rev);
		let resp;
		try {
			resp = await fetch("/v1/watch?types=" + encodeURIComponent(this.opts.type), {
				headers,
				signal: ctrl.signal,
				cache: "no-store",
				credentials: "omit",
			});
		} catch (err) {
			return "cannot reach the API: " + err.message;
		}
		if (resp.status === 410) return "relist";
		if (resp.status === 401) return "auth";
		if (!resp.ok || !resp.body) {
			let msg = resp.statusText || "HTTP " + resp.status;
			try {
				const e = (await resp.json()).error;
				if (e && e.code === "revision_compacted") return "relist";
				if (e && e.message) msg = e.message;
			} catch {
				// keep the status text
			}
			return `watch refused (${resp.status}): ${msg}`;
		}
		this.attempt = 0;
		this.status("live");
		let outcome = "reconnect";
		let idle = 0;
		const arm = () => {
			clearTimeout(idle);
			idle = setTimeout(() => ctrl.abort(), idleTimeoutMs);
		};
		let changed = false;
		let ended = false;
		const parser = new SSEParser((ev) => {
			// Nothing after an event that ends the stream is applied.
			if (ended) return;
			const r = handle(ev);
			if (r === "changed") changed = true;
			else if (r) {
				outcome = r;
				ended = true;
				ctrl.abort();
			}
		});
		const handle = (ev) => {
			switch (ev.event) {
				case "added":
				case "modified":
				case "deleted": {
					let obj;
					try {
						obj = JSON.parse(ev.data);
					} catch {
						return "";
					}
					const applied = this.col.apply(ev.event, obj);
					this.advance(ev.id);
					return applied ? "changed" : "";
				}
				case "bookmark":
					this.advance(ev.id);
					return "";
				case "resync":
					return "relist";
				case "error": {
					let code = "";
					try {
						code = JSON.parse(ev.data).error?.code || "";
					} catch {
						// an unreadable error still ends the stream
					}
					return code === "token_expired" ? "auth" : "reconnect";
				}
			}
			return "";
		};
		const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
		arm();
		try {
			for (;;) {
				const { value, done } = await reader.read();
				if (done) break;
				arm();
				changed = false;
				parser.feed(value);
				// One render per chunk, however many events it held.
				if (changed) this.opts.onChange(this.col);
			}
		} catch (err) {
			if (outcome === "reconnect" && !ctrl.signal.aborted) outcome = "reconnect: " + err.message;
		} finally {
			clearTimeout(idle);
			if (this.ctrl === ctrl) this.ctrl = null;
		}
		return outcome;
	}

	advance(id) {
		const n = Number(id);
		if (Number.isSafeInteger(n) && n > this.rev) this.rev = n;
	}
}
