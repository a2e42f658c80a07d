package server

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// fakeNodes is the node side of fakeCP: a real CA, join tokens and nodes in
// memory. The real enrollment (one etcd transaction) is tested with the
// gateway and end to end.
type fakeNodes struct {
	ca     *security.CA
	mu     sync.Mutex
	tokens map[string]messages.JoinToken // by id
	nodes  map[string]*messages.Node     // by name
	// lastSource is the source address Enroll last saw.
	lastSource string
}

func newFakeNodes() *fakeNodes {
	ca, err := security.NewCA("fake-cluster", time.Now())
	if err != nil {
		panic(err)
	}
	return &fakeNodes{ca: ca, tokens: map[string]messages.JoinToken{}, nodes: map[string]*messages.Node{}}
}

func (f *fakeNodes) CAPEM() []byte         { return f.ca.CertPEM() }
func (f *fakeNodes) CAFingerprint() string { return f.ca.Fingerprint() }

func (f *fakeNodes) CreateJoinToken(_ context.Context, p messages.Principal, req messages.CreateJoinTokenRequest) (*messages.CreatedJoinToken, error) {
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 24*time.Hour {
			return nil, messages.Invalid("ttl", "must be a duration from 1s to 24h")
		}
		ttl = d
	}
	tok, id, hash, err := security.NewJoinToken(f.ca.Fingerprint())
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	jt := messages.JoinToken{ID: id, Hash: hash, NodeName: req.NodeName, CreatedBy: p.UserID, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	f.mu.Lock()
	f.tokens[id] = jt
	f.mu.Unlock()
	return &messages.CreatedJoinToken{Token: tok, JoinToken: view(jt)}, nil
}

func view(jt messages.JoinToken) messages.JoinTokenView {
	return messages.JoinTokenView{ID: jt.ID, Kind: messages.JoinTokenKindNode, NodeName: jt.NodeName, CreatedBy: jt.CreatedBy, CreatedAt: jt.CreatedAt, ExpiresAt: jt.ExpiresAt}
}

func (f *fakeNodes) ListJoinTokens(context.Context, store.Page) ([]messages.JoinTokenView, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []messages.JoinTokenView
	for _, jt := range f.tokens {
		out = append(out, view(jt))
	}
	return out, "", nil
}

func (f *fakeNodes) RevokeJoinToken(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tokens[id]; !ok {
		return messages.NotFound("join_token", id)
	}
	delete(f.tokens, id)
	return nil
}

var errBadJoinToken = messages.Errorf(messages.KindUnauthenticated, "invalid_join_token", "the join token is unknown, used, expired or revoked")

func (f *fakeNodes) Enroll(_ context.Context, req messages.EnrollRequest, source string) (*messages.EnrollResponse, error) {
	if req.Name == "panic" {
		panic("boom")
	}
	jt, err := security.ParseJoinToken(req.Token)
	if err != nil {
		return nil, errBadJoinToken
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastSource = source
	stored, ok := f.tokens[jt.ID]
	if !ok || !security.TokenMatches(stored.Hash, jt.Secret) || time.Now().After(stored.ExpiresAt) {
		return nil, errBadJoinToken
	}
	if stored.NodeName != "" && stored.NodeName != req.Name {
		return nil, messages.Errorf(messages.KindForbidden, "node_name_not_allowed", "the join token is for node %q", stored.NodeName)
	}
	if _, ok := f.nodes[req.Name]; ok {
		return nil, messages.Errorf(messages.KindConflict, "node_name_conflict", "node %q is enrolled already", req.Name)
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil {
		return nil, messages.Errorf(messages.KindInvalid, "csr_policy", "csr is not PEM").WithDetail("reason", "malformed")
	}
	certPEM, fp, err := f.ca.SignNodeCSR(block.Bytes, req.Name, time.Now(), 0)
	if err != nil {
		var pe *security.PolicyError
		if errors.As(err, &pe) {
			return nil, messages.Errorf(messages.KindInvalid, "csr_policy", "%v", err).WithDetail("reason", pe.Reason)
		}
		return nil, err
	}
	delete(f.tokens, jt.ID)
	now := time.Now().UTC()
	n := &messages.Node{ID: messages.NewID(), Name: req.Name, CertFingerprint: fp, Phase: messages.NodePending,
		Arch: req.Arch, AgentVersion: req.AgentVersion, EnrolledAt: now, UpdatedAt: now, Revision: 1}
	f.nodes[req.Name] = n
	return &messages.EnrollResponse{Node: *n, Certificate: string(certPEM), CA: string(f.ca.CertPEM()), HeartbeatInterval: "30s"}, nil
}

func (f *fakeNodes) ListNodes(context.Context, store.Page) ([]*messages.Node, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*messages.Node
	for _, n := range f.nodes {
		out = append(out, n)
	}
	return out, "", nil
}

func (f *fakeNodes) GetNode(_ context.Context, name string) (*messages.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[name]
	if !ok {
		return nil, messages.NotFound("node", name)
	}
	return n, nil
}

func (f *fakeNodes) Heartbeat(_ context.Context, cert *x509.Certificate, hb messages.Heartbeat) (*messages.HeartbeatResponse, error) {
	name, err := security.NodeNameFromCert(cert)
	if err != nil {
		return nil, messages.Errorf(messages.KindUnauthenticated, "not_node_certificate", "not a node certificate")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[name]
	if !ok {
		return nil, messages.Errorf(messages.KindUnauthenticated, "unknown_node", "no such node")
	}
	if security.Fingerprint(cert) != n.CertFingerprint {
		return nil, messages.Errorf(messages.KindUnauthenticated, "certificate_not_recorded", "not the recorded certificate")
	}
	now := time.Now().UTC()
	next := *n
	next.Phase = messages.NodeReady
	capacity := hb.Capacity
	next.Status = messages.NodeStatus{LastHeartbeatAt: &now, Capacity: &capacity, VMCount: len(hb.VMs), Overlay: hb.Overlay}
	f.nodes[name] = &next
	return &messages.HeartbeatResponse{IntervalSeconds: 30, Desired: messages.DesiredState{Settings: messages.DefaultSettings()}}, nil
}

func (f *fakeNodes) Cordon(_ context.Context, name string) (*messages.Node, error) {
	return f.setCordoned(name, true)
}

func (f *fakeNodes) Uncordon(_ context.Context, name string) (*messages.Node, error) {
	return f.setCordoned(name, false)
}

func (f *fakeNodes) setCordoned(name string, cordoned bool) (*messages.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[name]
	if !ok {
		return nil, messages.NotFound("node", name)
	}
	next := *n
	next.Cordoned = cordoned
	next.Revision++
	f.nodes[name] = &next
	return &next, nil
}

func (f *fakeNodes) DeleteNode(_ context.Context, name string, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.nodes[name]; !ok {
		return messages.NotFound("node", name)
	}
	if name == "busy" && !force {
		return messages.Errorf(messages.KindConflict, "node_has_vms", "node busy has 1 vm(s) placed on it")
	}
	delete(f.nodes, name)
	return nil
}

func (f *fakeNodes) RenewNodeCert(context.Context, *x509.Certificate, messages.RenewRequest) (*messages.RenewResponse, error) {
	return nil, messages.Errorf(messages.KindUnavailable, "not_in_fake", "renewal is tested against the real gateway")
}
