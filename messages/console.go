package messages

import "time"

// The serial console protocol, the same on both hops (browser or CLI →
// control plane, control plane → agent), so the control plane proxies frames
// without translating them:
//
//   - binary WebSocket messages are terminal bytes: keystrokes towards the
//     guest, serial output from it;
//   - text messages are one JSON ConsoleControl each: "resize" from a client,
//     "hello" from the agent at attach, after which it sends the tail of the
//     serial log, then "replayed", then live output (no frame mixes the two);
//   - the server ends a session with one of the close codes below.

// Console modes.
const (
	ConsoleInteractive = "interactive" // reads and types; one at a time per VM
	ConsoleReadOnly    = "readonly"    // reads only; any number
)

// ConsoleReplayed is the control type that ends the replay of the log.
const ConsoleReplayed = "replayed"

// ConsoleControl is a JSON text frame.
type ConsoleControl struct {
	Type string `json:"type"` // "resize" | "hello" | "replayed"
	// resize: the client's terminal size. A serial line carries no window
	// size, so the agent records it and tells later readers; the guest's
	// stty stays the user's business.
	Cols int `json:"cols,omitempty"`
	Rows int `json:"rows,omitempty"`
	// hello: what the session is attached to.
	VM    string `json:"vm,omitempty"`
	Mode  string `json:"mode,omitempty"`
	Phase string `json:"phase,omitempty"`
}

// WebSocket close codes of a console session (4000-4999 is the application
// range). Clients branch on them: re-attach after ConsoleVMStopped once the
// VM runs again; say who took over after ConsoleTakenOver.
const (
	ConsoleVMStopped   = 4000 // QEMU exited: the guest powered off or was stopped
	ConsoleTakenOver   = 4001 // another interactive session attached with force
	ConsoleTooSlow     = 4002 // the client did not keep up with the output
	ConsoleAgentGone   = 4003 // the agent stopped or its connection broke; QEMU runs on
	ConsoleInputFlood  = 4004 // the client sent more input than the serial line takes
	ConsoleIdleTimeout = 4005 // no pong within the keepalive window
)

// Limits of a console session.
const (
	// ConsoleTokenTTL is how long a console token may wait to be used.
	ConsoleTokenTTL = 30 * time.Second
	// ConsoleReplayBytes is how much recent output a new session gets first.
	ConsoleReplayBytes = 64 << 10
	// ConsoleMaxFrame bounds one frame in either direction.
	ConsoleMaxFrame = 32 << 10
)

// ConsoleTokenRequest is the body of POST /v1/vms/{id}/console.
type ConsoleTokenRequest struct {
	Mode  string `json:"mode,omitempty"`  // interactive (default) or readonly
	Force bool   `json:"force,omitempty"` // interactive: take over from the current writer
}

// ConsoleToken answers POST /v1/vms/{id}/console: a single-use token for
// GET /v1/vms/{id}/console/ws?token=…, bound to the caller, the VM and the mode.
type ConsoleToken struct {
	Token     string    `json:"token"`
	URL       string    `json:"url"` // path and query of the WebSocket, relative to the API
	Mode      string    `json:"mode"`
	ExpiresAt time.Time `json:"expires_at"`
}
