package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// CAKey holds the cluster CA certificate and private key, shared by every
// replica so any of them can sign node certificates.
//
// Like the JWT key ring, the value holds key material in the clear: the etcd
// data dir and its snapshots must stay readable by the API's user only.
const CAKey = Root + "secrets/ca"

// ErrNoCA reports a CA row that vanished while it was being loaded.
var ErrNoCA = errors.New("store: cluster ca missing")

type caRow struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

// LoadOrCreateCA returns the cluster CA's certificate and key PEM, creating
// them with create at first boot. Creation is a create-if-absent
// transaction, so replicas booting together all end up with the one CA that
// won; the losers' generated keys are discarded.
func (s *Store) LoadOrCreateCA(ctx context.Context, create func() (certPEM, keyPEM []byte, err error)) (certPEM, keyPEM []byte, err error) {
	resp, err := s.cli.Get(ctx, CAKey)
	if err != nil {
		return nil, nil, unavailable(err)
	}
	if len(resp.Kvs) > 0 {
		return decodeCA(resp.Kvs[0].Value)
	}
	certPEM, keyPEM, err = create()
	if err != nil {
		return nil, nil, fmt.Errorf("store: create ca: %w", err)
	}
	b, err := json.Marshal(caRow{CertPEM: string(certPEM), KeyPEM: string(keyPEM)})
	if err != nil {
		return nil, nil, fmt.Errorf("store: encode ca: %w", err)
	}
	tresp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(CAKey), "=", 0)).
		Then(clientv3.OpPut(CAKey, string(b))).
		Else(clientv3.OpGet(CAKey)).Commit()
	if err != nil {
		return nil, nil, unavailable(err)
	}
	if tresp.Succeeded {
		return certPEM, keyPEM, nil
	}
	kvs := tresp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, nil, fmt.Errorf("%w: vanished while loading", ErrNoCA)
	}
	return decodeCA(kvs[0].Value)
}

func decodeCA(data []byte) (certPEM, keyPEM []byte, err error) {
	var row caRow
	if err := json.Unmarshal(data, &row); err != nil {
		return nil, nil, fmt.Errorf("%w: cluster ca: %v", ErrCorruptRow, err)
	}
	if row.CertPEM == "" || row.KeyPEM == "" {
		return nil, nil, fmt.Errorf("%w: cluster ca: empty certificate or key", ErrCorruptRow)
	}
	return []byte(row.CertPEM), []byte(row.KeyPEM), nil
}
