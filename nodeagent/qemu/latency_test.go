package qemu

import (
	"os"
	"slices"
	"testing"
	"time"
)

// TestStartLatency measures Start → Dial → Cont → query-status "running",
// the control-path cost of a VM start. It logs the median (go test -v).
func TestStartLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	accels := []string{"tcg"}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		accels = append(accels, "kvm")
	}
	for _, accel := range accels {
		t.Run(accel, func(t *testing.T) {
			var ds []time.Duration
			for range 10 {
				s := testSpec(t)
				s.Accel = accel
				ctx := ctxT(t)
				t0 := time.Now()
				p, err := Start(ctx, s)
				if err != nil {
					if accel == "kvm" {
						t.Skipf("kvm present but unusable: %v", err)
					}
					t.Fatal(err)
				}
				tStart := time.Since(t0)
				m, err := Dial(ctx, QMPPath(s.RunDir))
				if err == nil {
					err = m.Cont(ctx)
				}
				var st Status
				if err == nil {
					st, err = m.Status(ctx)
				}
				d := time.Since(t0)
				if m != nil {
					m.Quit(ctx)
					m.Close()
				}
				stopProcess(t, p)
				if err != nil || !st.Running {
					t.Fatalf("status %+v, %v", st, err)
				}
				t.Logf("start %v, running %v", tStart.Round(time.Millisecond), d.Round(time.Millisecond))
				ds = append(ds, d)
			}
			slices.Sort(ds)
			t.Logf("%s: Start→running median %v (min %v, max %v) over %d runs",
				accel, ds[len(ds)/2].Round(time.Millisecond), ds[0].Round(time.Millisecond),
				ds[len(ds)-1].Round(time.Millisecond), len(ds))
		})
	}
}
