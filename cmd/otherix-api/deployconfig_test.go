package main

import (
	"testing"

	"github.com/otherix/otherix/deploy"
)

// TestDeployConfigsLoad loads the configuration the package installs and the
// examples with otherix-api's own loader, which refuses unknown keys and bad
// types: a shipped file that would stop the service fails here.
func TestDeployConfigsLoad(t *testing.T) {
	for _, name := range []string{"config/api.yaml", "examples/api-single.yaml", "examples/api-three-replicas.yaml"} {
		t.Run(name, func(t *testing.T) {
			b, err := deploy.Files.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := loadYAML(t, string(b))
			if err != nil {
				t.Fatalf("%s does not load: %v", name, err)
			}
			// The unit's StateDirectory=otherix is this directory.
			if cfg.DataDir != "/var/lib/otherix" {
				t.Errorf("%s: data_dir %q, want /var/lib/otherix (otherix-api.service's StateDirectory)", name, cfg.DataDir)
			}
		})
	}
}
