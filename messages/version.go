package messages

// VersionInfo is GET /v1/version: what a control-plane replica runs. An
// anonymous caller learns the version only (enough to check compatibility
// before logging in); the build details, which help an attacker match a
// binary to known bugs, need any authenticated principal.
type VersionInfo struct {
	// Version is the release version (1.2.3) or "dev".
	Version string `json:"version"`
	// Commit is the VCS revision the binary was built from.
	Commit string `json:"commit,omitempty"`
	// BuildTime is when it was built (RFC 3339).
	BuildTime string `json:"build_time,omitempty"`
	// GoVersion is the Go toolchain that built it.
	GoVersion string `json:"go_version,omitempty"`
	// EtcdVersion is the version of the embedded etcd member.
	EtcdVersion string `json:"etcd_version,omitempty"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform,omitempty"`
	// Features lists what this replica's API offers beyond its version's
	// baseline, for clients that must not send a request an older
	// replica would misread (FeatureDryRun). Anyone may read it.
	Features []string `json:"features,omitempty"`
}
