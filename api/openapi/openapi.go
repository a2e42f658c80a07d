// Package openapi embeds the API contracts, so the servers can serve them and
// tests can check the servers against them.
package openapi

import _ "embed"

// ControlPlane is the OpenAPI 3 contract of the control plane's REST API
// (otherix-api), served at /openapi.yaml.
//
//go:embed control-plane.yaml
var ControlPlane []byte

// Agent is the OpenAPI 3 contract of otherix-agent's mutual-TLS API, the one
// the control plane calls to run VM tasks on a node.
//
//go:embed agent.yaml
var Agent []byte
