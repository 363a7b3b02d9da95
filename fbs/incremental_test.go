package fbs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

// editor applies random edits to a State, the kinds ctrl sees: route adds,
// deletes and field changes, cluster changes, shard count changes, and
// edits Build rejects.
type editor struct {
	rng  *rand.Rand
	st   State
	next int // suffix for new route and cluster ids
}

func (e *editor) randomRoute() Route {
	r := Route{
		ID:        fmt.Sprintf("new-%06d", e.next),
		Host:      []string{"a.example.com", "b.example.com", "*.example.com", WildcardHost}[e.rng.IntN(4)],
		Prefix:    fmt.Sprintf("/p%d/%d", e.rng.IntN(50), e.next),
		Cluster:   e.st.Clusters[e.rng.IntN(len(e.st.Clusters))].Name,
		TimeoutMs: uint32(e.rng.IntN(3)) * 500,
		Exact:     e.rng.IntN(4) == 0,
		Priority:  uint32(e.rng.IntN(3)),
	}
	e.next++
	e.decorate(&r)
	return r
}

// decorate sets the optional fields, lists often unsorted or duplicated
// since Build canonicalises them.
func (e *editor) decorate(r *Route) {
	if e.rng.IntN(3) == 0 {
		r.Methods = []string{"POST", "GET", "GET", "DELETE"}[:1+e.rng.IntN(4)]
		r.Methods = slices.Clone(r.Methods)
	}
	if e.rng.IntN(3) == 0 {
		r.Headers = []HeaderMatch{{Name: "x-b", Present: true}, {Name: "x-a", Value: fmt.Sprint(e.rng.IntN(5))}}[:1+e.rng.IntN(2)]
		r.Headers = slices.Clone(r.Headers)
	}
	if e.rng.IntN(4) == 0 {
		r.RetryAttempts = uint8(e.rng.IntN(MaxRetryAttempts + 1))
		r.RetryOn = uint8(e.rng.IntN(4))
		r.RetryStatuses = slices.Clone([]uint16{503, 502, 503, 504}[:1+e.rng.IntN(4)])
	}
	if e.rng.IntN(4) == 0 {
		r.RewritePrefix = "/rw"
		r.MaxStalenessMs = uint32(e.rng.IntN(2)) * 1000
		r.OnStaleReject = e.rng.IntN(2) == 0
		r.StaleHeader = e.rng.IntN(2) == 0
	}
}

// step applies one edit. A true result means the edit makes the state
// invalid; the caller restores the returned state afterwards.
func (e *editor) step() (invalid bool, restore State) {
	restore = e.st
	restore.Routes = slices.Clone(e.st.Routes)
	restore.Clusters = slices.Clone(e.st.Clusters)
	st := &e.st
	st.Version++
	st.ParentVersion = st.Version - 1
	n := len(st.Routes)
	switch k := e.rng.IntN(20); {
	case k < 5 || n == 0: // add
		st.Routes = append(st.Routes, e.randomRoute())
	case k < 8: // delete
		i := e.rng.IntN(n)
		st.Routes = slices.Delete(slices.Clone(st.Routes), i, i+1)
	case k < 13: // change one field of one route
		st.Routes = slices.Clone(st.Routes)
		r := &st.Routes[e.rng.IntN(n)]
		switch e.rng.IntN(7) {
		case 0:
			r.TimeoutMs += 1 + uint32(e.rng.IntN(100))
		case 1:
			r.Prefix += "/x" // moves it to another shard, most likely
		case 2:
			r.Cluster = st.Clusters[e.rng.IntN(len(st.Clusters))].Name
		case 3:
			r.Priority++
		case 4:
			slices.Reverse(r.Methods) // no byte change: must not confuse the cache
			r.Methods = append(slices.Clone(r.Methods), "PATCH")
		case 5:
			e.decorate(r)
		default:
			r.Exact = !r.Exact
		}
	case k < 15: // change clusters: endpoints, or a new name shifting cluster_index
		st.Clusters = slices.Clone(st.Clusters)
		if e.rng.IntN(2) == 0 {
			c := &st.Clusters[e.rng.IntN(len(st.Clusters))]
			c.Endpoints = append(slices.Clone(c.Endpoints), Endpoint{Address: fmt.Sprintf("10.9.9.%d:80", e.next%250+1), Weight: 3})
		} else {
			st.Clusters = append(st.Clusters, Cluster{Name: fmt.Sprintf("c-%05d", e.next)}) // sorts first
		}
		e.next++
	case k < 16: // shard count
		st.Shards = []int{0, 1, 3, 16, 64}[e.rng.IntN(5)]
	case k < 17: // input order must not matter
		st.Routes = slices.Clone(st.Routes)
		e.rng.Shuffle(n, func(i, j int) { st.Routes[i], st.Routes[j] = st.Routes[j], st.Routes[i] })
	default: // invalid edits
		st.Routes = slices.Clone(st.Routes)
		switch e.rng.IntN(3) {
		case 0:
			dup := st.Routes[e.rng.IntN(n)]
			dup.Prefix += "/dup"
			st.Routes = append(st.Routes, dup) // duplicate id
		case 1:
			st.Routes[e.rng.IntN(n)].Cluster = "no-such-cluster"
		default:
			twin := st.Routes[e.rng.IntN(n)]
			twin.ID += "-twin" // same key and conditions
			st.Routes = append(st.Routes, twin)
		}
		return true, restore
	}
	return false, restore
}

