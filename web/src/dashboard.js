// The fleet dashboard: GET /ui/ serves a shell page that loads this script.
// It signs in through the API when the tab has no access token (the same
// login and sessionStorage token as the console page), then lists VMs,
// nodes and lifecycle events and follows each live from GET /v1/watch.
// Metrics are not etcd rows (they travel in heartbeats), so CPU and memory
// come from GET /v1/top/vms and /v1/top/nodes every few seconds while the
// tab is visible.
//
// Everything shown that a user or guest could have chosen (names, user
// data, messages, condition text, network names, emails, display names) is
// rendered as text: this file builds the DOM with h() and textContent only
// and never parses HTML.
import "./dashboard.css";
import { h } from "./dom.js";
import * as api from "./api.js";
import { LiveList } from "./watch.js";

const metricsEveryMs = 10000;
// How many CPU samples a VM's sparkline keeps.
const sparkPoints = 30;
// How many lifecycle events the page keeps.
const maxEvents = 100;

const ui = buildPage();
const state = {
	me: null,
	vmRows: new Map(), // id → {row, cells}
	nodeRows: new Map(),
	selected: "", // VM id whose details are open
	vmTop: new Map(), // id → VMMetricsView
	nodeTop: new Map(), // name → NodeTop
	cpuHistory: new Map(), // id → [cpu_percent]
	metricsTimer: 0,
	// Every VM name this page ever rendered: the browser test asserts a
	// developer's page never showed another user's VM, even for a moment.
	seen: new Set(),
	// VM names by id, kept after a VM goes, for the events about it.
	names: new Map(),
	running: false,
	liveAt: 0,
	// Bumped at every metrics read: rows showing metrics are rewritten.
	metricsGen: 0,
	// Bumped at every sign-in: an answer to an earlier session's request
	// is dropped, never shown to the user signed in now.
	session: 0,
};

const lists = {
	vms: new LiveList({
		type: "vms",
		path: "/v1/vms",
		onChange: () => schedule(renderVMs),
		onStatus: (s, d) => streamStatus("vms", s, d),
		onAuth: () => authLost(),
	}),
	nodes: new LiveList({
		type: "nodes",
		path: "/v1/nodes",
		onChange: () => schedule(renderNodes),
		onStatus: (s, d) => streamStatus("nodes", s, d),
		onAuth: () => authLost(),
	}),
	events: new LiveList({
		type: "events",
		// The last hour: the page shows the latest maxEvents anyway.
		path: "/v1/events?since=1h",
		onChange: () => schedule(renderEvents),
		onStatus: (s, d) => streamStatus("events", s, d),
		onAuth: () => authLost(),
	}),
};

// A hook for the browser test (test/e2e/dashboard_browser_test.go).
window.__otherixDashboard = {
	// "live" once every stream is following the watch.
	status: () => ui.conn.dataset.state || "",
	seen: () => [...state.seen],
	liveAt: () => state.liveAt || 0,
	// How long the last render of the VM table took, in ms.
	renderMs: () => state.renderMs || 0,
};

function start() {
	if (!api.accessToken()) {
		showLogin();
		return;
	}
	ui.login.hidden = true;
	ui.main.hidden = false;
	ui.signout.hidden = false;
	state.running = true;
	state.session++;
	loadMe();
	for (const l of Object.values(lists)) l.start();
	scheduleMetrics(0);
}

function stopAll() {
	state.running = false;
	for (const l of Object.values(lists)) l.stop();
	clearTimeout(state.metricsTimer);
	state.vmRows.clear();
	state.nodeRows.clear();
	state.vmTop.clear();
	state.nodeTop.clear();
	state.cpuHistory.clear();
	state.seen.clear();
	state.names.clear();
	state.selected = "";
	ui.vmBody.replaceChildren();
	ui.nodeBody.replaceChildren();
	ui.eventList.replaceChildren();
	ui.details.hidden = true;
	ui.vmCount.textContent = "0";
	ui.nodeCount.textContent = "0";
	ui.who.textContent = "";
	ui.role.textContent = "";
	ui.role.hidden = true;
}

function authLost() {
	if (!state.running) return;
	stopAll();
	api.clearSession();
	showLogin("Your session has expired — sign in again.");
}

async function loadMe() {
	const session = state.session;
	try {
		const me = await api.get("/v1/users/me");
		if (session !== state.session || !state.running) return;
		state.me = me;
		ui.who.textContent = me.display_name ? `${me.display_name} <${me.email}>` : me.email;
		ui.role.textContent = me.role;
		ui.role.hidden = !me.role;
	} catch (err) {
		if (err.status === 401 && session === state.session) authLost();
	}
}

