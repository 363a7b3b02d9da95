package ctrl

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/store"
)

// kind describes one document kind to the shared load, put, update, get,
// list and delete paths, so every kind gets the same validation order,
// compare-and-set and replies. Nil funcs mean "nothing to do".
type kind[T any] struct {
	name     string
	id       func(*T) string
	decode   func([]byte) (T, error)
	validate func(*T) error
	table    func(*state) map[string]versioned[T]
	// keep completes a put from the stored document: secrets that replies
	// leave out (and so an edited reply lacks) are kept.
	keep func(doc, stored *T)
	// check enforces the rules across documents for a put of doc.
	check func(m *state, doc *T) error
	// index and unindex maintain the model's indexes beyond the table.
	index, unindex func(m *state, doc *T)
	// inUse refuses a delete while other documents refer to id.
	inUse func(m *state, id string) error
	// fleet returns an edge count to record in the same revision as doc.
	fleet func(s *Server, doc *T) (edges uint32, ok bool)
	// committed runs after every successful put or delete, under wmu.
	committed func(s *Server)
	// view fills the reply's document field; it must not alias what a
	// reply may change.
	view func(doc T, r *admin.Result)
}

func (k *kind[T]) put(m *state, v versioned[T]) {
	t := k.table(m)
	id := k.id(&v.doc)
	if old, ok := t[id]; ok && k.unindex != nil {
		k.unindex(m, &old.doc)
	}
	t[id] = v
	if k.index != nil {
		k.index(m, &v.doc)
	}
}

func (k *kind[T]) remove(m *state, id string) {
	t := k.table(m)
	if old, ok := t[id]; ok {
		if k.unindex != nil {
			k.unindex(m, &old.doc)
		}
		delete(t, id)
	}
}

func (k *kind[T]) result(v versioned[T]) admin.Result {
	r := admin.Result{Kind: k.name, ID: k.id(&v.doc), Version: v.version, Revision: v.revision}
	k.view(v.doc, &r)
	return r
}

// load decodes a stored document into the model. A document that no longer
// validates (the rules may have tightened since it was written) is kept and
// logged rather than refusing to start.
func (k *kind[T]) load(s *Server, m *state, d store.Doc) error {
	doc, err := k.decode(d.Body)
	if err != nil {
		return fmt.Errorf("stored %s %q (version %d) cannot be decoded: %w", k.name, d.ID, d.Version, err)
	}
	if err := k.validate(&doc); err != nil {
		s.log.Warn("stored document no longer validates", "kind", k.name, "id", d.ID, "err", err)
	}
	k.put(m, versioned[T]{doc: doc, version: d.Version, revision: d.Revision})
	return nil
}

// putDoc creates or replaces a document.
func putDoc[T any](s *Server, k *kind[T], doc T, expected *uint64) (admin.Result, error) {
	return write(s, k, k.id(&doc), expected, func(stored *T) (T, error) {
		if stored != nil && k.keep != nil {
			k.keep(&doc, stored)
		}
		return doc, nil
	})
}

// updateDoc changes an existing document with change, which must not
// modify what its argument shares with the model (clone slices first).
func updateDoc[T any](s *Server, k *kind[T], id string, expected *uint64, change func(T) (T, error)) (admin.Result, error) {
	return write(s, k, id, expected, func(stored *T) (T, error) {
		if stored == nil {
			var zero T
			return zero, admin.Errorf(admin.CodeNotFound, "id", "%s %q does not exist", k.name, id)
		}
		return change(*stored)
	})
}

// write is every put: under the writer lock, expected_version is checked
// first (a stale write is a conflict whatever it carries: its writer must
// re-read), then next derives the document from the stored one (nil if
// none), then come validation and the rules across documents, and only
// then the commit, so a rejected write changes nothing. The reply waits
// for the fsync outside the lock.
func write[T any](s *Server, k *kind[T], id string, expected *uint64, next func(stored *T) (T, error)) (admin.Result, error) {
	r, err := writeLocked(s, k, id, expected, next)
	if err != nil {
		return admin.Result{}, s.answer(err)
	}
	return r, s.durable(k.name, id, r.Revision)
}

func writeLocked[T any](s *Server, k *kind[T], id string, expected *uint64, next func(stored *T) (T, error)) (admin.Result, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// The model only changes under wmu, so reading it without mu is safe here.
	m := &s.model
	cur, exists := k.table(m)[id]
	if err := checkExpected(k.name, id, expected, cur.version); err != nil {
		return admin.Result{}, err
	}
	var stored *T
	if exists {
		stored = &cur.doc
	}
	doc, err := next(stored)
	if err != nil {
		return admin.Result{}, err
	}
	if err := k.validate(&doc); err != nil {
		return admin.Result{}, invalid(err)
	}
	if k.check != nil {
		if err := k.check(m, &doc); err != nil {
			return admin.Result{}, err
		}
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return admin.Result{}, fmt.Errorf("encoding %s %q: %w", k.name, id, err)
	}
	muts := []store.Mutation{{Kind: k.name, ID: id, Body: body, Expected: expected}}
	var edges uint32
	if k.fleet != nil {
		var ok bool
		if edges, ok = k.fleet(s, &doc); ok {
			muts = append(muts, m.fleetMutation(edges))
		}
	}
	var v versioned[T]
	err = s.commit(muts, func(docs []store.Doc, rev uint64) {
		v = versioned[T]{doc: doc, version: docs[0].Version, revision: rev}
		k.put(m, v)
		if len(docs) > 1 {
			m.fleet = versioned[uint32]{doc: edges, version: docs[1].Version, revision: rev}
		}
	})
	if err != nil {
		return admin.Result{}, err
	}
	if k.committed != nil {
		k.committed(s)
	}
	return k.result(v), nil
}

