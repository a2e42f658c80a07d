package server

import (
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/otherix/otherix/messages"
)

// MetricsPath is the agent's Prometheus endpoint, on its mTLS listener.
const MetricsPath = "/metrics"

// Metrics configures the agent's Prometheus endpoint.
type Metrics struct {
	// Source returns the latest sample of every running VM.
	Source func() []messages.VMMetrics
	// Token, when set, lets a client without a certificate (Prometheus,
	// typically) read MetricsPath, and nothing else, by sending it as a
	// bearer token; the listener must then use AllowTokenClients. Empty:
	// only the control plane's certificate gets in, as for every route.
	Token string
}

// MinMetricsTokenLen is the shortest token LoadMetricsToken accepts.
const MinMetricsTokenLen = 32

// LoadMetricsToken reads the bearer token from path: one line, at least
// MinMetricsTokenLen characters, in a file only its owner can read.
func LoadMetricsToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("metrics token: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("metrics token: %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("metrics token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinMetricsTokenLen || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("metrics token: %s must hold one token of at least %d characters (openssl rand -hex 32)", path, MinMetricsTokenLen)
	}
	return tok, nil
}

// AllowTokenClients changes the listener's TLS so that a client may come
// without a certificate; a client that presents one must still be the
// control plane. NewHandler then lets certificate-less clients reach only
// MetricsPath, with the token.
func AllowTokenClients(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	verify := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		return verify(cs)
	}
	return c
}

// NewHandler is Handler with the Prometheus endpoint when m is not nil.
func NewHandler(b Backend, log *slog.Logger, m *Metrics) http.Handler {
	if m == nil || m.Source == nil {
		return newHandler(b, log, nil)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(vmCollector{src: m.Source})
	h := newHandler(b, log, promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPromLogger{log}}))
	if m.Token == "" {
		return h
	}
	token := []byte(m.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			h.ServeHTTP(w, r) // the control plane (VerifyConnection checked it)
			return
		}
		if r.URL.Path != MetricsPath {
			writeError(w, messages.Errorf(messages.KindUnauthenticated, "client_certificate_required",
				"only the control plane's client certificate is accepted here"))
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="otherix-agent metrics"`)
			writeError(w, messages.Errorf(messages.KindUnauthenticated, "unauthenticated",
				"the metrics endpoint needs the control plane's client certificate or the bearer token"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

type slogPromLogger struct{ log *slog.Logger }

func (l slogPromLogger) Println(v ...any) { l.log.Warn("metrics endpoint", "err", fmt.Sprint(v...)) }

// vmCollector exports the VMs' latest samples at each scrape. Labels are
// the VM's id and name and, for drives and NICs, the agent's own device
// names (disk0, seed0, tap names): nothing a user chooses beyond the name,
// so the series per VM are bounded by the device caps of messages.
type vmCollector struct{ src func() []messages.VMMetrics }

var (
	vmLabels  = []string{"vm_id", "vm_name"}
	devLabels = []string{"vm_id", "vm_name", "device"}

	descCPU       = prometheus.NewDesc("otherix_vm_cpu_seconds_total", "CPU time of the VM's vCPU threads.", vmLabels, nil)
	descVCPUs     = prometheus.NewDesc("otherix_vm_vcpus", "vCPUs of the VM.", vmLabels, nil)
	descRSS       = prometheus.NewDesc("otherix_vm_memory_rss_bytes", "Resident memory of the VM's QEMU process.", vmLabels, nil)
	descBalloon   = prometheus.NewDesc("otherix_vm_balloon_bytes", "Guest memory as the balloon device reports it (VMs with a balloon only).", vmLabels, nil)
	descSampledAt = prometheus.NewDesc("otherix_vm_sample_timestamp_seconds", "When the VM was last sampled (Unix time).", vmLabels, nil)
	descRdBytes   = prometheus.NewDesc("otherix_vm_disk_read_bytes_total", "Bytes read by the guest from a drive.", devLabels, nil)
	descWrBytes   = prometheus.NewDesc("otherix_vm_disk_write_bytes_total", "Bytes written by the guest to a drive.", devLabels, nil)
	descRdOps     = prometheus.NewDesc("otherix_vm_disk_read_ops_total", "Read operations of the guest on a drive.", devLabels, nil)
	descWrOps     = prometheus.NewDesc("otherix_vm_disk_write_ops_total", "Write operations of the guest on a drive.", devLabels, nil)
	descRXBytes   = prometheus.NewDesc("otherix_vm_network_receive_bytes_total", "Bytes the guest received on a NIC.", devLabels, nil)
	descTXBytes   = prometheus.NewDesc("otherix_vm_network_transmit_bytes_total", "Bytes the guest sent on a NIC.", devLabels, nil)
	descRXPackets = prometheus.NewDesc("otherix_vm_network_receive_packets_total", "Packets the guest received on a NIC.", devLabels, nil)
	descTXPackets = prometheus.NewDesc("otherix_vm_network_transmit_packets_total", "Packets the guest sent on a NIC.", devLabels, nil)
)

func (c vmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCPU, descVCPUs, descRSS, descBalloon, descSampledAt,
		descRdBytes, descWrBytes, descRdOps, descWrOps, descRXBytes, descTXBytes, descRXPackets, descTXPackets} {
		ch <- d
	}
}

func (c vmCollector) Collect(ch chan<- prometheus.Metric) {
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	for _, m := range c.src() {
		id, name := m.ID, m.Name
		ch <- prometheus.MustNewConstMetric(descCPU, counter, m.CPUSeconds, id, name)
		ch <- prometheus.MustNewConstMetric(descVCPUs, gauge, float64(m.VCPUs), id, name)
		ch <- prometheus.MustNewConstMetric(descRSS, gauge, float64(m.RSSBytes), id, name)
		if m.BalloonBytes != nil {
			ch <- prometheus.MustNewConstMetric(descBalloon, gauge, float64(*m.BalloonBytes), id, name)
		}
		ch <- prometheus.MustNewConstMetric(descSampledAt, gauge, float64(m.SampledAt.UnixMilli())/1000, id, name)
		for _, d := range m.Drives {
			ch <- prometheus.MustNewConstMetric(descRdBytes, counter, float64(d.ReadBytes), id, name, d.Device)
			ch <- prometheus.MustNewConstMetric(descWrBytes, counter, float64(d.WriteBytes), id, name, d.Device)
			ch <- prometheus.MustNewConstMetric(descRdOps, counter, float64(d.ReadOps), id, name, d.Device)
			ch <- prometheus.MustNewConstMetric(descWrOps, counter, float64(d.WriteOps), id, name, d.Device)
		}
		for _, n := range m.NICs {
			ch <- prometheus.MustNewConstMetric(descRXBytes, counter, float64(n.RXBytes), id, name, n.Device)
			ch <- prometheus.MustNewConstMetric(descTXBytes, counter, float64(n.TXBytes), id, name, n.Device)
			ch <- prometheus.MustNewConstMetric(descRXPackets, counter, float64(n.RXPackets), id, name, n.Device)
			ch <- prometheus.MustNewConstMetric(descTXPackets, counter, float64(n.TXPackets), id, name, n.Device)
		}
	}
}
