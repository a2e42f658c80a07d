package messages

import "time"

// NodeImage is one base image in a node's image cache, as its agent lists
// it (GET /v1/images on the agent).
type NodeImage struct {
	Pool string `json:"pool"`
	// SHA256 names the image: the digest of the bytes its origin served
	// (or, for an image of the cache layout before content keys, of the
	// file itself).
	SHA256 string `json:"sha256"`
	// Aliases are the file names the image is known by: the basenames of
	// the URLs that served it and its names in the old cache layout.
	Aliases []string `json:"aliases"`
	// URLs are the sources that served it.
	URLs             []string `json:"urls,omitempty"`
	SizeBytes        int64    `json:"size_bytes"`
	VirtualSizeBytes int64    `json:"virtual_size_bytes"`
	// LastUsed is when a VM was last created from it (or it was fetched).
	LastUsed *time.Time `json:"last_used,omitempty"`
	// VMs are the ids of the VMs whose disk's backing chain uses the
	// image; while there is one, the image cannot be deleted.
	VMs []string `json:"vms"`
}

// NodeImageList is the agent's answer to GET /v1/images.
type NodeImageList struct {
	Items []NodeImage `json:"items"`
}

// NodeImages is one node's part of the control plane's GET /v1/images:
// its images, or why the node did not answer.
type NodeImages struct {
	Node   string      `json:"node"`
	Images []NodeImage `json:"images"`
	// Error is set when the node did not answer (images is then empty).
	Error *NodeAnswerError `json:"error,omitempty"`
}

// NodeImagesList is the control plane's answer to GET /v1/images.
type NodeImagesList struct {
	Items []NodeImages `json:"items"`
}

// NodeAnswerError is an error as the API envelope carries it.
type NodeAnswerError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// IsSHA256Hex reports whether s is a sha256 digest in lower-case hex, the
// form images are named by.
func IsSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}
