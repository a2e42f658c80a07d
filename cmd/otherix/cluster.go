package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// clusterInfo is what "otherix cluster info" prints.
type clusterInfo struct {
	Server        string `json:"server"`
	Context       string `json:"context,omitempty"`
	CAFingerprint string `json:"ca_fingerprint"`
	CASubject     string `json:"ca_subject"`
	CANotAfter    string `json:"ca_not_after"`
	// Replicas are the control plane's members (GET /v1/cluster/members);
	// empty when the caller may not list them (admin only).
	Replicas []messages.ClusterMember `json:"replicas,omitempty"`
}

func (a *app) clusterCommand() *cobra.Command {
	cmd := groupCommand("cluster", "Show cluster-wide information and settings")
	cmd.AddCommand(a.clusterInfoCommand(), a.clusterSettingsCommand(), a.clusterJoinTokenCommand(), a.clusterMembersCommand())
	return cmd
}

func (a *app) clusterInfoCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show the API server, the cluster CA fingerprint and the replicas",
		Long: `Show the API server this context talks to, the SHA-256 fingerprint of the
cluster CA, computed here from GET /v1/ca, and (for an admin) every
otherix-api replica with its role and health. Join tokens end in this
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
			// Admin only: anyone else still gets the CA.
			_ = a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				info.Replicas, err = c.ClusterMembers(ctx)
				return err
			})
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
	rows := [][]string{
		{"Server:", info.Server},
		{"Context:", orNone(info.Context)},
		{"CA fingerprint:", info.CAFingerprint},
		{"CA subject:", info.CASubject},
		{"CA expires:", info.CANotAfter},
	}
	for i, m := range info.Replicas {
		label := ""
		if i == 0 {
			label = "Replicas:"
		}
		name := m.Name
		if name == "" {
			name = "(not started) " + m.ID
		}
		state := m.Role
		if m.IsLeader {
			state += ", leader"
		}
		if !m.Healthy {
			state += ", unhealthy"
		}
		rows = append(rows, []string{label, name + " (" + state + ") " + orNone(m.APIURL)})
	}
	return rows
}

// settingKeys are the keys "cluster settings set" takes, with the syntax
// of their values.
var settingKeys = map[string]string{
	"overlay_supernet": "an IPv4 prefix, e.g. 100.87.0.0/16",
	"vni_range":        "MIN-MAX, e.g. 4096-16777215",
	"underlay_mtu":     "1280 to 9216",
	"wireguard_port":   "1 to 65535",
	"default_pool":     "a pool name",

	"event_retention_count": "lifecycle events kept, 100 to 1000000",
	"event_retention_age":   "a duration such as 168h",
}

func (a *app) clusterSettingsCommand() *cobra.Command {
	cmd := groupCommand("settings", "Show or change the cluster settings (admin)")
	cmd.AddCommand(a.settingsGetCommand(), a.settingsSetCommand())
	return cmd
}

func (a *app) settingsGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get",
		Short: "Show the cluster settings",
		Long: `Show the cluster-wide settings: the overlay supernet node tunnel addresses
come from, the VNI range of overlay networks, the underlay MTU, the WireGuard
port and the default pool. "-o json" prints the document as the API returns it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var s *messages.Settings
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				s, err = c.Settings(ctx)
				return err
			}); err != nil {
				return err
			}
			return a.emit(s, func(bool) [][]string { return settingsRows(s) })
		},
	}
}

func settingsRows(s *messages.Settings) [][]string {
	return [][]string{
		{"KEY", "VALUE"},
		{"overlay_supernet", s.OverlaySupernet},
		{"vni_range", fmt.Sprintf("%d-%d", s.VNIRange.Min, s.VNIRange.Max)},
		{"underlay_mtu", strconv.Itoa(s.UnderlayMTU)},
		{"wireguard_port", strconv.Itoa(s.WireGuardPort)},
		{"default_pool", s.DefaultPool},
		{"event_retention_count", strconv.Itoa(s.EventRetentionCount)},
		{"event_retention_age", s.EventRetentionAge},
		{"revision", strconv.FormatInt(s.Revision, 10)},
	}
}

