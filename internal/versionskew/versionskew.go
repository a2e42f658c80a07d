// Package versionskew is the rule for which versions of the control plane
// and its agents may work together. The control plane is upgraded first and
// speaks to agents of its own minor version and the one before it; an agent
// newer than the control plane may send what the control plane cannot read
// (the heartbeat is decoded strictly), so it is refused with a reason that
// says what to upgrade, never accepted in part.
//
// Only release versions (semantic versions such as 1.4.2 or 1.5.0-rc.1) are
// compared. A development build (version "dev", or a `git describe` of a
// commit) carries no promise to compare against, so it is accepted and the
// caller may say the skew was not checked.
package versionskew

import (
	"fmt"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/otherix/otherix/messages"
)

// MaxAgentMinorsBehind is how many minor versions an agent may lag its
// control plane.
const MaxAgentMinorsBehind = 1

// Code is the error code of a refusal; it is part of the API.
const Code = "version_skew"

// Release parses a release version; ok is false for a development build.
// A leading "v" is accepted, as git tags carry one.
func Release(v string) (*semver.Version, bool) {
	if v == "" {
		return nil, false
	}
	p, err := semver.StrictNewVersion(strings.TrimPrefix(v, "v"))
	if err != nil {
		return nil, false
	}
	return p, true
}

// Agent checks an agent's version against the control plane's. It returns
// nil when they may work together or when either is a development build
// (checked reports which), and a *messages.Error with Code otherwise.
func Agent(controlPlane, agent string) (checked bool, err error) {
	cp, okCP := Release(controlPlane)
	ag, okAg := Release(agent)
	if !okCP || !okAg {
		return false, nil
	}
	refuse := func(format string, args ...any) error {
		e := messages.Errorf(messages.KindConflict, Code, format, args...)
		e.Details = map[string]any{"agent_version": agent, "control_plane_version": controlPlane,
			"rule": fmt.Sprintf("an agent may be at most %d minor version behind the control plane and never ahead of it", MaxAgentMinorsBehind)}
		return e
	}
	switch {
	case ag.Major() != cp.Major():
		return true, refuse("agent %s and control plane %s differ in major version: upgrade the %s first",
			agent, controlPlane, older(cp, ag))
	case ag.Minor() > cp.Minor():
		return true, refuse("agent %s is newer than the control plane %s: upgrade the control plane first", agent, controlPlane)
	case cp.Minor()-ag.Minor() > MaxAgentMinorsBehind:
		return true, refuse("agent %s is more than %d minor version behind the control plane %s: upgrade the agent",
			agent, MaxAgentMinorsBehind, controlPlane)
	}
	return true, nil
}

func older(cp, ag *semver.Version) string {
	if ag.LessThan(cp) {
		return "agent"
	}
	return "control plane"
}

// MaxReplicaMinorsApart is how many minor versions two otherix-api
// replicas of one cluster may be apart. A rolling upgrade moves one replica
// at a time by at most one minor version, so two adjacent minors run
// together for a while; the newer writes nothing the older cannot read
// (a format change is a persistence/schema migration, which stops the
// older replicas instead).
const MaxReplicaMinorsApart = 1

// ReplicaRule is the replica rule in words, for refusals and logs.
var ReplicaRule = fmt.Sprintf("otherix-api replicas of one cluster must share a major version and be at most %d minor version apart; "+
	"upgrade one replica at a time, one minor version at a time", MaxReplicaMinorsApart)

// Replica checks the version of a replica that is starting or joining
// (self) against the version another member of the cluster recorded
// (other, named otherName). It returns nil when the two may run together
// or when either is a development build (checked reports which), and a
// *messages.Error with Code otherwise, whose message says which one to
// upgrade.
func Replica(self, otherName, other string) (checked bool, err error) {
	me, okMe := Release(self)
	them, okThem := Release(other)
	if !okMe || !okThem {
		return false, nil
	}
	refuse := func(format string, args ...any) error {
		e := messages.Errorf(messages.KindConflict, Code, format, args...)
		e.Details = map[string]any{"replica_version": self, "member": otherName, "member_version": other, "rule": ReplicaRule}
		return e
	}
	apart := int64(me.Minor()) - int64(them.Minor())
	switch {
	case me.Major() != them.Major():
		return true, refuse("this replica is %s and member %s is %s: replicas must share a major version; "+
			"upgrade the older ones first, one minor version at a time", self, otherName, other)
	case apart > MaxReplicaMinorsApart:
		return true, refuse("this replica is %s and member %s is %s, more than %d minor version behind: "+
			"upgrade %s first (or remove it from the cluster), or run an otherix-api within one minor version of it",
			self, otherName, other, MaxReplicaMinorsApart, otherName)
	case -apart > MaxReplicaMinorsApart:
		return true, refuse("this replica is %s and member %s is %s, more than %d minor version ahead: "+
			"upgrade this replica to within one minor version of %s", self, otherName, other, MaxReplicaMinorsApart, other)
	}
	return true, nil
}

// Members checks a starting or joining replica's version (self) against
// the versions the other members of its cluster recorded (member name →
// version), in name order, and returns the first refusal; checked counts
// the members whose version was compared (development builds and rows
// without a version are not).
func Members(self string, others map[string]string) (checked int, err error) {
	names := make([]string, 0, len(others))
	for n := range others {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		ok, err := Replica(self, n, others[n])
		if err != nil {
			return checked, err
		}
		if ok {
			checked++
		}
	}
	return checked, nil
}
