package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/otherix/otherix/test/bench/benchcluster"
)

// cluster is the benchmark's API and agent (benchcluster) with the VM
// shape it creates and the timed creates, for the breakdown.
type cluster struct {
	*benchcluster.Cluster
	shape   vmShape
	creates []apiCreate
}

func startCluster(bin, dir, imageURL string, shape vmShape, apiEnv, agentArgs []string) (*cluster, error) {
	bc, err := benchcluster.Start(bin, dir, imageURL, apiEnv, agentArgs, nil)
	if bc == nil {
		return nil, err
	}
	return &cluster{Cluster: bc, shape: shape}, err
}

func (c *cluster) spec() map[string]any {
	return map[string]any{"image": map[string]any{"url": c.ImageURL}, "cpus": c.shape.CPUs,
		"memory_mib": c.shape.MemoryMiB, "disk_gib": c.shape.DiskBytes >> 30}
}

// createAPI is POST /v1/vms, then long polls of its task until success; it
// returns the time from the request to the poll that saw success, then
// checks (untimed) that the VM's phase is running.
func (c *cluster) createAPI(name string) (time.Duration, string, error) {
	var a struct {
		Task benchcluster.TaskView `json:"task"`
		VM   benchcluster.VMView   `json:"vm"`
	}
	t0 := time.Now()
	if _, err := c.Call("POST", "/v1/vms", map[string]any{"name": name, "spec": c.spec()}, &a); err != nil {
		return 0, "", err
	}
	if _, err := c.WaitTask(a.Task.ID); err != nil {
		return 0, a.VM.ID, err
	}
	d := time.Since(t0)
	c.creates = append(c.creates, apiCreate{vmID: a.VM.ID, sent: t0, done: t0.Add(d)})
	return d, a.VM.ID, c.checkRunning(a.VM.ID)
}

func (c *cluster) checkRunning(ref string) error {
	var v benchcluster.VMView
	if _, err := c.Call("GET", "/v1/vms/"+ref, nil, &v); err != nil {
		return err
	}
	if v.Status.Phase != "running" {
		return fmt.Errorf("vm %s is %q after its create succeeded", ref, v.Status.Phase)
	}
	return nil
}

// createCLI times the whole `otherix vm create NAME --image URL --wait`.
func (c *cluster) createCLI(name string) (time.Duration, error) {
	args := []string{"vm", "create", name, "--image", c.ImageURL, "--cpus", fmt.Sprint(c.shape.CPUs),
		"--memory", fmt.Sprintf("%dMi", c.shape.MemoryMiB), "--disk", fmt.Sprintf("%dGi", c.shape.DiskBytes>>30), "--wait"}
	t0 := time.Now()
	out, err := c.cli(args...)
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("otherix %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return d, c.checkRunning(name)
}

func (c *cluster) cli(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.Bin, "otherix"), args...)
	cmd.Env = c.CLIEnv
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// deleteVM deletes (with force) and waits for the delete's task.
func (c *cluster) deleteVM(ref string) error {
	var a struct {
		Task benchcluster.TaskView `json:"task"`
	}
	if _, err := c.Call("DELETE", "/v1/vms/"+ref+"?force=true", nil, &a); err != nil {
		return err
	}
	_, err := c.WaitTask(a.Task.ID)
	return err
}
