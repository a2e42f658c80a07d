// The browser console: GET /ui/vms/{name}/console serves a shell page whose
// <body> carries the VM name and a style nonce; this script logs in through
// the API when the tab has no access token, resolves the VM, asks for a
// console token and attaches over a WebSocket (messages/console.go: binary
// frames are terminal bytes, text frames JSON control messages).
import "@xterm/xterm/css/xterm.css";
import "./console.css";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { stampStyleNonce } from "./nonce.js";
import { h } from "./dom.js";
import { describeClose } from "./closecodes.js";
import * as api from "./api.js";

// Before the terminal opens: xterm creates its <style> elements in open().
stampStyleNonce(document.body.dataset.styleNonce);

const vmName = document.body.dataset.vm || decodeURIComponent(location.pathname.split("/")[3] || "");
const params = new URLSearchParams(location.search);
const mode = params.get("mode") === "readonly" ? "readonly" : "interactive";

// Reconnect backoff while waiting for the VM to run again, in ms.
const backoff = [1000, 2000, 4000, 8000, 15000];

const ui = buildPage();
const term = new Terminal({
	cursorBlink: true,
	fontFamily: '"JetBrains Mono", "DejaVu Sans Mono", Menlo, Consolas, monospace',
	fontSize: 14,
	scrollback: 5000,
	disableStdin: mode === "readonly",
	theme: { background: "#0d1117", foreground: "#d1d7e0", cursor: "#7ee787", selectionBackground: "#264f78" },
});
const fit = new FitAddon();
term.loadAddon(fit);
term.open(ui.terminal);
fit.fit();

const encoder = new TextEncoder();
const state = { vm: null, ws: null, attempt: 0, timer: 0, stopped: false };

// A session starts with the tail of the serial log, which the agent ends
// with a "replayed" control. Queries in that tail (busybox's shell asks for
// the cursor position, ESC[6n, at every prompt) were asked of another
// terminal long ago: answering them now would type the answers into the
// guest's shell, so xterm.js does not answer status (CSI n) or
// device-attribute (CSI c) queries while it parses replayed output.
// replayMaxMs only guards against an agent that never sends the control.
const replayMaxMs = 5000;
const replay = { receiving: false, pending: 0, cap: 0 };
const swallowDuringReplay = () => replay.pending > 0;
term.parser.registerCsiHandler({ final: "n" }, swallowDuringReplay);
term.parser.registerCsiHandler({ final: "c" }, swallowDuringReplay);
term.parser.registerCsiHandler({ prefix: ">", final: "c" }, swallowDuringReplay);

function startReplay() {
	replay.receiving = true;
	clearTimeout(replay.cap);
	replay.cap = setTimeout(endReplay, replayMaxMs);
}

function endReplay() {
	replay.receiving = false;
	clearTimeout(replay.cap);
}

function output(bytes) {
	if (!replay.receiving) {
		term.write(bytes);
		return;
	}
	replay.pending++;
	term.write(bytes, () => replay.pending--);
}

term.onData((data) => send(encoder.encode(data)));
term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
term.onResize(() => sendResize());
let resizeFrame = 0;
window.addEventListener("resize", () => {
	cancelAnimationFrame(resizeFrame);
	resizeFrame = requestAnimationFrame(() => fit.fit());
});

// A hook for the browser test (test/e2e/console_browser_test.go): the
// terminal's whole buffer, scrollback included, as text.
window.__otherixConsole = {
	text() {
		const buf = term.buffer.active;
		const lines = [];
		for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? "");
		return lines.join("\n");
	},
	status: () => ui.conn.textContent,
};

start();

function start() {
	state.stopped = false;
	if (!api.accessToken()) {
		showLogin();
		return;
	}
	ui.signout.hidden = false;
	attach(false);
}

