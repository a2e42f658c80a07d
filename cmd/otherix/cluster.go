package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/security"
)

// clusterInfo is what "otherix cluster info" prints.
type clusterInfo struct {
	Server        string `json:"server"`
	Context       string `json:"context,omitempty"`
	CAFingerprint string `json:"ca_fingerprint"`
	CASubject     string `json:"ca_subject"`
	CANotAfter    string `json:"ca_not_after"`
}

func (a *app) clusterCommand() *cobra.Command {
	cmd := groupCommand("cluster", "Show cluster-wide information")
	cmd.AddCommand(a.clusterInfoCommand())
	return cmd
}

func (a *app) clusterInfoCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show the API server and the cluster CA fingerprint",
		Long: `Show the API server this context talks to and the SHA-256 fingerprint of the
cluster CA, computed here from GET /v1/ca. Join tokens end in this
fingerprint; compare them before enrolling a node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var caPEM []byte
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				caPEM, err = c.CAPEM(ctx)
				return err
			}); err != nil {
				return err
			}
			info, err := newClusterInfo(a.server, a.contextName, caPEM)
			if err != nil {
				return err
			}
			return a.emit(info, func(bool) [][]string { return clusterInfoRows(info) })
		},
	}
}

// newClusterInfo parses the CA the server answered and fingerprints it.
func newClusterInfo(server, contextName string, caPEM []byte) (clusterInfo, error) {
	block, _ := pem.Decode(caPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return clusterInfo{}, fmt.Errorf("GET /v1/ca did not answer a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return clusterInfo{}, fmt.Errorf("GET /v1/ca: %w", err)
	}
	return clusterInfo{Server: server, Context: contextName, CAFingerprint: security.Fingerprint(cert),
		CASubject: cert.Subject.String(), CANotAfter: cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z")}, nil
}

func clusterInfoRows(info clusterInfo) [][]string {
	return [][]string{
		{"Server:", info.Server},
		{"Context:", orNone(info.Context)},
		{"CA fingerprint:", info.CAFingerprint},
		{"CA subject:", info.CASubject},
		{"CA expires:", info.CANotAfter},
	}
}