// ---- streams and status ----------------------------------------------------

const streamStates = {};

function streamStatus(type, s, detail) {
	streamStates[type] = { s, detail };
	const all = Object.values(lists).map((l) => streamStates[l.opts.type]?.s || "starting");
	let overall = "live";
	if (all.some((x) => x === "reconnecting")) overall = "reconnecting";
	else if (all.some((x) => x === "listing" || x === "starting")) overall = "loading";
	else if (all.some((x) => x === "error")) overall = "partial";
	else if (all.every((x) => x === "stopped")) overall = "stopped";
	ui.conn.dataset.state = overall;
	ui.conn.textContent = overall;
	// When the page first showed the whole fleet live, in ms since it started
	// loading: the browser test reports it as the time to interactive.
	if (overall === "live" && !state.liveAt) state.liveAt = Math.round(performance.now());
	const problems = Object.entries(streamStates)
		.filter(([, v]) => v.detail && v.s !== "live")
		.map(([t, v]) => `${t}: ${v.detail}`);
	ui.conn.title = problems.join("\n");
	if (type === "nodes" && s === "error") ui.nodeNote.textContent = detail;
}

// schedule coalesces renders: a burst of events renders once.
const pending = new Set();
let renderTimer = 0;
function schedule(fn) {
	pending.add(fn);
	if (renderTimer) return;
	renderTimer = setTimeout(() => {
		renderTimer = 0;
		const fns = [...pending];
		pending.clear();
		for (const f of fns) f();
	}, 0);
}

// ---- VMs ------------------------------------------------------------------

function renderVMs() {
	const t0 = performance.now();
	const vms = [...lists.vms.col.items.values()].sort((a, b) => cmp(a.name, b.name) || cmp(a.id, b.id));
	ui.vmCount.textContent = String(vms.length);
	ui.vmEmpty.hidden = vms.length > 0;
	const keep = new Set();
	let prev = null;
	for (const vm of vms) {
		keep.add(vm.id);
		state.seen.add(vm.name);
		state.names.set(vm.id, vm.name);
		let r = state.vmRows.get(vm.id);
		if (!r) {
			r = vmRow(vm);
			state.vmRows.set(vm.id, r);
		}
		// A row is rewritten only when its VM (a new object for every
		// change the stream applies) or the metrics changed: a live change
		// to one VM of a thousand touches one row.
		if (r.vm !== vm || r.metricsGen !== state.metricsGen) {
			updateVMRow(r, vm);
			r.vm = vm;
			r.metricsGen = state.metricsGen;
		}
		// Keep DOM order = sorted order, moving only rows out of place.
		const want = prev ? prev.nextSibling : ui.vmBody.firstChild;
		if (want !== r.row) ui.vmBody.insertBefore(r.row, want);
		prev = r.row;
	}
	for (const [id, r] of state.vmRows) {
		if (!keep.has(id)) {
			r.row.remove();
			state.vmRows.delete(id);
			state.cpuHistory.delete(id);
		}
	}
	if (state.selected) renderDetails();
	// Node rows count the VMs on them; events name them.
	schedule(renderNodes);
	schedule(renderEvents);
	// For the browser test's measurement of large lists (BENCHMARKS.md).
	state.renderMs = performance.now() - t0;
}

function vmRow(vm) {
	const c = {
		link: h("a", { class: "vm-link" }),
		phase: h("span", { class: "phase" }),
		node: h("td", { class: "node" }),
		addrs: h("td", { class: "addrs mono" }),
		cpu: h("span", { class: "num" }),
		spark: svg("svg", { class: "spark", viewBox: `0 0 ${sparkPoints - 1} 20`, preserveAspectRatio: "none", "aria-hidden": "true" }),
		mem: h("td", { class: "mem num" }),
		msg: h("td", { class: "msg" }),
		more: h("button", { type: "button", class: "link details-btn" }, "Details"),
	};
	c.line = svg("polyline", { fill: "none", "stroke-width": "1.5", "vector-effect": "non-scaling-stroke" });
	c.spark.append(c.line);
	const row = h(
		"tr",
		{ class: "vm" },
		h("th", { scope: "row", class: "name" }, c.link),
		h("td", {}, c.phase),
		c.node,
		c.addrs,
		h("td", {}, h("span", { class: "cpu" }, c.spark, c.cpu)),
		c.mem,
		c.msg,
		h("td", {}, c.more),
	);
	c.more.addEventListener("click", () => {
		state.selected = row.dataset.id;
		renderDetails();
		ui.details.focus();
	});
	return { row, cells: c };
}