// attach resolves the VM and, when it runs, opens a console session.
async function attach(force) {
	clearTimeout(state.timer);
	if (state.stopped) return;
	setConn("connecting");
	let vm;
	try {
		vm = await api.getVM(vmName);
	} catch (err) {
		return apiFailed(err, "read the VM");
	}
	showVM(vm);
	const phase = vm.status?.phase || "unknown";
	if (phase !== "running") {
		setConn("waiting");
		return waitRunning(`${vm.name} is ${phase} — the console attaches when it runs`);
	}
	let tok;
	try {
		tok = await api.consoleToken(vm.id, mode, force);
	} catch (err) {
		return apiFailed(err, "open the console");
	}
	openSocket(tok);
}

function openSocket(tok) {
	const ws = new WebSocket(socketURL(tok.url));
	ws.binaryType = "arraybuffer";
	state.ws = ws;
	let opened = false;
	ws.onopen = () => {
		opened = true;
		state.attempt = 0;
		// Every session starts with the tail of the serial log: start from a
		// clean screen so a re-attach does not show that tail twice.
		term.reset();
		startReplay();
		hideNotice();
		setConn(mode === "readonly" ? "attached · read-only" : "attached");
		sendResize();
		term.focus();
	};
	ws.onmessage = (ev) => {
		if (typeof ev.data === "string") control(ev.data);
		else output(new Uint8Array(ev.data));
	};
	ws.onclose = (ev) => {
		if (state.ws !== ws) return;
		state.ws = null;
		endReplay();
		if (state.stopped) return;
		if (!opened) {
			handshakeFailed();
			return;
		}
		const what = describeClose(ev.code, ev.reason);
		term.write(`\r\n\x1b[2m[${what.text}]\x1b[0m\r\n`);
		if (ev.code === 4000 && state.vm) showVM({ ...state.vm, status: { ...state.vm.status, phase: "stopped" } });
		if (what.next === "wait") {
			setConn("disconnected");
			waitRunning(what.text);
			return;
		}
		setConn("closed");
		notice(what.text, [
			what.takeover && mode === "interactive" && button("Take over", () => attach(true)),
			button("Reconnect", () => attach(false)),
		]);
	};
}

// handshakeFailed handles a WebSocket that never opened. The API refuses
// an attach with an HTTP error before upgrading (console_busy,
// vm_not_running, a used token), which a browser does not show to scripts:
// ask the VM again, and if it still runs, let the user choose.
async function handshakeFailed() {
	let vm;
	try {
		vm = await api.getVM(vmName);
	} catch (err) {
		return apiFailed(err, "read the VM");
	}
	showVM(vm);
	if (vm.status?.phase !== "running") {
		setConn("waiting");
		return waitRunning(`${vm.name} is ${vm.status?.phase || "not running"} — the console attaches when it runs`);
	}
	setConn("closed");
	const actions = [button("Retry", () => attach(false))];
	if (mode === "interactive") {
		actions.unshift(button("Take over", () => attach(true)));
		actions.push(h("a", { href: "?mode=readonly", class: "button" }, "Open read-only"));
	}
	notice(
		mode === "interactive"
			? "Could not attach: the console may be in use by another interactive session."
			: "Could not attach to the console.",
		actions,
	);
}

// socketURL turns the API's WebSocket path (relative to the API, which is
// this page's origin) into a ws(s) URL.
function socketURL(path) {
	const u = new URL(path, location.href);
	u.protocol = u.protocol === "https:" || location.protocol === "https:" ? "wss:" : "ws:";
	return u.toString();
}

function control(text) {
	let msg;
	try {
		msg = JSON.parse(text);
	} catch {
		return;
	}
	if (msg.type === "replayed") {
		endReplay();
		return;
	}
	if (msg.type === "hello" && state.vm) {
		showVM({ ...state.vm, status: { ...state.vm.status, phase: msg.phase || state.vm.status?.phase } });
	}
}

function send(bytes) {
	const ws = state.ws;
	if (ws && ws.readyState === WebSocket.OPEN && mode === "interactive") ws.send(bytes);
}

function sendResize() {
	const ws = state.ws;
	if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
}

// waitRunning polls the VM with backoff and attaches once it runs.
function waitRunning(text) {
	clearTimeout(state.timer);
	const delay = backoff[Math.min(state.attempt, backoff.length - 1)];
	state.attempt++;
	notice(`${text} · checking again in ${Math.round(delay / 1000)} s`, [button("Check now", () => attach(false))]);
	state.timer = setTimeout(() => attach(false), delay);
}