// deleteDoc deletes a document nothing refers to.
func deleteDoc[T any](s *Server, k *kind[T], id string, expected *uint64) (admin.Result, error) {
	r, err := deleteLocked(s, k, id, expected)
	if err != nil {
		return admin.Result{}, s.answer(err)
	}
	return r, s.durable(k.name, id, r.Revision)
}

func deleteLocked[T any](s *Server, k *kind[T], id string, expected *uint64) (admin.Result, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	m := &s.model
	old, ok := k.table(m)[id]
	if err := checkExpected(k.name, id, expected, old.version); err != nil {
		return admin.Result{}, err
	}
	if !ok {
		return admin.Result{}, admin.Errorf(admin.CodeNotFound, "id", "%s %q does not exist", k.name, id)
	}
	if k.inUse != nil {
		if err := k.inUse(m, id); err != nil {
			return admin.Result{}, err
		}
	}
	var rev uint64
	err := s.commit([]store.Mutation{{Kind: k.name, ID: id, Expected: expected}}, func(_ []store.Doc, r uint64) {
		rev = r
		k.remove(m, id)
	})
	if err != nil {
		return admin.Result{}, err
	}
	if k.committed != nil {
		k.committed(s)
	}
	return admin.Result{Kind: k.name, ID: id, Version: old.version, Revision: rev}, nil
}

func getDoc[T any](s *Server, k *kind[T], id string) (admin.Result, error) {
	s.mu.RLock()
	v, ok := k.table(&s.model)[id]
	s.mu.RUnlock()
	if !ok {
		return admin.Result{}, s.answer(admin.Errorf(admin.CodeNotFound, "id", "%s %q does not exist", k.name, id))
	}
	return k.result(v), s.answer(nil)
}

func listDocs[T any](s *Server, k *kind[T]) (admin.List, error) {
	s.mu.RLock()
	t := k.table(&s.model)
	l := admin.List{Kind: k.name, Revision: s.model.revision, Items: make([]admin.Result, 0, len(t))}
	for _, v := range t {
		l.Items = append(l.Items, k.result(v))
	}
	s.mu.RUnlock()
	slices.SortFunc(l.Items, func(a, b admin.Result) int { return strings.Compare(a.ID, b.ID) })
	return l, s.answer(nil)
}

// usedBy refuses deleting kind id while the groups of documents in users
// (noun, sorted ids) refer to it; nil if none does.
func usedBy(kind, id string, users ...referrers) error {
	var parts []string
	for _, u := range users {
		if len(u.ids) == 0 {
			continue
		}
		noun := u.noun
		if len(u.ids) > 1 {
			noun = u.plural
		}
		parts = append(parts, noun+" "+listIDs(u.ids))
	}
	if len(parts) == 0 {
		return nil
	}
	return admin.Errorf(admin.CodeInvalid, "id", "%s %q is used by %s; delete or move them first", kind, id, strings.Join(parts, " and "))
}

// referrers are the documents of one kind that refer to another document.
type referrers struct {
	noun, plural string
	ids          []string
}

// matching returns the sorted ids of the documents in t for which refers holds.
func matching[T any](t map[string]versioned[T], refers func(*T) bool) []string {
	var ids []string
	for id, v := range t {
		if refers(&v.doc) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Route and cluster kinds.
var (
	routes = kind[model.Route]{
		name:     kindRoute,
		id:       func(r *model.Route) string { return r.ID },
		decode:   model.DecodeRoute,
		validate: (*model.Route).Validate,
		table:    func(m *state) map[string]versioned[model.Route] { return m.routes },
		check:    checkRoute,
		index:    (*state).indexRoute,
		unindex:  (*state).unindexRoute,
		inUse: func(m *state, id string) error {
			return usedBy(kindRoute, id, m.policiesScopedTo(scopeRoute, id))
		},
		view: func(r model.Route, res *admin.Result) { res.Route = &r },
	}
	clusters = kind[model.Cluster]{
		name:     kindCluster,
		id:       func(c *model.Cluster) string { return c.ID },
		decode:   model.DecodeCluster,
		validate: (*model.Cluster).Validate,
		table:    func(m *state) map[string]versioned[model.Cluster] { return m.clusters },
		inUse: func(m *state, id string) error {
			rs := matching(m.routes, func(r *model.Route) bool { return r.Cluster == id })
			return usedBy(kindCluster, id, referrers{"route", "routes", rs}, m.policiesScopedTo(scopeCluster, id))
		},
		committed: (*Server).syncHealth,
		view: func(c model.Cluster, res *admin.Result) {
			c.Endpoints = slices.Clone(c.Endpoints) // the reply must not alias the model
			res.Cluster = &c
		},
	}
)

func checkRoute(m *state, r *model.Route) error {
	if _, ok := m.clusters[r.Cluster]; !ok {
		return admin.Errorf(admin.CodeInvalid, "cluster", "cluster %q does not exist; create it first", r.Cluster)
	}
	if other, ok := m.byKey[keyOf(*r)]; ok && other != r.ID {
		field, match := "prefix", r.Prefix
		if r.Path != "" {
			field, match = "path", r.Path
		}
		return admin.Errorf(admin.CodeConflict, field, "route %q already matches host %q %s %q with the same methods and headers; two routes cannot share host, %s, methods and headers", other, r.Host, field, match, field)
	}
	return nil
}