func TestBuilderMatchesBuild(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			e := &editor{rng: rand.New(rand.NewPCG(seed, 77)), st: genState(300, seed)}
			e.st.Shards = 16
			var b Builder
			invalid := 0
			for step := range 200 {
				bad, restore := e.step()
				want, wantErr := Build(e.st)
				got, gotErr := b.Build(e.st)
				switch {
				case (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error():
					t.Fatalf("step %d: Builder error %v, Build error %v", step, gotErr, wantErr)
				case wantErr != nil && !bad:
					t.Fatalf("step %d: a valid edit failed: %v", step, wantErr)
				case !bytes.Equal(got, want):
					t.Fatalf("step %d: Builder bytes differ from Build (%d vs %d bytes)", step, len(got), len(want))
				}
				if wantErr != nil {
					invalid++
					e.st = restore
				}
				if step%50 == 0 && wantErr == nil {
					mustOpen(t, got)
				}
			}
			if invalid == 0 {
				t.Fatal("the edit sequence never exercised a rejected state")
			}
		})
	}
}

// TestBuilderReencodesOnlyChangedShards pins the point of Builder: a
// one-route edit re-encodes one shard and reuses every other shard's bytes.
func TestBuilderReencodesOnlyChangedShards(t *testing.T) {
	st := genState(2000, 3)
	st.Shards = 32
	var b Builder
	first, err := b.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	before := make([]*byte, len(b.cache))
	for i, c := range b.cache {
		before[i] = &c.data[0]
	}

	st.Routes = slices.Clone(st.Routes)
	r := &st.Routes[1234]
	r.TimeoutMs += 7
	second, err := b.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustBuild(t, st); !bytes.Equal(second, want) {
		t.Fatal("Builder bytes differ from Build after a one-route edit")
	}
	if bytes.Equal(first, second) {
		t.Fatal("the edit did not change the snapshot")
	}
	edited := int(routeKeyHash(r) % 32)
	for i, c := range b.cache {
		if reused := &c.data[0] == before[i]; reused == (i == edited) {
			t.Errorf("shard %d: reused %v, want reused only for shards other than %d", i, reused, edited)
		}
	}
}

func TestRouteKeyHash(t *testing.T) {
	for _, r := range []Route{
		{Host: "a.example.com", Prefix: "/x"},
		{Host: "a.example.com", Prefix: "/x", Exact: true},
		{Host: WildcardHost, Prefix: "/"},
		{Host: "", Prefix: ""},
	} {
		if got, want := routeKeyHash(&r), routeHashString(routeKey(&r)); got != want {
			t.Errorf("%+v: routeKeyHash %#x, routeHashString(routeKey) %#x", r, got, want)
		}
	}
}

