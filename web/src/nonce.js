// xterm.js creates <style> elements at run time (theme colours, cell
// dimensions, the scrollbar). The page's Content-Security-Policy has no
// 'unsafe-inline' for styles; it allows this page's own per-response nonce
// instead. Stamping the nonce on every <style> at creation, before it is
// inserted, lets those sheets apply without weakening the policy.

export function stampStyleNonce(nonce) {
	if (!nonce) return;
	const create = Document.prototype.createElement;
	Document.prototype.createElement = function (tag, options) {
		const el = create.call(this, tag, options);
		if (String(tag).toLowerCase() === "style") el.setAttribute("nonce", nonce);
		return el;
	};
}
