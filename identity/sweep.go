package identity

import (
	"context"
	"log/slog"
	"time"

	"github.com/otherix/otherix/persistence/store"
)

// Cleanup removes refresh families past their absolute expiry and audit
// entries older than auditRetention. The control plane runs it with its
// cleanup loop (Service.Cleanup), and the storage loop to free space.
func Cleanup(st *store.Store, log *slog.Logger, auditRetention time.Duration) func(context.Context) error {
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

// Cleanup is the package's Cleanup with the configured audit retention.
func (s *Service) Cleanup(ctx context.Context) error {
	return Cleanup(s.st, s.log, s.cfg.AuditRetention)(ctx)
}

// RefreshKeyRing reloads the shared JWT key ring and rotates it once its
// current key is older than KeyRotation, then uses the ring. The loop owner
// runs it every KeyRefresh (the other replicas only ReloadKeyRing);
// rotation is also a compare-and-set on the ring's revision, so replicas
// that decide together retire one key, and the age check (rather than a 24h
// timer per replica) keeps N replicas from rotating N times a day.
func (s *Service) RefreshKeyRing(ctx context.Context) error {
	return s.refreshKeyRing(ctx, true)
}

// ReloadKeyRing rereads the shared JWT key ring and uses it, never rotating
// it: every replica runs it, so each verifies and signs with the ring the
// loop owner last rotated.
func (s *Service) ReloadKeyRing(ctx context.Context) error {
	return s.refreshKeyRing(ctx, false)
}

func (s *Service) refreshKeyRing(ctx context.Context, rotate bool) error {
	ring, _, err := s.st.KeyRing(ctx)
	if err != nil {
		return err
	}
	now := s.st.Now()
	if rotateAfter := s.cfg.KeyRotation; rotate && rotateAfter > 0 && now.Sub(ring.Current.CreatedAt) >= rotateAfter {
		rotated, _, err := s.st.RotateKeyRing(ctx, now)
		if err != nil {
			s.setRing(ring)
			return err
		}
		if rotated.Current.ID != ring.Current.ID {
			s.log.Info("jwt signing key rotated", "kid", rotated.Current.ID, "previous_keys", len(rotated.Previous))
		}
		ring = rotated
	}
	s.setRing(ring)
	return nil
}
