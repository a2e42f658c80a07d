package placement

import "github.com/otherix/otherix/messages"

// AdmitOn is Admit with the node given instead of read.
func AdmitOn(p *Placer, n *messages.Node, from, to *messages.NodeAllocation) error {
	return admit(p.cfg, n, from, to)
}
