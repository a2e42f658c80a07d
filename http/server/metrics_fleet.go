package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otherix/otherix/watch"
)

// fleetCollector exposes the fleet's counts the watch hub keeps (VMs by
// phase, nodes and tasks by state, the job queue) and the hub's stream
// count. A scrape copies a few integers: the hub counted the fleet once
// when its watch started and moves the counts with each change, so nothing
// ranges over the store per scrape. Label values are the fixed sets in
// package watch; any other state is counted as "other".
type fleetCollector struct {
	hub *watch.Hub

	up, vms, nodes, tasks, jobs, claimed, clients *prometheus.Desc
}

var _ prometheus.Collector = (*fleetCollector)(nil)

func newFleetCollector(hub *watch.Hub) *fleetCollector {
	return &fleetCollector{hub: hub,
		up: prometheus.NewDesc("otherix_fleet_counts_up",
			"1 when the fleet counts below are current (the watch hub has counted the fleet), 0 before; every replica counts the whole fleet.", nil, nil),
		vms: prometheus.NewDesc("otherix_vms",
			"VMs by phase, cluster-wide.", []string{"phase"}, nil),
		nodes: prometheus.NewDesc("otherix_nodes",
			"Nodes by state, cluster-wide.", []string{"state"}, nil),
		tasks: prometheus.NewDesc("otherix_tasks",
			"Tasks by state, cluster-wide (finished ones until the cleanup loop removes them).", []string{"state"}, nil),
		jobs: prometheus.NewDesc("otherix_job_queue_depth",
			"Jobs in the queue, cluster-wide: waiting, backing off or claimed.", nil, nil),
		claimed: prometheus.NewDesc("otherix_jobs_claimed",
			"Jobs a dispatcher holds a claim on, cluster-wide.", nil, nil),
		clients: prometheus.NewDesc("otherix_watch_clients",
			"Watch streams (GET /v1/watch) this replica serves now.", nil, nil),
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.vms, c.nodes, c.tasks, c.jobs, c.claimed, c.clients} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.clients, prometheus.GaugeValue, float64(c.hub.Subscribers()))
	f, ok := c.hub.Fleet()
	if !ok {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, g := range []struct {
		desc   *prometheus.Desc
		counts map[string]int64
	}{{c.vms, f.VMs}, {c.nodes, f.Nodes}, {c.tasks, f.Tasks}} {
		for label, n := range g.counts {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(n), label)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(f.Jobs))
	ch <- prometheus.MustNewConstMetric(c.claimed, prometheus.GaugeValue, float64(f.Claimed))
}