function updateVMRow(r, vm) {
	const c = r.cells;
	const phase = vm.status?.phase || "unknown";
	r.row.dataset.id = vm.id;
	r.row.dataset.vmName = vm.name;
	r.row.dataset.phase = phase;
	setText(c.link, vm.name);
	c.link.setAttribute("href", "/ui/vms/" + encodeURIComponent(vm.name) + "/console");
	c.link.setAttribute("title", `Open the serial console of ${vm.name}`);
	setText(c.phase, phase);
	c.phase.dataset.phase = phase;
	setText(c.node, vm.status?.node || vm.spec?.node || "—");
	setText(c.addrs, (vm.status?.addresses || []).join(", ") || "—");
	const m = state.vmTop.get(vm.id)?.metrics;
	setText(c.cpu, m ? `${m.cpu_percent.toFixed(1)} %` : "—");
	const hist = state.cpuHistory.get(vm.id) || [];
	c.line.setAttribute("points", sparkPointsOf(hist));
	c.spark.classList.toggle("empty", hist.length < 2);
	const mib = vm.spec?.memory_mib || 0;
	setText(c.mem, m ? `${bytes(m.rss_bytes)} / ${mib} MiB` : mib ? `${mib} MiB` : "—");
	const msg = vm.status?.message || "";
	setText(c.msg, msg);
	c.msg.title = msg;
	c.more.setAttribute("aria-label", `Details of ${vm.name}`);
}

function sparkPointsOf(hist) {
	if (hist.length < 2) return "";
	const top = Math.max(100, ...hist);
	const off = sparkPoints - hist.length;
	return hist.map((v, i) => `${off + i},${(20 - (v / top) * 19 - 0.5).toFixed(2)}`).join(" ");
}

function renderDetails() {
	const vm = lists.vms.col.items.get(state.selected);
	if (!vm) {
		ui.details.hidden = true;
		state.selected = "";
		return;
	}
	ui.details.hidden = false;
	const s = vm.spec || {};
	const st = vm.status || {};
	const rows = [
		["ID", vm.id],
		["Owner", vm.owner],
		["Phase", st.phase],
		["Power state", s.power_state],
		["Node", st.node || s.node],
		["Image", s.image?.url],
		["CPUs", s.cpus],
		["Memory", s.memory_mib ? `${s.memory_mib} MiB` : ""],
		["Disk", s.disk_gib ? `${s.disk_gib} GiB` : ""],
		["Networks", (s.networks || []).map((n) => (n.ip ? `${n.network} (${n.ip})` : n.network)).join(", ")],
		["NICs", (st.nics || []).map((n) => [n.network, n.ip, n.mac].filter(Boolean).join(" ")).join("; ")],
		["Addresses", (st.addresses || []).join(", ")],
		["Active task", st.active_task],
		["Message", st.message],
	];
	const dl = h("dl", { class: "kv" });
	for (const [k, v] of rows) {
		if (v === undefined || v === null || v === "") continue;
		dl.append(h("dt", {}, k), h("dd", {}, String(v)));
	}
	const conds = (st.conditions || []).map((c) =>
		h(
			"li",
			{},
			h("span", { class: "cond-type" }, `${c.type}=${c.status}`),
			c.reason ? h("span", { class: "cond-reason" }, ` ${c.reason}`) : null,
			c.message ? h("span", { class: "cond-msg" }, ` — ${c.message}`) : null,
		),
	);
	const events = [...lists.events.col.items.values()]
		.filter((e) => e.object?.id === vm.id)
		.sort((a, b) => b.revision - a.revision)
		.slice(0, 10)
		.map(eventItem);
	const parts = [
		h(
			"header",
			{},
			h("h2", { id: "details-title" }, vm.name),
			h("a", { href: "/ui/vms/" + encodeURIComponent(vm.name) + "/console", class: "button" }, "Console"),
			h("button", { type: "button", class: "link", onclick: closeDetails, "aria-label": "Close the details" }, "Close"),
		),
		dl,
		conds.length ? h("h3", {}, "Conditions") : null,
		conds.length ? h("ul", { class: "conds" }, conds) : null,
		s.user_data ? h("h3", {}, "User data") : null,
		s.user_data ? h("pre", { class: "userdata" }, s.user_data) : null,
		events.length ? h("h3", {}, "Events") : null,
		events.length ? h("ul", { class: "events" }, events) : null,
	];
	// replaceChildren would turn a null into the text "null".
	ui.details.replaceChildren(...parts.filter(Boolean));
	ui.details.dataset.id = vm.id;
}