func (a *app) settingsSetCommand() *cobra.Command {
	keys := make([]string, 0, len(settingKeys))
	for k, v := range settingKeys {
		keys = append(keys, "  "+k+": "+v)
	}
	sort.Strings(keys)
	return &cobra.Command{
		Use:   "set KEY=VALUE...",
		Short: "Change cluster settings",
		Long: `Change cluster settings. Keys:
` + strings.Join(keys, "\n") + `

The control plane checks the change against the cluster before writing it: an
overlay supernet that overlaps anything a node's host routes (its addresses,
routes, resolvers, gateway, the control plane's address) is refused
(supernet_host_conflict, naming the node and the prefix), as is one that
overlaps a network (network_overlap) or is too small for the nodes
(supernet_too_small). Nodes are re-addressed into a new supernet at their next
heartbeat. The change is based on the settings as read first: if they changed
meanwhile it is refused (revision_conflict). See docs/networking.md for how to
choose a supernet.`,
		Example: `  otherix cluster settings set overlay_supernet=100.87.0.0/16
  otherix cluster settings set vni_range=4096-8191 wireguard_port=51821`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError(fmt.Errorf("nothing to change: give KEY=VALUE, e.g. overlay_supernet=100.87.0.0/16"))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			patch, err := parseSettingsArgs(args)
			if err != nil {
				return usageError(err)
			}
			var have, s *messages.Settings
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				have, err = c.Settings(ctx)
				return err
			}); err != nil {
				return err
			}
			if err := a.write(cmd.Context(), a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
				s, err = c.UpdateSettings(ctx, patch, opt, client.WithIfMatch(have.Revision))
				return err
			}); err != nil {
				return err
			}
			if !a.tabular() {
				return a.emit(s, nil)
			}
			changes := settingsChanges(have, s)
			if len(changes) == 0 {
				fmt.Fprintln(a.stdout, "settings unchanged")
				return nil
			}
			fmt.Fprintf(a.stdout, "settings configured (%s)\n", strings.Join(changes, ", "))
			return nil
		},
	}
}

// parseSettingsArgs reads KEY=VALUE arguments into a patch.
func parseSettingsArgs(args []string) (messages.SettingsPatch, error) {
	var p messages.SettingsPatch
	seen := map[string]bool{}
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		if !ok || v == "" {
			return p, fmt.Errorf("%q: want KEY=VALUE", arg)
		}
		k = strings.ReplaceAll(strings.ToLower(k), "-", "_")
		if _, known := settingKeys[k]; !known {
			return p, fmt.Errorf("unknown setting %q; settings: overlay_supernet, vni_range, underlay_mtu, wireguard_port, default_pool, event_retention_count, event_retention_age", k)
		}
		if seen[k] {
			return p, fmt.Errorf("%s given twice", k)
		}
		seen[k] = true
		num := func() (int, error) {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("%s=%q: want %s", k, v, settingKeys[k])
			}
			return n, nil
		}
		switch k {
		case "overlay_supernet":
			p.OverlaySupernet = &v
		case "default_pool":
			p.DefaultPool = &v
		case "event_retention_age":
			p.EventRetentionAge = &v
		case "event_retention_count":
			n, err := num()
			if err != nil {
				return p, err
			}
			p.EventRetentionCount = &n
		case "underlay_mtu":
			n, err := num()
			if err != nil {
				return p, err
			}
			p.UnderlayMTU = &n
		case "wireguard_port":
			n, err := num()
			if err != nil {
				return p, err
			}
			p.WireGuardPort = &n
		case "vni_range":
			lo, hi, ok := strings.Cut(v, "-")
			mn, err1 := strconv.Atoi(lo)
			mx, err2 := strconv.Atoi(hi)
			if !ok || err1 != nil || err2 != nil {
				return p, fmt.Errorf("vni_range=%q: want %s", v, settingKeys[k])
			}
			p.VNIRange = &messages.VNIRange{Min: mn, Max: mx}
		}
	}
	return p, nil
}

// settingsChanges names what moved between two documents.
func settingsChanges(a, b *messages.Settings) []string {
	var out []string
	ra, rb := settingsRows(a), settingsRows(b)
	for i := 1; i < len(ra)-1; i++ { // not the header, not the revision
		if ra[i][1] != rb[i][1] {
			out = append(out, fmt.Sprintf("%s %s→%s", ra[i][0], ra[i][1], rb[i][1]))
		}
	}
	return out
}