// TestBuilderDigestIgnoresListOrder checks that the digest sees a route's
// lists in canonical form, as the encoder does, and sees every field.
func TestBuilderDigestIgnoresListOrder(t *testing.T) {
	var d routeDigester
	base := Route{ID: "r", Host: "h", Prefix: "/", Cluster: "c",
		Methods: []string{"GET", "POST"}, RetryStatuses: []uint16{502, 503},
		Headers: []HeaderMatch{{Name: "a", Value: "1"}, {Name: "b", Present: true}}}
	h := d.route(&base, 0, 0)
	same := base
	same.Methods = []string{"POST", "GET", "POST"}
	same.RetryStatuses = []uint16{503, 502, 502}
	same.Headers = []HeaderMatch{{Name: "b", Present: true}, {Name: "a", Value: "1"}}
	if d.route(&same, 0, 0) != h {
		t.Error("reordered or duplicated lists changed the digest")
	}
	edits := map[string]func(*Route){
		"id":       func(r *Route) { r.ID = "s" },
		"host":     func(r *Route) { r.Host = "g" },
		"prefix":   func(r *Route) { r.Prefix = "/a" },
		"cluster":  func(r *Route) { r.Cluster = "d" },
		"timeout":  func(r *Route) { r.TimeoutMs = 1 },
		"exact":    func(r *Route) { r.Exact = true },
		"methods":  func(r *Route) { r.Methods = []string{"GET"} },
		"headers":  func(r *Route) { r.Headers = r.Headers[:1] },
		"priority": func(r *Route) { r.Priority = 1 },
		"rewrite":  func(r *Route) { r.RewritePrefix = "/r" },
		"attempts": func(r *Route) { r.RetryAttempts = 1 },
		"retry_on": func(r *Route) { r.RetryOn = 1 },
		"statuses": func(r *Route) { r.RetryStatuses = nil },
		"stale":    func(r *Route) { r.MaxStalenessMs = 1 },
		"reject":   func(r *Route) { r.OnStaleReject = true },
		"header":   func(r *Route) { r.StaleHeader = true },
	}
	for name, edit := range edits {
		r := base
		edit(&r)
		if d.route(&r, 0, 0) == h {
			t.Errorf("changing %s left the digest unchanged", name)
		}
	}
	if d.route(&base, 1, 0) == h {
		t.Error("changing the cluster index left the digest unchanged")
	}
	if d.route(&base, 0, 1) == h {
		t.Error("changing the policy left the digest unchanged")
	}
}

