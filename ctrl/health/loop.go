package health

import (
	"context"
	"fmt"
	"time"

	"github.com/snapgate/snapgate/store"
)

// The loop: one goroutine does everything that is due at a time rather
// than on a call: settling held endpoints, flushing to the store,
// publishing through the gate. Its only timer is re-armed after each step.

func (t *Tracker) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *Tracker) run() {
	defer close(t.done)
	for {
		select {
		case <-t.stop:
			return
		case <-t.wake:
		}
		t.step()
	}
}

// step does whatever is due at the clock's now: settle endpoints whose
// hold or expiry ended, flush, publish, and arm the timer for the next due
// thing.
func (t *Tracker) step() {
	now := t.clock.Now()
	t.mu.Lock()
	for ep := range t.held {
		if !ep.wakeAt.After(now) && t.settleLocked(ep, now) {
			t.markDirtyLocked(ep)
		}
	}
	var b *flushBatch
	if len(t.dirty) > 0 && !now.Before(t.nextFlushLocked()) {
		b = t.takeBatchLocked()
	}
	t.mu.Unlock()
	if b != nil {
		_ = t.flush(b) // logged and retried; Report callers see it
	}
	now = t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending {
		if ok, _ := t.gate.next(now); ok {
			t.publishLocked(now)
		}
	}
	t.armLocked(now)
}

func (t *Tracker) nextFlushLocked() time.Time {
	if t.flushErr != nil {
		return t.lastFlush.Add(flushRetry)
	}
	return t.lastFlush.Add(t.cfg.FlushInterval)
}

// armLocked sets the one timer to the earliest of: the next flush if
// anything is dirty, the gate's opening if a publication waits, and the
// earliest hold end or expiry.
func (t *Tracker) armLocked(now time.Time) {
	var at time.Time
	earliest := func(x time.Time) {
		if !x.IsZero() && (at.IsZero() || x.Before(at)) {
			at = x
		}
	}
	if len(t.dirty) > 0 {
		earliest(t.nextFlushLocked())
	}
	if t.pending {
		_, open := t.gate.next(now)
		earliest(open)
	}
	for ep := range t.held {
		earliest(ep.wakeAt)
	}
	if t.stopTimer != nil {
		t.stopTimer()
		t.stopTimer = nil
	}
	if !at.IsZero() && !t.closed {
		t.stopTimer = t.clock.AfterFunc(max(0, at.Sub(now)), t.poke)
	}
}

// flushBatch is one store write.
type flushBatch struct {
	muts []store.Mutation
	puts []flushedEndpoint
	seq  uint64
}

type flushedEndpoint struct {
	ep  *endpoint
	pub published
}

// takeBatchLocked turns the dirty set into mutations: a put for each live
// endpoint, a delete for each removed one that has a document.
func (t *Tracker) takeBatchLocked() *flushBatch {
	b := &flushBatch{seq: t.seq}
	for doc := range t.dirty {
		ep := t.byDoc[doc]
		if ep == nil {
			if t.persisted[doc] {
				b.muts = append(b.muts, store.Mutation{Kind: Kind, ID: doc})
			}
			continue
		}
		body, err := encodeStored(ep.stored())
		if err != nil {
			t.log.Error("health state not persisted", "err", err)
			continue
		}
		b.muts = append(b.muts, store.Mutation{Kind: Kind, ID: doc, Body: body})
		b.puts = append(b.puts, flushedEndpoint{ep: ep, pub: ep.current()})
	}
	clear(t.dirty)
	return b
}

// flush writes b in one Apply. On success the written state becomes the
// endpoints' published state; on failure everything in b is dirty again.
func (t *Tracker) flush(b *flushBatch) error {
	var err error
	if len(b.muts) > 0 {
		_, _, err = t.cfg.Store.Apply(b.muts...)
	}
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastFlush = now
	if err != nil {
		for _, m := range b.muts {
			t.dirty[m.ID] = struct{}{}
		}
		if t.flushErr == nil {
			t.log.Error("writing health state failed; retrying", "err", err, "documents", len(b.muts), "retry_in", flushRetry)
		}
		t.flushErr = err
		t.counters.FlushErrors++
		t.m.flushErrors.Inc()
		return err
	}
	if t.flushErr != nil {
		t.log.Info("writing health state works again")
	}
	t.flushErr = nil
	t.counters.Flushes++
	for _, m := range b.muts {
		if m.Body == nil {
			delete(t.persisted, m.ID)
		} else {
			t.persisted[m.ID] = true
		}
	}
	for _, f := range b.puts {
		if t.byDoc[f.ep.doc] == f.ep && f.ep.pub != f.pub {
			f.ep.pub = f.pub
			f.ep.cl.viewStale = true
			t.pending = true
		}
	}
	if b.seq > t.durable {
		t.durable = b.seq
		close(t.durableCh)
		t.durableCh = make(chan struct{})
	}
	return nil
}

func (t *Tracker) waitDurable(ctx context.Context, seq uint64) error {
	for {
		t.mu.Lock()
		durable, finished, ch, ferr := t.durable >= seq, t.finished, t.durableCh, t.flushErr
		t.mu.Unlock()
		switch {
		case durable:
			return nil
		case finished:
			return fmt.Errorf("health: observation accepted but not written before close (store error: %v): %w", ferr, ErrClosed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if ferr != nil {
				return fmt.Errorf("health: observation accepted but not yet durable; the store fails: %v: %w", ferr, ctx.Err())
			}
			return fmt.Errorf("health: observation accepted but not yet durable: %w", ctx.Err())
		}
	}
}
