package store

import "context"

// dryRunKey marks a context whose commits only check.
type dryRunKey struct{}

// DryRun returns a context under which Commit checks a change's guards
// (a name taken, a quota exceeded, a row changed) and answers as a commit
// would, but writes nothing: the API's ?dry_run=true. Only changes made
// through Commit obey it; a path that writes otherwise must not be reached
// by a dry run.
func DryRun(ctx context.Context) context.Context { return context.WithValue(ctx, dryRunKey{}, true) }

// IsDryRun reports whether ctx is a dry run's.
func IsDryRun(ctx context.Context) bool { v, _ := ctx.Value(dryRunKey{}).(bool); return v }
