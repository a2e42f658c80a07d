package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/otherix/otherix/persistence/etcd"
)

// storeCollector reads the store's space accounting at scrape time, so the
// gauges are never staler than the scrape and nothing polls between scrapes.
type storeCollector struct {
	status func(context.Context) (etcd.Status, error)
	log    *slog.Logger

	up, size, inUse, quota, alarm, defrags, lastDefrag *prometheus.Desc
}

var _ prometheus.Collector = (*storeCollector)(nil)

// storeScrapeTimeout bounds one status read: a wedged store must not hang
// the scrape.
const storeScrapeTimeout = 5 * time.Second

func newStoreCollector(status func(context.Context) (etcd.Status, error), log *slog.Logger) *storeCollector {
	return &storeCollector{
		status: status, log: log,
		up: prometheus.NewDesc("otherix_store_status_up",
			"1 when the store's status could be read at this scrape, 0 when not (the other store metrics are then absent).", nil, nil),
		size: prometheus.NewDesc("otherix_store_db_size_bytes",
			"Size of this member's backend file; etcd compares it with the quota before each write.", nil, nil),
		inUse: prometheus.NewDesc("otherix_store_db_size_in_use_bytes",
			"Space the live data and retained history occupy in the backend file; the rest is reclaimed by defragmentation.", nil, nil),
		quota: prometheus.NewDesc("otherix_store_quota_bytes",
			"Backend quota (etcd.quota_bytes); at it etcd raises the space alarm and refuses writes.", nil, nil),
		alarm: prometheus.NewDesc("otherix_store_alarm",
			"1 while an etcd alarm of that type is raised (nospace: writes answer 507 storage_full).", []string{"type"}, nil),
		defrags: prometheus.NewDesc("otherix_store_defragmentations_total",
			"Defragmentations of this member since the process started, by result.", []string{"result"}, nil),
		lastDefrag: prometheus.NewDesc("otherix_store_last_defragmentation_seconds",
			"How long the latest successful defragmentation kept the member busy.", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.size, c.inUse, c.quota, c.alarm, c.defrags, c.lastDefrag} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), storeScrapeTimeout)
	defer cancel()
	s, err := c.status(ctx)
	if err != nil {
		c.log.Warn("metrics: read store status", "err", err)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(s.DBSize))
	ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(s.DBSizeInUse))
	ch <- prometheus.MustNewConstMetric(c.quota, prometheus.GaugeValue, float64(s.Quota))
	ch <- prometheus.MustNewConstMetric(c.alarm, prometheus.GaugeValue, b(s.NoSpace), "nospace")
	ch <- prometheus.MustNewConstMetric(c.alarm, prometheus.GaugeValue, b(s.Corrupt), "corrupt")
	ch <- prometheus.MustNewConstMetric(c.defrags, prometheus.CounterValue, float64(s.Defrags), "ok")
	ch <- prometheus.MustNewConstMetric(c.defrags, prometheus.CounterValue, float64(s.DefragErrors), "error")
	ch <- prometheus.MustNewConstMetric(c.lastDefrag, prometheus.GaugeValue, s.LastDefrag.Seconds())
}