func TestBuilderConcurrent(t *testing.T) {
	states := make([]State, 4)
	want := make([][]byte, len(states))
	for i := range states {
		states[i] = genState(300, uint64(i))
		states[i].Shards = 8
		want[i] = mustBuild(t, states[i])
	}
	var b Builder
	var wg sync.WaitGroup
	errs := make(chan error, len(states))
	for g := range len(states) {
		wg.Go(func() {
			for k := range 10 {
				i := (g + k) % len(states)
				got, err := b.Build(states[i])
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, want[i]) {
					errs <- fmt.Errorf("goroutine %d: state %d: bytes differ from Build", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkOneRouteChange is ctrl's common case: one route's timeout
// changes in a large snapshot. Build re-encodes everything; Builder one
// shard. Each iteration flips between two states so Builder always sees a
// change.
func BenchmarkOneRouteChange(b *testing.B) {
	for _, n := range benchSizes {
		base := benchState(n)
		edited := base
		edited.Routes = slices.Clone(base.Routes)
		edited.Routes[n/2].TimeoutMs += 1234
		states := [2]State{base, edited}
		b.Run(fmt.Sprintf("routes=%d/Build", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := Build(states[i&1]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("routes=%d/Builder", n), func(b *testing.B) {
			var bld Builder
			if _, err := bld.Build(base); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 1
			for b.Loop() {
				if _, err := bld.Build(states[i&1]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		// ctrl's way: the routes in a RouteTable, the files recycled as
		// its publisher does once no session reads them.
		b.Run(fmt.Sprintf("routes=%d/BuilderTable", n), func(b *testing.B) {
			st, tbl := inTable(base)
			var bld Builder
			prev, err := bld.Build(st)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 1
			for b.Loop() {
				tbl.Put(states[i&1].Routes[n/2])
				file, err := bld.Build(st)
				if err != nil {
					b.Fatal(err)
				}
				bld.Recycle(prev)
				prev = file
				i++
			}
		})
	}
}

// TestRootSizeBound checks that rootSize is an upper bound, so assemble
// finishes in place, also for cluster-heavy states with long strings.
func TestRootSizeBound(t *testing.T) {
	heavy := genState(200, 9)
	for i := range heavy.Clusters {
		c := &heavy.Clusters[i]
		c.LB, c.HashOn, c.HashOnName = LBHash, HashOnHeader, "x-"+strings.Repeat("h", i%7)
		for j := range 1 + i%9 {
			c.Endpoints = append(c.Endpoints, Endpoint{Address: fmt.Sprintf("host-%d-%d.internal:%d", i, j, 1000+j), Weight: uint16(j)})
		}
	}
	for i := range 50 {
		heavy.Clusters = append(heavy.Clusters, Cluster{Name: fmt.Sprintf("long-%d-%s", i, strings.Repeat("n", i))})
	}
	for name, st := range map[string]State{
		"empty":   {},
		"one":     {Shards: 1, Clusters: []Cluster{{Name: "c"}}, Routes: []Route{{ID: "r", Host: "h", Prefix: "/", Cluster: "c"}}},
		"generic": genState(3000, 4),
		"heavy":   heavy,
		"shards":  {Shards: MaxShards},
	} {
		s := mustOpen(t, mustBuild(t, st))
		shardBytes := make([][]byte, s.NumShards())
		for i := range shardBytes {
			shardBytes[i] = s.ShardData(i)
		}
		clusters, err := sortedClusters(st.Clusters)
		if err != nil {
			t.Fatal(err)
		}
		if got, bound := len(s.Bytes())-TrailerSize, rootSize(shardBytes, clusters); got > bound {
			t.Errorf("%s: root is %d bytes, rootSize bound %d", name, got, bound)
		}
	}
}

// TestEncodeRootGrows checks the slow path taken when the size estimate
// falls short: the builder grows and the result is still Build's.
func TestEncodeRootGrows(t *testing.T) {
	st := genState(500, 5)
	want := mustBuild(t, st)
	s := mustOpen(t, want)
	shardBytes := make([][]byte, s.NumShards())
	for i := range shardBytes {
		shardBytes[i] = s.ShardData(i)
	}
	clusters, err := sortedClusters(st.Clusters)
	if err != nil {
		t.Fatal(err)
	}
	got := encodeRoot(nil, 64, s.Version(), s.ParentVersion(), s.ContentHash(), shardBytes, clusters, &policyRefs{clusters: make([]uint32, len(clusters))})
	if !bytes.Equal(got, want) {
		t.Fatal("encodeRoot with a short size estimate differs from Build")
	}
}

// TestBuildSnapshotMatchesOpen checks that the Snapshot BuildSnapshot
// returns, which reuses earlier shard walks, is the one Open returns for
// the same file, field by field, along random edit sequences that also
// change the shard count, the clusters and the policies (the context a
// reused walk depends on), and that it fails exactly when Build does.
func TestBuildSnapshotMatchesOpen(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			e := &editor{rng: rand.New(rand.NewPCG(seed, 78)), st: genState(300, seed)}
			e.st.Shards = 16
			var b Builder
			reused := 0
			for step := range 150 {
				_, restore := e.step()
				if step%10 == 5 {
					// A policy sorting first shifts every policy reference.
					e.st.Auth.Policies = append(slices.Clone(e.st.Auth.Policies), Policy{ID: fmt.Sprintf("pol-%03d", 200-step)})
					e.st.Routes = slices.Clone(e.st.Routes)
					e.st.Routes[e.rng.IntN(len(e.st.Routes))].Policy = e.st.Auth.Policies[0].ID
				}
				want, wantErr := Build(e.st)
				walks := slices.Clone(b.walks.shards)
				got, gotErr := b.BuildSnapshot(e.st)
				switch {
				case (wantErr == nil) != (gotErr == nil):
					t.Fatalf("step %d: BuildSnapshot error %v, Build error %v", step, gotErr, wantErr)
				case wantErr != nil:
					e.st = restore
					continue
				case !bytes.Equal(got.Bytes(), want):
					t.Fatalf("step %d: BuildSnapshot bytes differ from Build", step)
				}
				opened := mustOpen(t, want)
				if !reflect.DeepEqual(got, opened) {
					t.Fatalf("step %d: BuildSnapshot's Snapshot differs from Open's", step)
				}
				for i := range min(len(walks), len(b.walks.shards)) {
					if walks[i].data != nil && &walks[i].data[0] == &b.walks.shards[i].data[0] {
						reused++
					}
				}
			}
			if reused == 0 {
				t.Fatal("no shard walk was ever reused")
			}
		})
	}
}
