package messages

// MaxNameLength is the DNS-label limit that resource names follow.
const MaxNameLength = 63

// ValidateName checks a resource name against DNS-label rules (RFC 1123):
// 1–63 characters of a–z, 0–9 and '-', starting and ending alphanumeric. Names
// become hostnames and interface suffixes, so the rule is strict on purpose.
func ValidateName(field, name string) error {
	if name == "" {
		return Invalid(field, "is required")
	}
	if len(name) > MaxNameLength {
		return Invalid(field, "must be at most %d characters", MaxNameLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && c != '-' {
			return Invalid(field, "%q may contain only lower-case letters, digits and '-'", name)
		}
		if c == '-' && (i == 0 || i == len(name)-1) {
			return Invalid(field, "%q must start and end with a letter or digit", name)
		}
	}
	return nil
}
