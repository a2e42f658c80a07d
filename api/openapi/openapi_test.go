package openapi

import (
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestControlPlaneIsValid keeps the embedded contract loadable and valid
// OpenAPI 3; http/server's contract tests check the server against it.
func TestControlPlaneIsValid(t *testing.T) { checkContract(t, ControlPlane, "3.0.3") }

// TestAgentIsValid does the same for the agent's contract; nodeagent/server's
// tests check the agent against it. It is OpenAPI 3.1, the first version
// that can declare its authentication, mutual TLS.
func TestAgentIsValid(t *testing.T) { checkContract(t, Agent, "3.1.0") }

func checkContract(t *testing.T, spec []byte, version string) {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if doc.OpenAPI != version {
		t.Errorf("openapi %q, want %s", doc.OpenAPI, version)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" {
				t.Errorf("%s %s has no operationId", method, path)
			}
			if op.Responses.Default() == nil {
				t.Errorf("%s %s has no default (error envelope) response", method, path)
			}
		}
	}
}
