// Unit tests of the dashboard's stream parsing and event application, run
// by `npm test` (node's own test runner, no dependencies). The browser test
// (test/e2e/dashboard_browser_test.go) covers the page against a real API.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SSEParser, maxBuffered } from "../src/sse.js";
import { Collection } from "../src/watch.js";

function parseAll(chunks) {
	const out = [];
	const p = new SSEParser((ev) => out.push(ev));
	for (const c of chunks) p.feed(c);
	return out;
}

test("events as the API writes them, split anywhere", () => {
	const stream =
		'id: 7\nevent: added\ndata: {"id":"a","revision":7}\n\n' +
		"id: 9\nevent: bookmark\ndata: {\"revision\":9}\n\n" +
		'event: resync\ndata: {"error":{"code":"resync"}}\n\n';
	const want = [
		{ id: "7", event: "added", data: '{"id":"a","revision":7}' },
		{ id: "9", event: "bookmark", data: '{"revision":9}' },
		// No id line: the event carries none (it is not a resume point).
		{ id: "", event: "resync", data: '{"error":{"code":"resync"}}' },
	];
	assert.deepEqual(parseAll([stream]), want);
	// Byte by byte, and at every two-way split, the result is the same.
	assert.deepEqual(parseAll([...stream]), want);
	for (let i = 1; i < stream.length; i++) assert.deepEqual(parseAll([stream.slice(0, i), stream.slice(i)]), want);
});

test("CRLF, comments, multi-line data, no space after the colon", () => {
	const got = parseAll([": keepalive\r\nid:3\r\nevent:modified\r\ndata:one\r\ndata: two\r\n\r\n\n\n"]);
	assert.deepEqual(got, [{ id: "3", event: "modified", data: "one\ntwo" }]);
});

test("an unterminated line is bounded", () => {
	const p = new SSEParser(() => {});
	assert.throws(() => p.feed("data: " + "x".repeat(maxBuffered + 1)));
});

test("collection applies events by revision", () => {
	const c = new Collection();
	c.reset([
		{ id: "a", name: "a", revision: 10 },
		{ id: "b", name: "b", revision: 20 },
	]);
	// A replay older than the row (a later list page showed it): ignored.
	assert.equal(c.apply("modified", { id: "b", name: "old-b", revision: 15 }), false);
	assert.equal(c.items.get("b").name, "b");
	assert.equal(c.apply("modified", { id: "a", name: "new-a", revision: 21 }), true);
	assert.equal(c.items.get("a").name, "new-a");
	assert.equal(c.apply("added", { id: "c", name: "c", revision: 22 }), true);
	// A deletion needs only the id (the API sends only it when the
	// previous value is gone).
	assert.equal(c.apply("deleted", { id: "b" }), true);
	assert.equal(c.apply("deleted", { id: "b" }), false);
	assert.deepEqual([...c.items.keys()].sort(), ["a", "c"]);
	// Junk changes nothing.
	assert.equal(c.apply("modified", null), false);
	assert.equal(c.apply("modified", { name: "no id" }), false);
	assert.equal(c.apply("bookmark", { id: "a", revision: 99 }), false);
});
