package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Sizes on the command line: a number with an optional unit. K, M, G and T
// and their binary spellings Ki, Mi, Gi and Ti are all powers of 1024, as
// QEMU and docker read "-m 1G"; a trailing B ("GB", "GiB") is allowed, and
// case does not matter. A bare number is in the flag's own unit (MiB for
// memory, GiB for disks), which keeps "--memory 2048" meaning what it did.

// unitShift is log2 of each unit's size in bytes.
var unitShift = map[string]uint{
	"":  0, // bytes, only with an explicit B
	"k": 10, "ki": 10,
	"m": 20, "mi": 20,
	"g": 30, "gi": 30,
	"t": 40, "ti": 40,
}

// parseSize reads s as a size in units of 2^base bytes (20 for MiB, 30 for
// GiB). It returns the whole number of units, or an error when s is not a
// size or is not a whole number of them.
func parseSize(s string, base uint, unitName string) (int, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("%q is not a size: want a number with an optional unit, such as 512Mi, 2Gi or 20G", s)
	}
	shift := base
	if unit != "" {
		u := strings.TrimSuffix(unit, "b")
		sh, ok := unitShift[u]
		if !ok || (u == "" && unit != "b") {
			return 0, fmt.Errorf("%q has an unknown unit %q: use Ki, Mi, Gi or Ti (or K, M, G, T)", s, t[i:])
		}
		shift = sh
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	// The value in units: v * 2^shift / 2^base, exact in float64 for every
	// size a VM can have.
	units := math.Ldexp(v, int(shift)-int(base))
	if units != math.Trunc(units) {
		return 0, fmt.Errorf("%q is not a whole number of %s", s, unitName)
	}
	if units > math.MaxInt32 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int(units), nil
}

// parseMemoryMiB reads a memory size ("512Mi", "2G", "2048") as MiB.
func parseMemoryMiB(s string) (int, error) { return parseSize(s, 20, "MiB") }

// parseDiskGiB reads a disk size ("20Gi", "1T", "20") as GiB; a disk that is
// not a whole number of GiB is refused, since disks are sized in GiB.
func parseDiskGiB(s string) (int, error) { return parseSize(s, 30, "GiB") }
