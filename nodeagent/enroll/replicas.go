package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/otherix/otherix/http/failover"
	"github.com/otherix/otherix/internal/atomicfile"
)

// ReplicasFile holds the agent-facing URLs of the control plane's replicas,
// as the last heartbeat answer named them: where the agent fails over to
// when its current replica does not answer, across restarts. It is public
// (URLs), so 0644; bootstrap removes it, a new identity may be for another
// cluster.
const ReplicasFile = "replicas.json"

// maxReplicasFile bounds what is read back: the list holds at most
// failover.MaxServers URLs.
const maxReplicasFile = 64 << 10

// replicasDoc is the file's content.
type replicasDoc struct {
	Servers []string `json:"servers"`
}

// Servers returns the control-plane URLs the agent fails over between: the
// replicas of ReplicasFile (when it holds a usable list), then the URL
// bootstrap was given if the list lacks it, as the last resort an operator
// chose. A missing or unreadable file gives the bootstrap URL alone; the
// next heartbeat answer writes a good one.
func (s *State) Servers() []string {
	out := readReplicas(s.Dir)
	if !slices.Contains(out, s.Config.Server) {
		out = append(out, s.Config.Server)
	}
	return out
}

func readReplicas(dir string) []string {
	f, err := os.Open(filepath.Join(dir, ReplicasFile))
	if err != nil {
		return nil
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxReplicasFile+1))
	if err != nil || len(raw) > maxReplicasFile {
		return nil
	}
	var doc replicasDoc
	if json.Unmarshal(raw, &doc) != nil || CheckReplicaURLs(doc.Servers) != nil {
		return nil
	}
	return doc.Servers
}

// CheckReplicaURLs accepts a list a heartbeat answer may carry: one to
// failover.MaxServers https URLs of a host and port, nothing else.
func CheckReplicaURLs(urls []string) error {
	if len(urls) == 0 {
		return errors.New("no replica URL")
	}
	us, err := failover.ParseServers(urls)
	if err != nil {
		return err
	}
	for _, u := range us {
		if u.Scheme != "https" {
			return fmt.Errorf("replica URL %s is not https", u)
		}
	}
	return nil
}

// SaveReplicas writes the replica list to the state dir (atomically, 0644),
// unless it is what the file holds already. A list CheckReplicaURLs
// refuses is not written.
func SaveReplicas(dir string, urls []string) error {
	if err := CheckReplicaURLs(urls); err != nil {
		return fmt.Errorf("save replicas: %w", err)
	}
	if slices.Equal(readReplicas(dir), urls) {
		return nil
	}
	raw, err := json.Marshal(replicasDoc{Servers: urls})
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, ReplicasFile), append(raw, '\n'), publicMode)
}

// removeReplicas forgets the list of an identity being replaced.
func removeReplicas(dir string) error {
	if err := os.Remove(filepath.Join(dir, ReplicasFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}
