// A Server-Sent Events parser for a fetch() body. The dashboard cannot use
// EventSource: it sends no Authorization header, and the API takes bearer
// tokens only. The parser follows the HTML standard's event-stream rules
// for the fields the API writes (id, event, data; comments ignored).

/** maxBuffered bounds an unterminated line a broken server could send. */
export const maxBuffered = 8 << 20;

export class SSEParser {
	/** onEvent receives {id, event, data} for each dispatched event. */
	constructor(onEvent) {
		this.onEvent = onEvent;
		this.buf = "";
		this.lastId = "";
		this.reset();
	}

	reset() {
		this.event = "";
		this.data = [];
		this.hasId = false;
	}

	/** feed parses a decoded chunk; it throws on an over-long line. */
	feed(chunk) {
		this.buf += chunk;
		let start = 0;
		for (;;) {
			const nl = this.buf.indexOf("\n", start);
			if (nl < 0) break;
			let line = this.buf.slice(start, nl);
			if (line.endsWith("\r")) line = line.slice(0, -1);
			start = nl + 1;
			this.line(line);
		}
		this.buf = this.buf.slice(start);
		if (this.buf.length > maxBuffered) throw new Error("event stream line too long");
	}

	line(line) {
		if (line === "") {
			this.dispatch();
			return;
		}
		if (line.startsWith(":")) return;
		const colon = line.indexOf(":");
		const field = colon < 0 ? line : line.slice(0, colon);
		let value = colon < 0 ? "" : line.slice(colon + 1);
		if (value.startsWith(" ")) value = value.slice(1);
		switch (field) {
			case "event":
				this.event = value;
				break;
			case "data":
				this.data.push(value);
				break;
			case "id":
				if (!value.includes("\0")) {
					this.lastId = value;
					this.hasId = true;
				}
				break;
		}
	}

	dispatch() {
		if (this.data.length === 0 && !this.event) {
			this.reset();
			return;
		}
		const ev = { id: this.hasId ? this.lastId : "", event: this.event || "message", data: this.data.join("\n") };
		this.reset();
		this.onEvent(ev);
	}
}
