package cloudinit

import (
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/otherix/otherix/messages"
)

func TestNetworkConfig(t *testing.T) {
	nics := []messages.NICStatus{
		{Network: "a", IP: "10.10.0.5", PrefixLen: 24, MAC: "02:AA:bb:cc:dd:ee", MTU: 1390},
		{Network: "b", IP: "10.20.0.9", PrefixLen: 16, MAC: "02:11:22:33:44:55", MTU: 1500},
	}
	b, err := NetworkConfig(nics)
	if err != nil {
		t.Fatal(err)
	}
	const golden = `ethernets:
  nic0:
    addresses:
    - 10.10.0.5/24
    match:
      macaddress: 02:aa:bb:cc:dd:ee
    mtu: 1390
    nameservers:
      addresses:
      - 169.254.1.1
    routes:
    - on-link: true
      to: 0.0.0.0/0
      via: 169.254.1.1
  nic1:
    addresses:
    - 10.20.0.9/16
    match:
      macaddress: "02:11:22:33:44:55"
    mtu: 1500
    nameservers:
      addresses:
      - 169.254.1.1
version: 2
`
	var got, want any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatalf("output does not parse: %v\n%s", err, b)
	}
	if err := yaml.Unmarshal([]byte(golden), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("network-config:\n%s\nwant:\n%s", b, golden)
	}
	if b, err := NetworkConfig(nil); err != nil || b != nil {
		t.Fatalf("no nics: %q %v", b, err)
	}
	if _, err := NetworkConfig([]messages.NICStatus{{IP: "x", PrefixLen: 24, MAC: "02:00:00:00:00:01"}}); err == nil {
		t.Fatal("bad ip accepted")
	}
}
