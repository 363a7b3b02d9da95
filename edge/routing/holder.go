package routing

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/snapgate/snapgate/fbs"
)

// Holder publishes the Table in service. Acquire is lock-free; Swap is
// serialized by a mutex (swaps are rare and come from one feed).
type Holder struct {
	cur atomic.Pointer[Table]
	mu  sync.Mutex
	// onInstall runs under mu before a table goes into service
	// (SetOnInstall).
	onInstall func(old, t *Table)
}

// SetOnInstall makes fn run whenever a table is about to go into service,
// with the table it replaces (nil for the first), under the holder's lock
// and before any request can acquire it: the table's users build their
// per-table state there, at swap, instead of on the table's first
// requests. fn runs at once for the table in service, if there is one. A
// second call replaces the first's fn.
func (h *Holder) SetOnInstall(fn func(old, t *Table)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onInstall = fn
	if t := h.cur.Load(); t != nil && fn != nil {
		fn(nil, t)
	}
}

// StaleVersionError is returned by Swap for a table that is not newer than
// the one in service (DESIGN P6: snapshots apply monotonically).
type StaleVersionError struct {
	Current, Offered uint64
}

func (e *StaleVersionError) Error() string {
	return fmt.Sprintf("routing: snapshot version %d is not newer than version %d in service", e.Offered, e.Current)
}

// Acquire returns the current table with a reference the caller must drop
// with Release, or nil when no table was ever installed.
//
// Between loading the pointer and taking the reference a Swap may retire
// the table; tryRef refuses a table whose count already reached 0, and the
// re-check makes us prefer the new table over a retiring one.
func (h *Holder) Acquire() *Table {
	for {
		t := h.cur.Load()
		if t == nil {
			return nil
		}
		if !t.tryRef() {
			continue
		}
		if h.cur.Load() == t {
			return t
		}
		t.Release()
	}
}

// WithSnapshot calls fn with the snapshot in service (nil when none),
// holding its table for the call.
func (h *Holder) WithSnapshot(fn func(*fbs.Snapshot)) {
	t := h.Acquire()
	if t == nil {
		fn(nil)
		return
	}
	defer t.Release()
	fn(t.Snapshot())
}

// Swap installs t, taking over the caller's reference (from NewTable). It
// refuses a t whose version is not above the current one, and one whose
// policies did not compile (Table.Err); the caller then still owns t and
// should Release it. On success the old table loses the holder's
// reference and retires once its last request finishes; old is returned
// for its Version only and must not be used otherwise.
func (h *Holder) Swap(t *Table) (old *Table, err error) {
	return h.install(t, false)
}

// Replace installs t whatever its version. It exists for one case only: ctrl
// found that this edge's snapshot history diverged from its own (ctrl's data
// was lost or restored) and sent its state as a replacement, which P6's
// monotonic order cannot express because the numbers were reused.
func (h *Holder) Replace(t *Table) (old *Table, err error) {
	return h.install(t, true)
}

func (h *Holder) install(t *Table, anyVersion bool) (old *Table, err error) {
	if t.err != nil {
		return nil, t.err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old = h.cur.Load()
	if old != nil && !anyVersion && t.Version() <= old.Version() {
		return nil, &StaleVersionError{Current: old.Version(), Offered: t.Version()}
	}
	if old != nil {
		t.continueTurns(old)
		t.keepAuth(old)
	}
	if h.onInstall != nil {
		h.onInstall(old, t)
	}
	h.cur.Store(t)
	if old != nil {
		old.Release()
	}
	return old, nil
}

// InService reports whether t is the table in service. Lock-free, for
// per-table caches that must follow the holder's order of tables, which
// their versions do not show after a Replace.
func (h *Holder) InService(t *Table) bool { return h.cur.Load() == t }

// Version is the version in service, 0 when none.
func (h *Holder) Version() uint64 {
	if t := h.cur.Load(); t != nil {
		return t.Version()
	}
	return 0
}

// Close removes the table in service (shutdown); Acquire returns nil after.
func (h *Holder) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.cur.Swap(nil); t != nil {
		t.Release()
	}
}
