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