function closeDetails() {
	state.selected = "";
	ui.details.hidden = true;
}

// ---- nodes ----------------------------------------------------------------

function renderNodes() {
	const nodes = [...lists.nodes.col.items.values()].sort((a, b) => cmp(a.name, b.name));
	ui.nodeCount.textContent = String(nodes.length);
	ui.nodeEmpty.hidden = nodes.length > 0;
	// The VMs on each node that the caller can see, from the live VM list
	// (the node row's own count is only as fresh as its last write).
	const counts = new Map();
	for (const vm of lists.vms.col.items.values()) {
		const on = vm.status?.node || vm.spec?.node;
		if (on) counts.set(on, (counts.get(on) || 0) + 1);
	}
	const keep = new Set();
	let prev = null;
	for (const n of nodes) {
		keep.add(n.id);
		let r = state.nodeRows.get(n.id);
		if (!r) {
			r = nodeRow();
			state.nodeRows.set(n.id, r);
		}
		updateNodeRow(r, n, counts.get(n.name) || 0);
		const want = prev ? prev.nextSibling : ui.nodeBody.firstChild;
		if (want !== r.row) ui.nodeBody.insertBefore(r.row, want);
		prev = r.row;
	}
	for (const [id, r] of state.nodeRows) {
		if (!keep.has(id)) {
			r.row.remove();
			state.nodeRows.delete(id);
		}
	}
}

function nodeRow() {
	const c = {
		name: h("th", { scope: "row", class: "name mono" }),
		phase: h("span", { class: "phase" }),
		cordon: h("span", { class: "tag", hidden: true }, "cordoned"),
		accel: h("td", {}),
		cpus: h("td", { class: "num" }),
		cpuBar: h("span", { class: "bar-fill" }),
		cpuPct: h("span", { class: "num" }),
		mem: h("td", { class: "num" }),
		vms: h("td", { class: "num" }),
		msg: h("td", { class: "msg" }),
	};
	const row = h(
		"tr",
		{ class: "node" },
		c.name,
		h("td", {}, c.phase, " ", c.cordon),
		c.accel,
		c.cpus,
		h("td", {}, h("span", { class: "cpu" }, h("span", { class: "load" }, c.cpuBar), c.cpuPct)),
		c.mem,
		c.vms,
		c.msg,
	);
	return { row, cells: c };
}

function updateNodeRow(r, n, vmCount) {
	const c = r.cells;
	const st = n.status || {};
	const cap = st.capacity || {};
	r.row.dataset.id = n.id;
	r.row.dataset.nodeName = n.name;
	r.row.dataset.phase = n.phase || "unknown";
	setText(c.name, n.name);
	setText(c.phase, n.phase || "unknown");
	c.phase.dataset.phase = n.phase || "unknown";
	c.cordon.hidden = !n.cordoned;
	setText(c.accel, [n.arch, cap.accelerator].filter(Boolean).join(" · ") || "—");
	setText(c.cpus, cap.cpus ? String(cap.cpus) : "—");
	const top = state.nodeTop.get(n.name);
	if (top && cap.cpus) {
		const pct = Math.min(100, top.cpu_percent / cap.cpus);
		// CSSOM, not a style attribute: the page's CSP blocks those.
		const w = `${pct.toFixed(1)}%`;
		if (c.cpuBar.style.width !== w) c.cpuBar.style.width = w;
		setText(c.cpuPct, `${pct.toFixed(0)} %`);
	} else {
		if (c.cpuBar.style.width !== "0px") c.cpuBar.style.width = "0px";
		setText(c.cpuPct, "—");
	}
	const memCap = cap.memory_mib ? `${Math.round(cap.memory_mib / 1024)} GiB` : "";
	setText(c.mem, top && memCap ? `${bytes(top.rss_bytes)} / ${memCap}` : memCap || "—");
	setText(c.vms, String(vmCount));
	setText(c.msg, st.message || "");
	c.msg.title = st.message || "";
}

// ---- events ---------------------------------------------------------------