function apiFailed(err, doing) {
	if (err.status === 401) {
		api.clearSession();
		showLogin("Your session has expired — sign in again.");
		return;
	}
	setConn("closed");
	if (err.status === 404) {
		notice(`No VM named “${vmName}” that you can see.`, [button("Retry", () => attach(false))]);
		return;
	}
	if (err.status === 403) {
		notice(`You may not ${doing}: ${err.message}`, [button("Retry", () => attach(false))]);
		return;
	}
	if (err.status === 409 && mode === "interactive") {
		// The console is busy (one interactive writer at a time) or the VM
		// changed state under us: say what the API said and let the user choose.
		notice(`Cannot ${doing}: ${err.message}`, [button("Take over", () => attach(true)), button("Retry", () => attach(false))]);
		return;
	}
	if (err.status === 0 || err.status >= 500) {
		setConn("disconnected");
		waitRunning(`Cannot ${doing}: ${err.message}`);
		return;
	}
	notice(`Cannot ${doing}: ${err.message}`, [button("Retry", () => attach(false))]);
}

function showVM(vm) {
	state.vm = vm;
	const phase = vm.status?.phase || "unknown";
	ui.name.textContent = vm.name || vmName;
	ui.phase.textContent = phase;
	ui.phase.dataset.phase = phase;
	document.title = `${vm.name || vmName} · ${phase} — Otherix console`;
}

function setConn(text) {
	ui.conn.textContent = text;
	ui.conn.dataset.state = text.split(" ")[0];
}

function notice(text, actions) {
	ui.noticeText.textContent = text;
	ui.noticeActions.replaceChildren(...actions.filter(Boolean));
	ui.notice.hidden = false;
}

function hideNotice() {
	ui.notice.hidden = true;
	ui.noticeText.textContent = "";
	ui.noticeActions.replaceChildren();
}

function button(label, onclick) {
	return h("button", { type: "button", onclick }, label);
}

function showLogin(message) {
	state.stopped = true;
	clearTimeout(state.timer);
	if (state.ws) {
		const ws = state.ws;
		state.ws = null;
		ws.close(1000, "signed out");
	}
	hideNotice();
	setConn("signed out");
	ui.signout.hidden = true;
	ui.loginError.textContent = message || "";
	ui.login.hidden = false;
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
	ui.login.hidden = true;
	start();
}

async function signOut() {
	showLogin();
	await api.logout();
}

function buildPage() {
	const ui = {};
	ui.name = h("span", { class: "vm-name", id: "vm-name" }, vmName);
	ui.phase = h("span", { class: "phase", id: "vm-phase", "data-phase": "unknown" }, "…");
	ui.conn = h("span", { class: "conn", id: "conn" }, "starting");
	ui.signout = h("button", { type: "button", class: "link", id: "signout", hidden: true, onclick: signOut }, "Sign out");
	const header = h(
		"header",
		{ class: "bar" },
		h("span", { class: "brand" }, "Otherix"),
		h("span", { class: "sep" }, "/"),
		ui.name,
		ui.phase,
		mode === "readonly" && h("span", { class: "tag" }, "read-only"),
		h("span", { class: "spacer" }),
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
			h("p", { class: "hint" }, `to open the console of ${vmName}`),
			h("label", { for: "email" }, "Email"),
			ui.email,
			h("label", { for: "password" }, "Password"),
			ui.password,
			ui.loginError,
			ui.submit,
		),
	);
	ui.noticeText = h("span", { id: "notice-text" });
	ui.noticeActions = h("span", { class: "actions" });
	ui.notice = h("div", { class: "notice", id: "notice", role: "status", hidden: true }, ui.noticeText, ui.noticeActions);
	ui.terminal = h("div", { class: "terminal", id: "terminal" });
	document.body.replaceChildren(header, ui.notice, h("main", {}, ui.terminal, ui.login));
	return ui;
}
