// Package messages is Otherix's vocabulary: resource types with their
// validation, wire contracts, actor commands and replies, and the domain
// errors every layer shares. It performs no I/O and imports nothing of ours.
package messages
