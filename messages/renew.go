package messages

// RenewRequest is what an agent POSTs to /v1/renew on the agent-facing
// listener, over mutual TLS with its current certificate, when that
// certificate has used two thirds of its lifetime. CSR is the PEM of a
// request for a new key generated on the node; the key never leaves it.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// RenewResponse carries the new node certificate. The control plane keeps
// accepting the certificate the renewal was asked with until the node
// presents the new one, so a lost answer never locks a node out.
type RenewResponse struct {
	Certificate string `json:"certificate"` // PEM
	CA          string `json:"ca"`          // PEM
}
