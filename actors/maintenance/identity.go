package maintenance

import (
	"context"
	"log/slog"
	"time"

	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// IdentityCleanup removes refresh families past their absolute expiry and
// audit entries older than auditRetention. It runs with the cleanup loop.
func IdentityCleanup(st *store.Store, log *slog.Logger, auditRetention time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		now := st.Now()
		fams, err := st.SweepRefreshFamilies(ctx, now)
		if err != nil {
			return err
		}
		audit, err := st.SweepAudit(ctx, now.Add(-auditRetention))
		if err != nil {
			return err
		}
		if fams+audit > 0 {
			log.Info("identity cleanup", "refresh_families", fams, "audit_entries", audit)
		}
		return nil
	}
}

// KeyRing reloads the shared JWT key ring and rotates it once its current key
// is older than rotateAfter, then hands the ring to set. Every replica runs
// it; rotation is a compare-and-set on the ring's revision, so replicas that
// decide together retire one key, and the age check (rather than a 24h timer
// per replica) keeps N replicas from rotating N times a day.
func KeyRing(st *store.Store, log *slog.Logger, rotateAfter time.Duration, set func(security.KeyRing)) func(context.Context) error {
	return func(ctx context.Context) error {
		ring, _, err := st.KeyRing(ctx)
		if err != nil {
			return err
		}
		now := st.Now()
		if rotateAfter > 0 && now.Sub(ring.Current.CreatedAt) >= rotateAfter {
			rotated, _, err := st.RotateKeyRing(ctx, now)
			if err != nil {
				set(ring)
				return err
			}
			if rotated.Current.ID != ring.Current.ID {
				log.Info("jwt signing key rotated", "kid", rotated.Current.ID, "previous_keys", len(rotated.Previous))
			}
			ring = rotated
		}
		set(ring)
		return nil
	}
}
