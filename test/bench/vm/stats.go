package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// series is the latencies of one measured path in one round.
type series struct {
	name string
	d    []time.Duration
	errs int
}

func (s *series) add(d time.Duration) { s.d = append(s.d, d) }

// pct is the nearest-rank percentile p (0-100) of s; 0 when empty.
func (s *series) pct(p float64) time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	d := slices.Clone(s.d)
	slices.Sort(d)
	i := int(float64(len(d))*p/100+0.999999) - 1
	return d[max(0, min(i, len(d)-1))]
}

// median is the median (mean of the two middle values when even).
func (s *series) median() time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	d := slices.Clone(s.d)
	slices.Sort(d)
	if n := len(d); n%2 == 0 {
		return (d[n/2-1] + d[n/2]) / 2
	}
	return d[len(d)/2]
}

func ms(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// loadavg is the first three fields of /proc/loadavg: what `uptime` prints.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