function renderEvents() {
	const col = lists.events.col;
	const all = [...col.items.values()].sort((a, b) => b.revision - a.revision);
	// Keep the collection bounded: the oldest go.
	for (const e of all.slice(maxEvents)) col.items.delete(e.id);
	ui.eventList.replaceChildren(...all.slice(0, maxEvents).map(eventItem));
	ui.eventsEmpty.hidden = all.length > 0;
	if (state.selected) renderDetails();
}

function eventItem(e) {
	let obj = e.object?.id || "";
	if (e.object?.kind === "vm") obj = state.names.get(obj) || obj;
	if (e.object?.kind === "node") obj = [...lists.nodes.col.items.values()].find((n) => n.id === e.object.id)?.name || obj;
	return h(
		"li",
		{ class: "event", "data-severity": e.severity || "normal" },
		h("time", { datetime: e.time || "" }, shortTime(e.time)),
		h("span", { class: "ev-type" }, e.type || ""),
		h("span", { class: "ev-obj mono" }, obj),
		h("span", { class: "ev-msg" }, e.message || e.reason || ""),
	);
}

// ---- metrics --------------------------------------------------------------

function scheduleMetrics(delay) {
	clearTimeout(state.metricsTimer);
	state.metricsTimer = setTimeout(pollMetrics, delay);
}

async function pollMetrics() {
	if (!state.running) return;
	const session = state.session;
	if (document.visibilityState === "hidden") {
		scheduleMetrics(metricsEveryMs);
		return;
	}
	try {
		const [vms, nodes] = await Promise.all([
			api.get("/v1/top/vms?limit=200"),
			api.get("/v1/top/nodes").catch((err) => (err.status === 403 ? { items: [] } : Promise.reject(err))),
		]);
		if (!state.running || session !== state.session) return;
		state.vmTop = new Map((vms.items || []).map((v) => [v.id, v]));
		for (const [id, v] of state.vmTop) {
			if (!v.metrics) continue;
			const hist = state.cpuHistory.get(id) || [];
			hist.push(v.metrics.cpu_percent || 0);
			if (hist.length > sparkPoints) hist.shift();
			state.cpuHistory.set(id, hist);
		}
		state.nodeTop = new Map((nodes.items || []).map((n) => [n.name, n]));
		state.metricsGen++;
		schedule(renderVMs);
		schedule(renderNodes);
	} catch (err) {
		if (session !== state.session) return;
		if (err.status === 401) {
			authLost();
			return;
		}
		// Metrics are a nicety: the lists stay live without them.
	}
	if (session !== state.session) return;
	scheduleMetrics(metricsEveryMs);
}

document.addEventListener("visibilitychange", () => {
	if (document.visibilityState === "visible" && state.running) scheduleMetrics(0);
});

// ---- sign in --------------------------------------------------------------

function showLogin(message) {
	ui.main.hidden = true;
	ui.signout.hidden = true;
	ui.login.hidden = false;
	ui.loginError.textContent = message || "";
	ui.conn.dataset.state = "signed-out";
	ui.conn.textContent = "signed out";
	ui.email.focus();
}

async function submitLogin(ev) {
	ev.preventDefault();
	ui.loginError.textContent = "";
	ui.submit.disabled = true;
	try {
		await api.login(ui.email.value.trim(), ui.password.value);
	} catch (err) {
		ui.loginError.textContent = err.status === 401 ? "Wrong email or password." : err.message;
		return;
	} finally {
		ui.submit.disabled = false;
	}
	ui.password.value = "";
	start();
}

async function signOut() {
	stopAll();
	showLogin();
	await api.logout();
}

// ---- page -----------------------------------------------------------------

