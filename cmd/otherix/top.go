package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

const topHelp = `The figures are the latest sample of each running VM that the nodes'
heartbeats carried: CPU is the vCPU threads' use over the agent's last two
samples (100% per host CPU kept busy), MEM the QEMU process's resident
memory, DISK and NET the read+write and receive+transmit rates. They are as
old as the last heartbeat (AGE), and are held by the control plane replica
that receives each node's heartbeats.`

func (a *app) vmTopCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show the busiest VMs by CPU, with memory, disk and network rates",
		Long:  "Show the busiest VMs you may list, by CPU.\n\n" + topHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 200 {
				return usageError(fmt.Errorf("--limit must be from 1 to 200"))
			}
			var items []messages.VMMetricsView
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				items, err = c.TopVMs(ctx, limit)
				return err
			}); err != nil {
				return err
			}
			return a.emit(newItemList(items), func(wide bool) [][]string { return topVMRows(items, wide, a.now()) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "show at most this many VMs (1-200)")
	return cmd
}

func (a *app) nodeTopCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "top",
		Short: "Show the nodes by their VMs' CPU use, with memory, disk and network rates",
		Long:  "Show every node with its VMs' latest samples summed, busiest first.\n\n" + topHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var items []messages.NodeTop
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				items, err = c.TopNodes(ctx)
				return err
			}); err != nil {
				return err
			}
			return a.emit(newItemList(items), func(wide bool) [][]string { return topNodeRows(items, wide, a.now()) })
		},
	}
}

// topVMRows is the vm top table; wide adds the VM id, vCPUs, CPU time and
// the window of the rates.
func topVMRows(items []messages.VMMetricsView, wide bool, now time.Time) [][]string {
	head := []string{"NAME", "NODE", "CPU", "MEM", "DISK", "NET", "AGE"}
	if wide {
		head = append(head, "ID", "VCPUS", "CPU TIME", "WINDOW")
	}
	rows := [][]string{head}
	for _, v := range items {
		m := v.Metrics
		if m == nil {
			continue
		}
		r := []string{v.Name, orNone(v.Node), percent(m.CPUPercent), bytesIEC(float64(m.RSSBytes)),
			rate(m.DiskBytesPerSec()), rate(m.NetBytesPerSec()), sampleAge(v.ReceivedAt, now)}
		if wide {
			r = append(r, v.ID, strconv.Itoa(m.VCPUs), seconds(m.CPUSeconds), seconds(m.WindowSeconds))
		}
		rows = append(rows, r)
	}
	return rows
}

// topNodeRows is the node top table; CPU% of the node is its VMs' use over
// its CPUs.
func topNodeRows(items []messages.NodeTop, wide bool, now time.Time) [][]string {
	head := []string{"NAME", "PHASE", "VMS", "CPU", "CPU%", "MEM", "DISK", "NET", "AGE"}
	if wide {
		head = append(head, "CPUS", "MEMORY", "OMITTED")
	}
	rows := [][]string{head}
	for _, n := range items {
		nodePct := none
		if n.CPUs > 0 {
			nodePct = percent(n.CPUPercent / float64(n.CPUs))
		}
		r := []string{n.Name, n.Phase, strconv.Itoa(n.VMs), percent(n.CPUPercent), nodePct, bytesIEC(float64(n.RSSBytes)),
			rate(n.DiskBytesPerSec), rate(n.NetBytesPerSec), sampleAge(n.ReceivedAt, now)}
		if wide {
			r = append(r, strconv.Itoa(n.CPUs), mib(int(n.MemoryMiB)), strconv.Itoa(n.OmittedVMMetrics))
		}
		rows = append(rows, r)
	}
	return rows
}

// describeMetrics writes the Metrics section of vm describe.
func describeMetrics(w io.Writer, v *messages.VMMetricsView, now time.Time) error {
	if v == nil || v.Metrics == nil {
		_, err := fmt.Fprintln(w, "Metrics:  "+none)
		return err
	}
	m := v.Metrics
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "Metrics:")
	fmt.Fprintf(tw, "  Sampled:\t%s (received %s ago)\n", when(m.SampledAt, now), sampleAge(v.ReceivedAt, now))
	window := "first sample, no rates yet"
	if m.WindowSeconds > 0 {
		window = "rates over " + seconds(m.WindowSeconds)
	}
	fmt.Fprintf(tw, "  CPU:\t%s of %d vCPUs (%s of CPU time; %s)\n", percent(m.CPUPercent), m.VCPUs, seconds(m.CPUSeconds), window)
	fmt.Fprintf(tw, "  Memory:\t%s resident (QEMU)\n", bytesIEC(float64(m.RSSBytes)))
	if m.BalloonBytes != nil {
		fmt.Fprintf(tw, "  Balloon:\t%s\n", bytesIEC(float64(*m.BalloonBytes)))
	}
	for _, d := range m.Drives {
		fmt.Fprintf(tw, "  Drive %s:\tread %s (%d ops, %s), write %s (%d ops, %s)\n", d.Device,
			bytesIEC(float64(d.ReadBytes)), d.ReadOps, rate(d.ReadBytesPerSec),
			bytesIEC(float64(d.WriteBytes)), d.WriteOps, rate(d.WriteBytesPerSec))
	}
	for _, n := range m.NICs {
		fmt.Fprintf(tw, "  NIC %s:\trx %s (%d packets, %s), tx %s (%d packets, %s)\n", n.Device,
			bytesIEC(float64(n.RXBytes)), n.RXPackets, rate(n.RXBytesPerSec),
			bytesIEC(float64(n.TXBytes)), n.TXPackets, rate(n.TXBytesPerSec))
	}
	return tw.Flush()
}

func percent(p float64) string { return strconv.FormatFloat(p, 'f', 1, 64) + "%" }

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(10 * time.Millisecond).String()
}

func rate(bps float64) string { return bytesIEC(bps) + "/s" }

// bytesIEC renders a byte count with a binary unit: 0B, 512B, 1.5KiB, 230.0MiB.
func bytesIEC(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(n, 'f', 0, 64) + "B"
	}
	return strings.TrimSuffix(strconv.FormatFloat(n, 'f', 1, 64), ".0") + units[i]
}

func sampleAge(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return none
	}
	return age(*t, now)
}
