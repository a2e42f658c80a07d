// What each console close code (messages/console.go) means to the user, and
// what the page does next: "wait" polls the VM until it runs and attaches
// again, "manual" waits for a click.
export const closeCodes = {
	4000: { text: "VM stopped — reconnecting when it runs again", next: "wait" },
	4001: { text: "Another interactive session took over this console", next: "manual", takeover: true },
	4002: { text: "The connection fell behind the console output — reconnecting", next: "wait" },
	4003: { text: "Lost the node agent (the VM keeps running) — reconnecting", next: "wait" },
	4004: { text: "Too much input at once for the serial line — session closed", next: "manual" },
	4005: { text: "The session stopped answering keepalives — reconnecting", next: "wait" },
};

/** describeClose returns {text, next, takeover} for a WebSocket close event. */
export function describeClose(code, reason) {
	const known = closeCodes[code];
	if (known) return known;
	if (code === 1008) return { text: "The server refused the console session" + (reason ? `: ${reason}` : ""), next: "manual" };
	return { text: `Connection closed (${code}${reason ? ": " + reason : ""}) — reconnecting`, next: "wait" };
}