function buildPage() {
	const ui = {};
	ui.who = h("span", { class: "who", id: "who" });
	ui.role = h("span", { class: "tag", id: "role", hidden: true });
	ui.conn = h("span", { class: "conn", id: "conn", role: "status", "data-state": "starting" }, "starting");
	ui.signout = h("button", { type: "button", class: "link", id: "signout", hidden: true, onclick: signOut }, "Sign out");
	const header = h(
		"header",
		{ class: "bar" },
		h("span", { class: "brand" }, "Otherix"),
		h("span", { class: "sep" }, "/"),
		h("span", { class: "title" }, "Fleet"),
		h("span", { class: "spacer" }),
		ui.who,
		ui.role,
		ui.conn,
		ui.signout,
	);

	ui.email = h("input", { id: "email", name: "email", type: "email", autocomplete: "username", required: true });
	ui.password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
	ui.submit = h("button", { type: "submit", id: "login-submit" }, "Sign in");
	ui.loginError = h("p", { class: "error", id: "login-error", role: "alert" });
	ui.login = h(
		"section",
		{ class: "login", id: "login", hidden: true },
		h(
			"form",
			{ id: "login-form", onsubmit: submitLogin },
			h("h1", {}, "Sign in to Otherix"),
			h("p", { class: "hint" }, "to see your VMs and the fleet's nodes"),
			h("label", { for: "email" }, "Email"),
			ui.email,
			h("label", { for: "password" }, "Password"),
			ui.password,
			ui.loginError,
			ui.submit,
		),
	);

	ui.vmCount = h("span", { class: "count", id: "vm-count" }, "0");
	ui.vmBody = h("tbody", { id: "vm-rows" });
	ui.vmEmpty = h("p", { class: "empty", id: "vm-empty" }, "No VMs you can see.");
	const vmSection = h(
		"section",
		{ class: "card", "aria-labelledby": "vms-title" },
		h("h2", { id: "vms-title" }, "VMs ", ui.vmCount),
		h(
			"div",
			{ class: "scroll" },
			h(
				"table",
				{ id: "vms" },
				h(
					"thead",
					{},
					h(
						"tr",
						{},
						...["Name", "Phase", "Node", "Addresses", "CPU", "Memory", "Message", ""].map((t) => h("th", { scope: "col" }, t)),
					),
				),
				ui.vmBody,
			),
		),
		ui.vmEmpty,
	);

	ui.nodeCount = h("span", { class: "count", id: "node-count" }, "0");
	ui.nodeBody = h("tbody", { id: "node-rows" });
	ui.nodeEmpty = h("p", { class: "empty", id: "node-empty" }, "No nodes enrolled.");
	ui.nodeNote = h("p", { class: "note", id: "node-note" });
	const nodeSection = h(
		"section",
		{ class: "card", "aria-labelledby": "nodes-title" },
		h("h2", { id: "nodes-title" }, "Nodes ", ui.nodeCount),
		h(
			"div",
			{ class: "scroll" },
			h(
				"table",
				{ id: "nodes" },
				h(
					"thead",
					{},
					h(
						"tr",
						{},
						...["Name", "State", "Arch · accel", "CPUs", "CPU load", "Memory", "VMs", "Message"].map((t) =>
							h("th", t === "VMs" ? { scope: "col", title: "VMs on this node that you can see" } : { scope: "col" }, t),
						),
					),
				),
				ui.nodeBody,
			),
		),
		ui.nodeEmpty,
		ui.nodeNote,
	);

	ui.eventList = h("ul", { class: "events", id: "event-list" });
	ui.eventsEmpty = h("p", { class: "empty" }, "No events yet.");
	const eventSection = h(
		"section",
		{ class: "card", "aria-labelledby": "events-title" },
		h("h2", { id: "events-title" }, "Events"),
		ui.eventList,
		ui.eventsEmpty,
	);

	ui.details = h("aside", { class: "card details", id: "vm-details", tabindex: "-1", "aria-labelledby": "details-title", hidden: true });
	ui.main = h("main", { class: "grid", hidden: true }, h("div", { class: "col" }, vmSection, nodeSection), h("div", { class: "col side" }, ui.details, eventSection));
	document.body.replaceChildren(header, ui.main, ui.login);
	document.addEventListener("keydown", (e) => {
		if (e.key === "Escape" && !ui.details.hidden) closeDetails();
	});
	return ui;
}

// ---- helpers --------------------------------------------------------------

function svg(tag, attrs) {
	const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
	for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
	return el;
}

// setText changes a node's text only when it differs, so an unchanged cell
// is not touched (no relayout, selection kept).
function setText(el, text) {
	const t = String(text ?? "");
	if (el.textContent !== t) el.textContent = t;
}

function cmp(a, b) {
	return a < b ? -1 : a > b ? 1 : 0;
}

function bytes(n) {
	if (!Number.isFinite(n) || n <= 0) return "0";
	const units = ["B", "KiB", "MiB", "GiB", "TiB"];
	let i = 0;
	while (n >= 1024 && i < units.length - 1) {
		n /= 1024;
		i++;
	}
	return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

function shortTime(t) {
	if (!t) return "";
	const d = new Date(t);
	if (Number.isNaN(d.getTime())) return "";
	return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// Last: start() reaches module-level state declared above.
start();
